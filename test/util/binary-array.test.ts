import { describe, expect, it } from 'vitest';
import { binaryInt4Array, binaryInt8Array, binaryTextArray } from '../../src/util/binary-array.js';
import { availableServerVersions } from '../support/pg-versions.js';
import { useServer } from '../support/server-fixture.js';

const VALUES: (string | null)[] = [
  'plain',
  '',
  null,
  'quote " and backslash \\ and {braces}, commas',
  'NULL',
  'é accents and 日本語 and an emoji 🐘',
  'x'.repeat(24),
  'y'.repeat(25),
  'é'.repeat(20),
  `${'long '.repeat(40)}with ü at the end`,
  ' leading and trailing spaces ',
  'line\nbreak\ttab',
];

describe('binaryTextArray', () => {
  it('writes the array_send layout: header, one dimension from 1, each element by its byte length', () => {
    const buf = binaryTextArray(['ab', null, 'é']);
    expect([0, 4, 8, 12, 16].map((o) => buf.readInt32BE(o))).toEqual([1, 1, 25, 3, 1]);
    expect(buf.readInt32BE(20)).toBe(2);
    expect(buf.subarray(24, 26).toString('utf8')).toBe('ab');
    expect(buf.readInt32BE(26)).toBe(-1);
    expect(buf.readInt32BE(30)).toBe(2); // é is two bytes in UTF-8
    expect(buf.subarray(34).toString('utf8')).toBe('é');
    expect(binaryTextArray(['a']).readInt32BE(4)).toBe(0); // no NULL: the flag is clear
  });

  it('grows past its first estimate when the text is not ASCII', () => {
    const many = Array.from({ length: 200 }, (_, i) => `${'€'.repeat(i % 60)}${i}`);
    const buf = binaryTextArray(many);
    let off = 20;
    const back: string[] = [];
    for (let i = 0; i < many.length; i++) {
      const n = buf.readInt32BE(off);
      back.push(buf.subarray(off + 4, off + 4 + n).toString('utf8'));
      off += 4 + n;
    }
    expect(off).toBe(buf.length);
    expect(back).toEqual(many);
  });
});

describe('binaryInt8Array and binaryInt4Array', () => {
  it('write the element type, then each element as a length and its big-endian bytes', () => {
    const lsns = binaryInt8Array([0x16b374d848n, 0xffffffffffffffffn], 'pg_lsn');
    expect([0, 4, 8, 12, 16].map((o) => lsns.readInt32BE(o))).toEqual([1, 0, 3220, 2, 1]);
    expect(lsns.readInt32BE(20)).toBe(8);
    expect(lsns.readBigUInt64BE(24)).toBe(0x16b374d848n);
    expect(lsns.readBigUInt64BE(36)).toBe(0xffffffffffffffffn);
    expect(lsns.length).toBe(20 + 2 * 12);
    const times = binaryInt8Array([-1n], 'timestamptz');
    expect(times.readInt32BE(8)).toBe(1184);
    expect(times.readBigInt64BE(24)).toBe(-1n);
    const ints = binaryInt4Array([7, -2]);
    expect([8, 12, 20, 24, 28, 32].map((o) => ints.readInt32BE(o))).toEqual([23, 2, 4, 7, 4, -2]);
  });
});

describe.each(availableServerVersions())('binary arrays on $label', ({ binDir }) => {
  const db = useServer(() => ({ binDir, name: 'binary-text-array' }));

  it('is read by array_recv as the same text[]', async () => {
    const r = await db.client.query<{ v: (string | null)[]; n: number; nulls: number }>(
      'SELECT $1::text[] AS v, cardinality($1::text[]) AS n, array_position($1::text[], NULL) AS nulls',
      [binaryTextArray(VALUES)],
    );
    expect(r.rows[0]).toEqual({ v: VALUES, n: VALUES.length, nulls: 3 });
    const empty = await db.client.query<{ v: string[] }>('SELECT $1::text[] AS v', [binaryTextArray([])]);
    expect(empty.rows[0]?.v).toEqual([]);
  });

  it('reads pg_lsn[], timestamptz[] and int[] as the values they stand for', async () => {
    // Microseconds since 2000-01-01 UTC, as pgoutput sends commit times; one before 2000 too.
    await db.client.query(`SET TimeZone = 'UTC'`);
    const r = await db.client.query<{ l: string; t: string; i: string; n: number }>(
      `SELECT $1::pg_lsn[]::text AS l, $2::timestamptz[]::text AS t, $3::int[]::text AS i, cardinality($4::int[]) AS n`,
      [
        binaryInt8Array([0x16b374d848n, 0n, 0xfffffffffffffffen], 'pg_lsn'),
        binaryInt8Array([820_633_845_123_456n, -1n], 'timestamptz'),
        binaryInt4Array([1, -2, 2147483647]),
        binaryInt4Array([]),
      ],
    );
    expect(r.rows[0]).toEqual({
      l: '{16/B374D848,0/0,FFFFFFFF/FFFFFFFE}',
      t: '{"2026-01-02 01:50:45.123456+00","1999-12-31 23:59:59.999999+00"}',
      i: '{1,-2,2147483647}',
      n: 0,
    });
  });
});
