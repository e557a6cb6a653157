/**
 * A frame of lines redrawn in place on a terminal: each draw moves the cursor back to the first
 * line of the previous frame and clears to the end of the screen, so that the frame stays where
 * it is instead of scrolling. The cursor is hidden while frames are drawn and shown again by
 * `restore`, which the caller runs on every way out (Ctrl-C included).
 */

/** Where output goes: a terminal (redraw in place, fit its width) or a pipe (one line per refresh). */
export interface Terminal {
  readonly isTTY: boolean;
  /** Visible columns; asked again at every refresh, so that a resized window is followed. */
  columns(): number;
}

/** Standard output as it is now. */
export const processTerminal: Terminal = {
  isTTY: process.stdout.isTTY === true,
  columns: () => process.stdout.columns ?? 100,
};

/** Not a terminal: for pipes, files and tests. */
export const NOT_A_TERMINAL: Terminal = { isTTY: false, columns: () => Number.POSITIVE_INFINITY };

const HIDE_CURSOR = '\u001b[?25l';
const SHOW_CURSOR = '\u001b[?25h';
/** CSI n F: to the start of the line n lines up; CSI J: clear from the cursor to the end of the screen. */
const backOverLines = (n: number): string => `\u001b[${n}F\u001b[J`;

export class InPlaceScreen {
  private drawnLines = 0;
  private cursorHidden = false;

  constructor(private readonly write: (s: string) => void) {}

  /** Replaces the previous frame with `lines`; each line must fit the width, or the count of lines to go back is wrong. */
  draw(lines: readonly string[]): void {
    let out = '';
    if (!this.cursorHidden) {
      out += HIDE_CURSOR;
      this.cursorHidden = true;
    }
    if (this.drawnLines > 0) out += backOverLines(this.drawnLines);
    this.write(`${out}${lines.join('\n')}\n`);
    this.drawnLines = lines.length;
  }

  /** Shows the cursor again; the last frame stays on screen. Safe to call more than once. */
  restore(): void {
    if (!this.cursorHidden) return;
    this.write(SHOW_CURSOR);
    this.cursorHidden = false;
  }
}
