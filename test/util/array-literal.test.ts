import { describe, expect, it } from 'vitest';
import { arrayLiteral } from '../../src/util/sql.js';

describe('arrayLiteral', () => {
  it('quotes every text element and escapes only quote and backslash', () => {
    expect(arrayLiteral(['a', 'b c', '{x,y}', '', 'NULL'])).toBe('{"a","b c","{x,y}","","NULL"}');
    expect(arrayLiteral(['say "hi"', 'C:\\dir'])).toBe('{"say \\"hi\\"","C:\\\\dir"}');
  });

  it('writes NULL and booleans bare', () => {
    expect(arrayLiteral([null, 'x', true, false])).toBe('{NULL,"x",t,f}');
    expect(arrayLiteral([])).toBe('{}');
  });
});
