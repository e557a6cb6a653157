import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { main } from '../src/cli.js';
import { parseConfig } from '../src/config/load-config.js';
import { alignSequences, firstValueAbove, nodeOffset, sequenceWarnings } from '../src/node/sequences.js';
import type { LocalCluster } from '../src/testbed/local-cluster.js';
import { useCluster } from './support/cluster-fixture.js';
import { availableServerVersions } from './support/pg-versions.js';

describe('firstValueAbove', () => {
  it('is the smallest value above the bound in the offset class', () => {
    expect(firstValueAbove(0n, 1n, 10n)).toBe(1n);
    expect(firstValueAbove(1n, 1n, 10n)).toBe(11n);
    expect(firstValueAbove(37n, 0n, 10n)).toBe(40n);
    expect(firstValueAbove(40n, 0n, 10n)).toBe(50n);
    expect(firstValueAbove(-5n, 3n, 4n)).toBe(-1n);
  });
});

const SCHEMA = [
  `CREATE TABLE orders (id serial PRIMARY KEY, node text NOT NULL, n int NOT NULL)`,
  `CREATE TABLE events (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, node text NOT NULL, n int NOT NULL)`,
];

function offsetConfig(c: LocalCluster, node: string, offset?: number) {
  return parseConfig({ ...c.rawConfig(node), sequences: { mode: 'node-offset', group_size: 10, ...(offset === undefined ? {} : { offset }) } }, {});
}

/** Each of `rounds` statements inserts `rows` rows with default keys on every node at once. */
async function insertEverywhere(c: LocalCluster, rounds: number, rows: number): Promise<void> {
  await Promise.all(
    ['a', 'b'].map(async (node) => {
      for (let i = 0; i < rounds; i++) {
        await c.query(node, `INSERT INTO orders (node, n) SELECT $1, g FROM generate_series(1, $2::int) g`, [node, rows]);
        await c.query(node, `INSERT INTO events (node, n) SELECT $1, g FROM generate_series(1, $2::int) g`, [node, rows]);
      }
    }),
  );
}

describe.each(availableServerVersions())('node-unique sequences ($label)', ({ binDir }) => {
  const cluster = useCluster(() => ({ binDir, nodes: ['a', 'b'], schema: SCHEMA }));
  const dir = mkdtempSync(join(tmpdir(), 'pgbidi-seq-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('status warns about plain sequences; after setup two nodes insert with defaults at once without a collision', async () => {
    const c = cluster.get();
    await c.setupAll();
    // Rows written before the group existed: the restart values must be above them.
    await c.query('a', `INSERT INTO orders (node, n) SELECT 'seed', g FROM generate_series(1, 25) g`);
    await c.query('b', `INSERT INTO orders (node, n) SELECT 'seed', g FROM generate_series(1, 25) g`);

    const before = await sequenceWarnings(c.config('a'));
    expect(before).toHaveLength(2);
    expect(before[0]).toContain('public.events.id takes its values from public.events_id_seq (increment 1)');
    expect(before[1]).toContain('public.orders.id takes its values from public.orders_id_seq (increment 1)');

    expect(nodeOffset(offsetConfig(c, 'a'))).toBe(0);
    expect(nodeOffset(offsetConfig(c, 'b'))).toBe(1);
    const a = await alignSequences(offsetConfig(c, 'a'));
    const b = await alignSequences(offsetConfig(c, 'b'));
    expect(a.map((x) => [x.sequence, x.status, x.restartAt])).toEqual([
      ['public.events_id_seq', 'aligned', 10n],
      ['public.orders_id_seq', 'aligned', 30n],
    ]);
    expect(b.map((x) => [x.sequence, x.status, x.restartAt])).toEqual([
      ['public.events_id_seq', 'aligned', 1n],
      ['public.orders_id_seq', 'aligned', 31n],
    ]);
    // Again through `pgbidi setup`: nothing to change, and it says so.
    const file = join(dir, 'a.yaml');
    writeFileSync(file, JSON.stringify({ ...c.rawConfig('a'), sequences: { mode: 'node-offset', group_size: 10 } }));
    const out: string[] = [];
    expect(await main(['setup', '--config', file], { out: (x) => out.push(x), err: (x) => out.push(x) })).toBe(0);
    expect(out.join('')).toContain('sequences: node-offset 0 of 10');
    expect(out.join('')).toContain('public.orders_id_seq (public.orders.id): already node-unique');
    expect(out.join('')).not.toContain('takes its values from');
    expect(await sequenceWarnings(c.config('a'))).toEqual([]);
    // The same offset on both nodes is named.
    await alignSequences(offsetConfig(c, 'b', 0));
    expect((await sequenceWarnings(c.config('b'))).join('\n')).toContain('public.orders.id: public.orders_id_seq hands out the same values here and on a');
    await alignSequences(offsetConfig(c, 'b', 1));

    // The seed rows (same keys on both nodes) are replaced by b's version where they differ; start
    // from the same content so that only the new rows are compared.
    await c.query('b', `DELETE FROM orders WHERE node = 'seed'`);
    await c.query('a', `DELETE FROM orders WHERE node = 'seed'`);
    await c.startAgent('a');
    await c.startAgent('b');
    await insertEverywhere(c, 20, 10);

    for (const table of ['orders', 'events']) {
      const fp = await c.waitConverged('public', table, 60_000);
      expect(
        [...fp.values()].map((f) => f.rows),
        table,
      ).toEqual([400, 400]);
      const residues = await c.query<{ node: string; r: number; n: number }>(
        'a',
        `SELECT node, (id % 10)::int AS r, count(*)::int AS n FROM ${table} GROUP BY 1, 2 ORDER BY 1, 2`,
      );
      expect(residues, table).toEqual([
        { node: 'a', r: 0, n: 200 },
        { node: 'b', r: 1, n: 200 },
      ]);
    }
    const conflicts = await c.query<{ n: number }>('a', `SELECT count(*)::int AS n FROM pgbidi.conflicts WHERE conflict_type = 'insert_exists'`);
    expect(conflicts[0]?.n).toBe(0);
  });
});
