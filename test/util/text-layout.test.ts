import { describe, expect, it } from 'vitest';
import { cutText, firstFitting, firstFittingFrame, layoutTable, tableWidth, wrapItems } from '../../src/util/text-layout.js';

describe('text layout', () => {
  it('cuts free text with an ellipsis, and only when it is too long', () => {
    expect(cutText('abcdef', 6)).toBe('abcdef');
    expect(cutText('abc def', 5)).toBe('abc…');
    expect(cutText('abcdef', 0)).toBe('');
    expect(firstFitting(['a long one', 'short'], 6)).toBe('short');
    expect(firstFitting(['a long one', 'still long'], 6)).toBe('still…');
  });

  it('pads columns, cuts only the last one, and drops a cell that does not fit whole', () => {
    const rows = [
      [{ text: 'name' }, { text: 'count', align: 'right' as const }, { text: 'note' }],
      [{ text: 'a' }, { text: '12345', align: 'right' as const }, { text: 'a long note here' }],
    ];
    expect(tableWidth(rows.map((r) => r.slice(0, 2)))).toBe(11);
    expect(layoutTable(rows, { width: 100, color: false })).toEqual(['name  count  note', 'a     12345  a long note here']);
    expect(layoutTable(rows, { width: 20, color: false })).toEqual(['name  count  note', 'a     12345  a long…']);
    // 'count' would need columns 7..11: with 9 columns it is left out rather than cut to '123'.
    expect(layoutTable(rows, { width: 9, color: false })).toEqual(['name', 'a']);
    expect(layoutTable(rows, { width: 100, color: true, gap: 1 })[0]).toBe('name count note');
  });

  it('takes the first frame short enough, makes frames only as asked, and cuts the last one when none is', () => {
    const made: number[] = [];
    function* frames(): Generator<string[]> {
      for (const n of [5, 3, 2, 1]) {
        made.push(n);
        yield Array.from({ length: n }, (_, i) => `line ${i + 1}`);
      }
    }
    expect(firstFittingFrame(frames(), 3)).toEqual(['line 1', 'line 2', 'line 3']);
    expect(made).toEqual([5, 3]);
    expect(firstFittingFrame(frames(), 0)).toEqual([]);
    expect(firstFittingFrame([['a', 'b', 'c']], 2)).toEqual(['a', 'b']);
  });

  it('wraps items into lines of the width', () => {
    expect(wrapItems(['key:', 'one 1', 'two 2', 'three 3'], 16, '  ', '      ')).toEqual(['key:  one 1', '      two 2', '      three 3']);
  });
});
