import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { availableServerVersions } from './support/pg-versions.js';
import { eventually, useCluster } from './support/cluster-fixture.js';

/**
 * With logical_decoding_work_mem at its minimum (64 kB) the walsender streams every transaction of
 * more than a few hundred rows before it commits (protocol 2, Stream Start … Stop blocks). The link
 * keeps them until Stream Commit: aborted subtransactions and aborted transactions leave nothing,
 * interleaved streams come apart, and a stop of the agent in the middle loses nothing.
 */
describe.each(availableServerVersions())('transactions streamed before their commit on $label', ({ binDir }) => {
  const cluster = useCluster(() => ({
    binDir,
    nodes: ['a', 'b'],
    schema: [`CREATE TABLE s (id int PRIMARY KEY, v text NOT NULL, n int NOT NULL DEFAULT 0)`],
    settings: { logical_decoding_work_mem: '64kB' },
  }));

  it('applies streamed transactions with rolled-back savepoints, drops aborted ones and separates interleaved ones', async () => {
    const c = cluster.get();
    await c.setupAll();
    await c.startAgent('a');
    await c.startAgent('b');
    const [one, two] = [new pg.Client({ connectionString: c.dsn('a') }), new pg.Client({ connectionString: c.dsn('a') })];
    await Promise.all([one.connect(), two.connect()]);
    try {
      // Savepoints: the rolled-back subtransaction and the one nested in it leave nothing behind.
      await one.query('BEGIN');
      await one.query(`INSERT INTO s (id, v) SELECT g, 'top ' || g FROM generate_series(1, 3000) g`);
      await one.query('SAVEPOINT outer_sp');
      await one.query(`INSERT INTO s (id, v) SELECT g, 'rolled back' FROM generate_series(10001, 12000) g`);
      await one.query('SAVEPOINT inner_sp');
      await one.query(`UPDATE s SET v = 'rolled back too' WHERE id <= 1000`);
      await one.query('ROLLBACK TO SAVEPOINT outer_sp');
      await one.query(`UPDATE s SET n = n + 1 WHERE id % 3 = 0`);
      await one.query('SAVEPOINT kept_sp');
      await one.query(`INSERT INTO s (id, v) SELECT g, 'kept ' || g FROM generate_series(13001, 14000) g`);
      await one.query('RELEASE SAVEPOINT kept_sp');
      await one.query('COMMIT');

      // A transaction streamed and then rolled back as a whole.
      await one.query('BEGIN');
      await one.query(`INSERT INTO s (id, v) SELECT g, 'aborted' FROM generate_series(50001, 55000) g`);
      await one.query('ROLLBACK');

      // Two streamed transactions at once; the one that commits second began first.
      await one.query('BEGIN');
      await two.query('BEGIN');
      await one.query(`INSERT INTO s (id, v) SELECT g, 'one' FROM generate_series(20001, 22000) g`);
      await two.query(`INSERT INTO s (id, v) SELECT g, 'two' FROM generate_series(30001, 32000) g`);
      await one.query(`INSERT INTO s (id, v) SELECT g, 'one' FROM generate_series(22001, 24000) g`);
      await two.query(`DELETE FROM s WHERE id BETWEEN 2001 AND 2500`);
      await two.query('COMMIT');
      await one.query(`UPDATE s SET v = 'one updated' WHERE id BETWEEN 13001 AND 13500`);
      await one.query('COMMIT');
    } finally {
      await Promise.all([one.end(), two.end()]);
    }
    // 3,000 + 1,000 kept − 500 deleted + 4,000 + 2,000.
    const expected = 9500;
    await eventually(
      'b holds every committed row',
      async () => (await c.query<{ n: number }>('b', 'SELECT count(*)::int AS n FROM s'))[0]?.n === expected,
      60_000,
    );
    const [ha, hb] = await Promise.all([c.tableHash('a', 'public', 's'), c.tableHash('b', 'public', 's')]);
    expect(hb).toEqual(ha);
    const rolledBack = await c.query<{ n: number }>('b', `SELECT count(*)::int AS n FROM s WHERE v LIKE 'rolled back%' OR v = 'aborted'`);
    expect(rolledBack[0]?.n).toBe(0);
    expect((await c.query<{ n: number }>('b', `SELECT count(*)::int AS n FROM s WHERE n = 1`))[0]?.n).toBe(1000 - 167); // every third of 1..3000, less those of 2001..2500
    // The walsender did stream them (pg_stat_replication_slots, PostgreSQL 14+), and nothing conflicted.
    const streamed = await c.query<{ n: string }>('a', `SELECT coalesce(sum(stream_txns), 0)::text AS n FROM pg_stat_replication_slots`);
    expect(Number(streamed[0]?.n)).toBeGreaterThanOrEqual(3);
    expect(await c.query('b', 'SELECT 1 FROM pgbidi.conflicts')).toEqual([]);
  });

  it('applies a streamed transaction once when the agent stops while it is being read back', async () => {
    const c = cluster.get();
    if (c.agents.size === 0) {
      await c.setupAll();
      await c.startAgent('a');
      await c.startAgent('b');
    }
    await c.query('a', `INSERT INTO s (id, v) SELECT g, 'restart ' || g FROM generate_series(100001, 160000) g`);
    await eventually(
      'some rows on b',
      async () => ((await c.query<{ n: number }>('b', 'SELECT count(*)::int AS n FROM s WHERE id > 100000'))[0]?.n ?? 0) > 0,
      60_000,
    );
    await c.stopAgent('b');
    await c.startAgent('b');
    await eventually(
      'every row on b',
      async () => (await c.query<{ n: number }>('b', 'SELECT count(*)::int AS n FROM s WHERE id > 100000'))[0]?.n === 60_000,
      120_000,
    );
    const [ha, hb] = await Promise.all([c.tableHash('a', 'public', 's'), c.tableHash('b', 'public', 's')]);
    expect(hb).toEqual(ha);
  });
});
