import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { eventually, useCluster, versionsAndApplyPaths } from './support/cluster-fixture.js';

const DRAIN_TIMEOUT_MS = 1000;
/** Far below statement_timeout (60 s), the other thing that would end the wait. */
const STOP_BOUND_MS = 30_000;

/**
 * An agent stops within replication.drain_timeout_ms even when its apply waits for a row lock that a
 * local session holds and keeps (idle in transaction). The apply statement is cancelled, its
 * transaction rolls back with its origin progress, and the next start applies it once.
 */
describe.each(versionsAndApplyPaths())('stop while apply waits for a local lock on $label through the $path', ({ binDir, apply_procedure_max_changes }) => {
  const cluster = useCluster(() => ({
    binDir,
    nodes: ['a', 'b'],
    schema: [`CREATE TABLE t (id int PRIMARY KEY, v text)`],
    replication: { apply_procedure_max_changes, drain_timeout_ms: DRAIN_TIMEOUT_MS },
  }));

  it('cancels the waiting statement, stops, and applies the transaction once at the next start', async () => {
    const c = cluster.get();
    await c.setupAll();
    await c.startAgent('a');
    await c.startAgent('b');
    await c.query('a', `INSERT INTO t VALUES (1, 'x')`);
    await eventually('the row on b', async () => (await c.query('b', 'SELECT 1 FROM t')).length === 1);

    const local = new pg.Client({ connectionString: c.dsn('b') });
    await local.connect();
    const lockWaiters = async (): Promise<number> =>
      (await c.query<{ n: number }>('b', `SELECT count(*)::int AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()`))[0]
        ?.n ?? -1;
    let stopped: number | 'hung';
    try {
      await local.query('BEGIN');
      await local.query(`UPDATE t SET v = 'local' WHERE id = 1`);
      await c.query('a', `UPDATE t SET v = 'a' WHERE id = 1`);
      await c.query('a', `INSERT INTO t VALUES (2, 'a')`);
      await eventually('apply waits for the row lock', async () => (await lockWaiters()) === 1);

      const t0 = Date.now();
      stopped = await Promise.race([
        c.stopAgent('b').then(() => Date.now() - t0),
        new Promise<'hung'>((resolve) => setTimeout(() => resolve('hung'), STOP_BOUND_MS)),
      ]);
      // The lock is still held: only the cancel can have ended the wait.
      expect(await lockWaiters()).toBe(0);
    } finally {
      await local.query('ROLLBACK').catch(() => undefined);
      await local.end();
    }
    expect(stopped).not.toBe('hung');
    expect(await c.query('b', 'SELECT * FROM t ORDER BY id')).toEqual([{ id: 1, v: 'x' }]);

    await c.startAgent('b');
    const expected = [
      { id: 1, v: 'a' },
      { id: 2, v: 'a' },
    ];
    await eventually(
      'b applies the cancelled transaction and the next one',
      async () => JSON.stringify(await c.query('b', 'SELECT * FROM t ORDER BY id')) === JSON.stringify(expected),
    );
    // Applied once: a second apply of the INSERT would have met its own row (insert_exists).
    expect(await c.query('b', 'SELECT conflict_type FROM pgbidi.conflicts')).toEqual([]);
  }, 120_000);
});
