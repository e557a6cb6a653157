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
    // e: a table without deletes, whose inserts can take the plain INSERTs (a tombstone closes them).
    schema: [
      `CREATE TABLE s (id int PRIMARY KEY, v text NOT NULL, n int NOT NULL DEFAULT 0)`,
      `CREATE TABLE e (id int PRIMARY KEY, v text NOT NULL, n int NOT NULL DEFAULT 0)`,
    ],
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

  it('applies an insert-only streamed transaction while it streams, and from the spool when it cannot go on so', async () => {
    const c = cluster.get();
    if (c.agents.size === 0) {
      await c.setupAll();
      await c.startAgent('a');
      await c.startAgent('b');
    }
    const count = async (node: string, from: number, to: number): Promise<number> =>
      (await c.query<{ n: number }>(node, 'SELECT count(*)::int AS n FROM e WHERE id BETWEEN $1 AND $2', [from, to]))[0]?.n ?? -1;
    // B's apply session has written (it holds an xid) before the transaction committed on A.
    const applyingEarly = async (): Promise<boolean> =>
      (
        await c.query<{ n: number }>(
          'b',
          `SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'pgbidi_b_from_a' AND backend_xid IS NOT NULL`,
        )
      )[0]?.n === 1;
    const one = new pg.Client({ connectionString: c.dsn('a') });
    await one.connect();
    try {
      // Alone: applied while A's transaction is open, committed with A's commit time and B's origin for A.
      await one.query('BEGIN');
      await one.query(`INSERT INTO e (id, v) SELECT g, 'early ' || g FROM generate_series(200001, 205000) g`);
      await eventually('b applies before a commits', applyingEarly, 30_000);
      expect(await count('b', 200001, 205000)).toBe(0);
      await one.query(`INSERT INTO e (id, v) SELECT g, 'early ' || g FROM generate_series(205001, 210000) g`);
      await one.query('COMMIT');
      await eventually('every row on b', async () => (await count('b', 200001, 210000)) === 10_000, 60_000);
      const stamp = `SELECT pg_xact_commit_timestamp(xmin)::text AS t, count(*)::int AS n FROM e WHERE id BETWEEN 200001 AND 210000 GROUP BY 1`;
      const [onA, onB] = [await c.query<{ t: string; n: number }>('a', stamp), await c.query<{ t: string; n: number }>('b', stamp)];
      expect(onA).toHaveLength(1);
      expect(onB).toEqual(onA);
      const origin = await c.query<{ o: string }>(
        'b',
        `SELECT DISTINCT o.roname AS o FROM e s, pg_xact_commit_timestamp_origin(s.xmin) x JOIN pg_replication_origin o ON o.roident = x.roident WHERE s.id BETWEEN 200001 AND 210000`,
      );
      expect(origin).toEqual([{ o: 'pgbidi_a' }]);

      // A transaction with changes commits on A while the large one is open: it is applied on B at
      // once, so the early work is rolled back, and the large one comes from the spool at its commit.
      await one.query('BEGIN');
      await one.query(`INSERT INTO e (id, v) SELECT g, 'late ' || g FROM generate_series(300001, 305000) g`);
      await eventually('b applies before a commits', applyingEarly, 30_000);
      await c.query('a', `INSERT INTO e (id, v) VALUES (399999, 'between')`);
      await eventually('the small transaction reaches b first', async () => (await count('b', 399999, 399999)) === 1, 30_000);
      expect(await count('b', 300001, 305000)).toBe(0);
      await one.query(`UPDATE e SET n = 7 WHERE id BETWEEN 300001 AND 300100`);
      await one.query('COMMIT');
      await eventually('every row on b', async () => (await count('b', 300001, 305000)) === 5000, 60_000);
      expect((await c.query<{ n: number }>('b', 'SELECT count(*)::int AS n FROM e WHERE id BETWEEN 300001 AND 305000 AND n = 7'))[0]?.n).toBe(100);

      // A key B already holds (written on B while A's agent was down): the early INSERT fails, and the
      // spool's apply decides the conflict like any other transaction's (A's later commit wins).
      await c.stopAgent('a');
      await c.query('b', `INSERT INTO e (id, v) VALUES (400500, 'b first')`);
      await one.query('BEGIN');
      await one.query(`INSERT INTO e (id, v) SELECT g, 'a later' FROM generate_series(400001, 405000) g`);
      await one.query('COMMIT');
      await eventually('every row on b', async () => (await count('b', 400001, 405000)) === 5000, 60_000);
      await c.startAgent('a');
      await eventually(
        'a and b agree',
        async () => {
          const [ha, hb] = await Promise.all([c.tableHash('a', 'public', 'e'), c.tableHash('b', 'public', 'e')]);
          return ha.md5 === hb.md5 && ha.rows === hb.rows;
        },
        60_000,
      );
      expect(await c.query('b', `SELECT v FROM e WHERE id = 400500`)).toEqual([{ v: 'a later' }]);
      expect(await c.query('b', `SELECT conflict_type || '/' || resolution AS k FROM pgbidi.conflicts WHERE table_name = 'e' AND key = '["400500"]'`)).toEqual([
        { k: 'insert_exists/apply_remote' },
      ]);
    } finally {
      await one.end();
    }
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
