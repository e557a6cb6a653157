import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { availableServerVersions } from './support/pg-versions.js';
import { eventually, sleep, useCluster } from './support/cluster-fixture.js';

/**
 * Limits a DBA sets for application sessions (here for the whole database of b) must not end
 * pgbidi's apply session, which waits inside its transaction by design: for the next batches of a
 * large transaction, and for a streamed one while the peer still runs it. Ended, the transaction is
 * attempted again from its start and meets the same limit at the same place, every time.
 */
describe.each(availableServerVersions())('session limits of the database on $label', ({ binDir, label }) => {
  const cluster = useCluster(() => ({
    binDir,
    nodes: ['a', 'b'],
    schema: [`CREATE TABLE t (id int PRIMARY KEY, v text)`],
    // Small, so that the open transaction below is streamed (applied while a still runs it).
    settings: { logical_decoding_work_mem: '64kB' },
    replication: { reconnect: { initial_delay_ms: 100, max_delay_ms: 500 } },
  }));

  it('applies a streamed transaction that idles, a transaction longer than transaction_timeout and one that waits for a local lock, without losing the session', async () => {
    const c = cluster.get();
    await c.setupAll();
    const [db] = await c.query<{ d: string }>('b', 'SELECT current_database() AS d');
    await c.query('b', `ALTER DATABASE "${db?.d ?? ''}" SET idle_in_transaction_session_timeout = '1s'`);
    await c.query('b', `ALTER DATABASE "${db?.d ?? ''}" SET idle_session_timeout = '1s'`);
    await c.query('b', `ALTER DATABASE "${db?.d ?? ''}" SET lock_timeout = '200ms'`);
    // transaction_timeout exists from 17 on.
    if (label !== 'pg15') await c.query('b', `ALTER DATABASE "${db?.d ?? ''}" SET transaction_timeout = '1s'`);
    await c.startAgent('a');
    await c.startAgent('b');

    const a = new pg.Client({ connectionString: c.dsn('a') });
    await a.connect();
    try {
      await a.query('BEGIN');
      await a.query(`INSERT INTO t SELECT g, repeat('x', 100) FROM generate_series(1, 5000) g`);
      await sleep(2500); // b's apply session holds the streamed part, idle in its transaction
      await a.query(`INSERT INTO t SELECT g, repeat('x', 100) FROM generate_series(5001, 10000) g`);
      await a.query('COMMIT');
    } finally {
      await a.end();
    }
    // Longer than a second to apply on b.
    await c.query('a', `INSERT INTO t SELECT g, 'y' FROM generate_series(10001, 400000) g`);
    await eventually('every row on b', async () => (await c.query<{ n: number }>('b', 'SELECT count(*)::int AS n FROM t'))[0]?.n === 400_000, 60_000);
    await sleep(1500); // idle between transactions, longer than idle_session_timeout
    // A local transaction on b holds the row that a's next transaction updates, longer than lock_timeout.
    // The holder opts out of the database's 1 s limits: they are for the agent's sessions, and a loaded
    // machine stretched the holder's 700 ms past them (its session was terminated, 25P03).
    const optOut = ['idle_in_transaction_session_timeout', ...(label !== 'pg15' ? ['transaction_timeout'] : [])];
    const local = new pg.Client({ connectionString: c.dsn('b'), options: optOut.map((name) => `-c ${name}=0`).join(' ') });
    await local.connect();
    try {
      await local.query('BEGIN');
      await local.query(`UPDATE t SET v = 'held' WHERE id = 1`);
      await c.query('a', `UPDATE t SET v = 'after' WHERE id = 1`);
      await c.query('a', `INSERT INTO t VALUES (0, 'after')`);
      await sleep(700);
      await local.query('ROLLBACK');
    } finally {
      await local.end();
    }
    await eventually('the rows after the pause on b', async () => (await c.query('b', `SELECT 1 FROM t WHERE id IN (0, 1) AND v = 'after'`)).length === 2);
    const link = c.agents.get('b')?.status()[0];
    expect(link?.reconnects).toBe(0);
    expect(link?.lastError).toBeNull();
  });
});
