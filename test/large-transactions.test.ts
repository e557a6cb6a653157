import { describe, expect, it } from 'vitest';
import { availableServerVersions } from './support/pg-versions.js';
import { eventually, useCluster } from './support/cluster-fixture.js';

/**
 * Large transactions take the statement path in batches (apply_batch_size), each batch of inserts a
 * plain INSERT while nothing conflicts. A batch after the first that meets an existing row cannot
 * be redone alone: the transaction is applied again from its start, with conflict-aware upserts.
 */
describe.each(availableServerVersions())('large transactions on $label', ({ binDir }) => {
  const cluster = useCluster(() => ({
    binDir,
    nodes: ['a', 'b'],
    schema: [`CREATE TABLE big (id int PRIMARY KEY, v text)`],
    replication: { apply_batch_size: 100, apply_procedure_max_changes: 20 },
  }));

  it('applies a 1,000-row transaction whose sixth batch meets an existing row, once, with the row resolved', async () => {
    const c = cluster.get();
    await c.setupAll();
    // b's row is older than a's transaction: a's version wins on both nodes.
    await c.query('b', `INSERT INTO big VALUES (550, 'from b')`);
    await c.query('a', `INSERT INTO big SELECT g, 'from a' FROM generate_series(1, 1000) g`);
    await c.startAgent('a');
    await c.startAgent('b');
    const expected = { rows: 1000 };
    await eventually(
      'both nodes hold a’s 1,000 rows',
      async () => {
        const counts = await Promise.all(
          ['a', 'b'].map(async (n) => (await c.query<{ n: number }>(n, `SELECT count(*)::int AS n FROM big WHERE v = 'from a'`))[0]?.n),
        );
        return counts.every((n) => n === expected.rows);
      },
      60_000,
    );
    const [ha, hb] = await Promise.all([c.tableHash('a', 'public', 'big'), c.tableHash('b', 'public', 'big')]);
    expect(hb).toEqual(ha);
    // The batch with row 550 failed its plain INSERT; the transaction was applied again from its start.
    const link = c.agents
      .get('b')
      ?.status()
      .find((l) => l.peer === 'a');
    expect(link?.reconnects).toBeGreaterThanOrEqual(1);
    expect(link?.transactionsApplied).toBeGreaterThanOrEqual(1);
    const logged = await c.query<{ t: string }>('b', `SELECT conflict_type || '/' || resolution AS t FROM pgbidi.conflicts WHERE table_name = 'big'`);
    expect(logged).toEqual([{ t: 'insert_exists/apply_remote' }]);
    const onA = await c.query<{ t: string }>('a', `SELECT conflict_type || '/' || resolution AS t FROM pgbidi.conflicts WHERE table_name = 'big'`);
    expect(onA).toEqual([{ t: 'insert_exists/keep_local' }]);
  });
});
