import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { eventually, useCluster, versionsAndApplyPaths } from './support/cluster-fixture.js';

/**
 * Apply takes row locks like any session. A local transaction that locks rows in the other order
 * deadlocks with it; PostgreSQL aborts one of the two (40P01, the one whose deadlock_timeout ends
 * first: here apply's, which waited first). An aborted apply transaction is applied again, from its
 * start, once the local one has committed: nothing is lost or applied twice, and last-update-wins
 * then keeps the local rows, which are newer.
 */
describe.each(versionsAndApplyPaths())('apply deadlocked with a local transaction on $label through the $path', ({ binDir, apply_procedure_max_changes }) => {
  const cluster = useCluster(() => ({
    binDir,
    nodes: ['a', 'b'],
    schema: [`CREATE TABLE t (id int PRIMARY KEY, v text)`],
    replication: { apply_procedure_max_changes, reconnect: { initial_delay_ms: 100, max_delay_ms: 500 } },
  }));

  it('applies the aborted transaction again after the local one, and both nodes converge', async () => {
    const c = cluster.get();
    await c.setupAll();
    await c.startAgent('a');
    await c.startAgent('b');
    await c.query('a', `INSERT INTO t VALUES (1, 'x'), (2, 'x'), (3, 'x')`);
    await eventually('rows on b', async () => (await c.query('b', 'SELECT 1 FROM t')).length === 3);

    const local = new pg.Client({ connectionString: c.dsn('b') });
    const remote = new pg.Client({ connectionString: c.dsn('a') });
    await Promise.all([local.connect(), remote.connect()]);
    try {
      await local.query('BEGIN');
      await local.query(`UPDATE t SET v = 'b2' WHERE id = 2`);
      // One transaction on a: row 1, then row 2, which b's local transaction holds.
      await remote.query('BEGIN');
      await remote.query(`UPDATE t SET v = 'a1' WHERE id = 1`);
      await remote.query(`UPDATE t SET v = 'a2' WHERE id = 2`);
      await remote.query('COMMIT');
      await remote.query(`UPDATE t SET v = 'a3' WHERE id = 3`);
      await eventually('apply waits for row 2', async () => {
        const r = await c.query<{ n: number }>(
          'b',
          `SELECT count(*)::int AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND backend_type = 'client backend'`,
        );
        return r[0]?.n === 1;
      });
      // Row 1 is apply's now: the local transaction waits for it, and one of the two is aborted.
      await local.query(`UPDATE t SET v = 'b1' WHERE id = 1`);
      await local.query('COMMIT');
    } finally {
      await Promise.all([local.end(), remote.end()]);
    }
    const expected = [
      { id: 1, v: 'b1' },
      { id: 2, v: 'b2' },
      { id: 3, v: 'a3' },
    ];
    await eventually('a has the local rows of b', async () => JSON.stringify(await c.query('a', 'SELECT * FROM t ORDER BY id')) === JSON.stringify(expected));
    // b applies a's aborted transaction again after its retry delay, which a loaded machine stretches.
    await eventually(
      'b has applied the retried transaction',
      async () => JSON.stringify(await c.query('b', 'SELECT * FROM t ORDER BY id')) === JSON.stringify(expected),
    );
    expect(await c.query('b', 'SELECT * FROM t ORDER BY id')).toEqual(expected);
    expect(await c.query('a', 'SELECT * FROM t ORDER BY id')).toEqual(expected);
    const kept = await c.query<{ k: string }>('b', `SELECT conflict_type || '/' || resolution || ' ' || key::text AS k FROM pgbidi.conflicts ORDER BY 1`);
    expect(kept.map((r) => r.k)).toEqual(['update_origin_differs/keep_local ["1"]', 'update_origin_differs/keep_local ["2"]']);
    expect(c.agents.get('b')?.status()[0]?.state).toBe('streaming');
    // The deadlock did happen (counted when the aborted backend reports its statistics).
    await eventually('the deadlock counted on b', async () => {
      const r = await c.query<{ n: number }>('b', 'SELECT deadlocks::int AS n FROM pg_stat_database WHERE datname = current_database()');
      return (r[0]?.n ?? 0) >= 1;
    });
  });
});
