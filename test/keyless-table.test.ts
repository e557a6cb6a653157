import { describe, expect, it } from 'vitest';
import { eventually, useCluster } from './support/cluster-fixture.js';
import { availableServerVersions } from './support/pg-versions.js';

describe.each(availableServerVersions())('a table without a key on $label', ({ binDir }) => {
  const cluster = useCluster(() => ({
    binDir,
    nodes: ['a', 'b'],
    schema: [
      `CREATE TABLE ledger (node text NOT NULL, seq bigint NOT NULL)`,
      `ALTER TABLE ledger REPLICA IDENTITY FULL`,
      `CREATE TABLE items (id int PRIMARY KEY, v text NOT NULL)`,
    ],
  }));

  it('applies inserts exactly once and records no conflict for them', async () => {
    const c = cluster.get();
    await c.setupAll();
    await c.startAgent('a');
    await c.startAgent('b');
    // One transaction with a keyed and a keyless table, as the fault suite's workload writes.
    for (let i = 1; i <= 20; i++) {
      await c.query('a', `WITH l AS (INSERT INTO ledger VALUES ('a', $1)) INSERT INTO items VALUES ($1, 'x')`, [i]);
    }
    await c.query('a', `INSERT INTO ledger SELECT 'a', g FROM generate_series(21, 3000) g`);
    await eventually('b to have every ledger row', async () => (await c.tableHash('b', 'public', 'ledger')).rows === 3000, 60_000);
    expect(await c.tableHash('b', 'public', 'ledger')).toEqual(await c.tableHash('a', 'public', 'ledger'));
    expect(await c.query('b', `SELECT count(*)::int AS n, count(DISTINCT seq)::int AS seqs FROM ledger`)).toEqual([{ n: 3000, seqs: 3000 }]);
    expect(await c.query('b', `SELECT conflict_type, table_name FROM pgbidi.conflicts`)).toEqual([]);
    const [link] = (c.agents.get('b')?.status() ?? []).filter((l) => l.peer === 'a');
    expect(link?.conflicts).toBe(0);
  });
});
