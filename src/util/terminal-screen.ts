/**
 * A frame of lines redrawn in place on a terminal: each draw moves the cursor back to the first
 * line of the previous frame and clears to the end of the screen, so that the frame stays where
 * it is instead of scrolling. The cursor is hidden while frames are drawn and shown again by
 * `restore`, which the caller runs on every way out (Ctrl-C included).
 */

/** Where output goes: a terminal (redraw in place, fit its width and height) or a pipe (one line per refresh). */
export interface Terminal {
  readonly isTTY: boolean;
  /** Visible columns; asked again at every refresh, so that a resized window is followed. */
  columns(): number;
  /** Visible lines; asked again at every refresh, like the columns. */
  rows(): number;
}

/** What a terminal that does not say its size is taken to have (the VT100's 80 x 24, a little wider). */
const DEFAULT_COLUMNS = 100;
const DEFAULT_ROWS = 24;

/** A size the terminal reported, or the default when it reported none (undefined, or 0 on some pseudo-terminals). */
const reported = (n: number | undefined, fallback: number): number => (n !== undefined && n > 0 ? n : fallback);

/** Standard output as it is now. */
export const processTerminal: Terminal = {
  isTTY: process.stdout.isTTY === true,
  columns: () => reported(process.stdout.columns, DEFAULT_COLUMNS),
  rows: () => reported(process.stdout.rows, DEFAULT_ROWS),
};

/** Not a terminal: for pipes, files and tests. */
export const NOT_A_TERMINAL: Terminal = { isTTY: false, columns: () => Number.POSITIVE_INFINITY, rows: () => Number.POSITIVE_INFINITY };

/**
 * The room for a frame redrawn in place, asked at every refresh. One column spare: a line as wide
 * as the window wraps on some terminals. One row spare: the cursor waits on the line under the
 * frame, so a frame as tall as the window scrolls. Either way the frame no longer starts where the
 * redraw goes back to, and stale lines stay behind. `minWidth` keeps a view readable in a window
 * narrower than that (it then wraps).
 */
export function frameRoom(terminal: Terminal, minWidth: number): { readonly width: number; readonly height: number } {
  return { width: Math.max(minWidth, terminal.columns() - 1), height: Math.max(1, terminal.rows() - 1) };
}

const HIDE_CURSOR = '\u001b[?25l';
const SHOW_CURSOR = '\u001b[?25h';
/** CSI n F: to the start of the line n lines up; CSI J: clear from the cursor to the end of the screen. */
const backOverLines = (n: number): string => `\u001b[${n}F\u001b[J`;

export class InPlaceScreen {
  private drawnLines = 0;
  private cursorHidden = false;

  constructor(private readonly write: (s: string) => void) {}

  /**
   * Replaces the previous frame with `lines`. Each line must fit the width and the frame the height
   * (see frameRoom), or the count of lines to go back over is wrong. A last frame may be taller:
   * nothing is drawn over it.
   */
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
