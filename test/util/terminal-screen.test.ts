import { describe, expect, it } from 'vitest';
import { frameRoom, NOT_A_TERMINAL } from '../../src/util/terminal-screen.js';

describe('terminal room for a frame redrawn in place', () => {
  it('keeps one column and one row spare, so that the frame neither wraps nor scrolls', () => {
    expect(frameRoom({ isTTY: true, columns: () => 120, rows: () => 20 }, 40)).toEqual({ width: 119, height: 19 });
  });

  it('never goes below the minimum width or one line', () => {
    expect(frameRoom({ isTTY: true, columns: () => 30, rows: () => 1 }, 40)).toEqual({ width: 40, height: 1 });
  });

  it('has no limit when not a terminal', () => {
    expect(frameRoom(NOT_A_TERMINAL, 40)).toEqual({ width: Number.POSITIVE_INFINITY, height: Number.POSITIVE_INFINITY });
  });
});
