import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PostgresServer } from '../../src/pg-server/postgres-server.js';
import { binaryTextArray } from '../../src/util/binary-text-array.js';
import { availableServerVersions } from '../support/pg-versions.js';

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

describe.each(availableServerVersions())('binaryTextArray on $label', ({ binDir }) => {
  let server: PostgresServer;
  let client: pg.Client;

  beforeAll(async () => {
    server = await PostgresServer.start({ binDir, name: 'binary-text-array' });
    client = new pg.Client({ connectionString: server.connectionString() });
    await client.connect();
  });

  afterAll(async () => {
    await client?.end();
    await server?.destroy();
  });

  it('is read by array_recv as the same text[]', async () => {
    const r = await client.query<{ v: (string | null)[]; n: number; nulls: number }>(
      'SELECT $1::text[] AS v, cardinality($1::text[]) AS n, array_position($1::text[], NULL) AS nulls',
      [binaryTextArray(VALUES)],
    );
    expect(r.rows[0]).toEqual({ v: VALUES, n: VALUES.length, nulls: 3 });
    const empty = await client.query<{ v: string[] }>('SELECT $1::text[] AS v', [binaryTextArray([])]);
    expect(empty.rows[0]?.v).toEqual([]);
  });
});
