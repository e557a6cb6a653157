/**
 * Text for a terminal of a given width: columns padded to their widest cell, lines that never pass
 * the width. A cell is shown whole or not at all, so that a number is never cut mid-way; only the
 * last column, free text such as an error message, is shortened, and then with an ellipsis.
 * Colours (SGR codes) are added after the layout, so that they take no room.
 */

export interface TextCell {
  readonly text: string;
  readonly align?: 'left' | 'right';
  /** ANSI SGR parameters, e.g. '31' for red; used only when colour is on. */
  readonly sgr?: string;
}

export interface TableLayoutOptions {
  /** Visible columns available; Infinity for none. */
  readonly width: number;
  readonly color: boolean;
  /** Spaces between columns (default 2). */
  readonly gap?: number;
}

const ELLIPSIS = '…';

export function paint(text: string, sgr: string | undefined, color: boolean): string {
  return color && sgr ? `\u001b[${sgr}m${text}\u001b[0m` : text;
}

/** `text` shortened to `width` visible characters, the last of them an ellipsis when something was cut. */
export function cutText(text: string, width: number): string {
  if (text.length <= width) return text;
  if (width <= 0) return '';
  return `${text.slice(0, width - 1).trimEnd()}${ELLIPSIS}`;
}

/** The first candidate that fits `width`, or else the last one cut to it: candidates go from richest to shortest. */
export function firstFitting(candidates: readonly string[], width: number): string {
  for (const c of candidates) if (c.length <= width) return c;
  return cutText(candidates.at(-1) ?? '', width);
}

/**
 * The first frame of at most `height` lines, or else the last one cut to `height`: frames go from
 * richest to leanest and are made only as they are asked for.
 */
export function firstFittingFrame(frames: Iterable<readonly string[]>, height: number): string[] {
  let last: readonly string[] = [];
  for (const frame of frames) {
    if (frame.length <= height) return [...frame];
    last = frame;
  }
  return last.slice(0, Math.max(0, height));
}

/** Width of each column: its widest cell. */
export function columnWidths(rows: readonly (readonly TextCell[])[]): number[] {
  const widths: number[] = [];
  for (const row of rows) row.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.text.length)));
  return widths;
}

/** Visible width of a table laid out whole, gaps included. */
export function tableWidth(rows: readonly (readonly TextCell[])[], gap = 2): number {
  const widths = columnWidths(rows);
  return widths.reduce((sum, w) => sum + w, 0) + gap * Math.max(0, widths.length - 1);
}

/**
 * Lays rows out in columns within `width`. The last cell of a row takes the room left and is cut
 * with an ellipsis; any other cell that does not fit whole ends the row there.
 */
export function layoutTable(rows: readonly (readonly TextCell[])[], options: TableLayoutOptions): string[] {
  const gap = ' '.repeat(options.gap ?? 2);
  const widths = columnWidths(rows);
  return rows.map((row) => {
    let out = '';
    let used = 0;
    for (const [i, cell] of row.entries()) {
      const sep = i === 0 ? '' : gap;
      const last = i === row.length - 1;
      const w = widths[i] ?? 0;
      let text = cell.align === 'right' ? cell.text.padStart(w) : cell.text.padEnd(w);
      if (last) text = text.trimEnd();
      const room = options.width - used - sep.length;
      if (last) text = cutText(text, room);
      else if (text.length > room) break;
      if (last && text === '') break;
      out += sep + paint(text, cell.sgr, options.color);
      used += sep.length + text.length;
    }
    // A row that stopped early ends in padding.
    return out.trimEnd();
  });
}

/** Items joined by `separator` and wrapped into lines of at most `width` (an item wider than that is cut). */
export function wrapItems(items: readonly string[], width: number, separator = '  ', indent = ''): string[] {
  const lines: string[] = [];
  let line = '';
  for (const item of items) {
    const candidate = line === '' ? item : `${line}${separator}${item}`;
    if (line !== '' && candidate.length > width) {
      lines.push(line);
      line = `${indent}${item}`;
    } else {
      line = candidate;
    }
  }
  if (line !== '') lines.push(line);
  return lines.map((l) => cutText(l, width));
}
