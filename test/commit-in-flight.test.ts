import { describe, expect, it } from 'vitest';
import pg from 'pg';
import { availableServerVersions } from './support/pg-versions.js';
import { eventually, useCluster } from './support/cluster-fixture.js';
import type { LocalCluster } from '../src/testbed/local-cluster.js';

/**
 * A local transaction gets its commit timestamp before it becomes visible (xact.c records the
 * commit timestamp, flushes WAL, waits for synchronous replication, and only then leaves the proc
 * array). An apply statement that runs in that window decides on a snapshot that still shows the old
 * row, although the local change is older than the remote one. A synchronous standby that never
 * answers holds a local commit in that window for as long as the test needs.
 */
const SCHEMA = [
  `CREATE TABLE t (id int PRIMARY KEY, v text)`,
  `CREATE TABLE c (id int PRIMARY KEY, n bigint NOT NULL)`,
  `ALTER TABLE c REPLICA IDENTITY FULL`,
  `CREATE TABLE d (id int PRIMARY KEY, u int)`,
];

/**
 * A deferred constraint trigger that fires in apply sessions too (ENABLE ALWAYS) and fails the COMMIT
 * while ops.block says so: the apply statement succeeds and its COMMIT fails.
 */
const COMMIT_BLOCKER = [
  `CREATE SCHEMA ops`,
  `CREATE TABLE ops.block (blocked boolean NOT NULL)`,
  `INSERT INTO ops.block VALUES (true)`,
  `CREATE FUNCTION ops.reject_while_blocked() RETURNS trigger LANGUAGE plpgsql AS $$
     BEGIN
       IF (SELECT blocked FROM ops.block) THEN RAISE EXCEPTION 'd is blocked' USING ERRCODE = 'P0001'; END IF;
       RETURN NULL;
     END $$`,
  `CREATE CONSTRAINT TRIGGER d_blocker AFTER INSERT ON public.d DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ops.reject_while_blocked()`,
  `ALTER TABLE public.d ENABLE ALWAYS TRIGGER d_blocker`,
];

async function holdCommits(c: LocalCluster, node: string, on: boolean): Promise<void> {
  await c.query(node, on ? `ALTER SYSTEM SET synchronous_standby_names = 'nobody'` : `ALTER SYSTEM RESET synchronous_standby_names`);
  await c.query(node, 'SELECT pg_reload_conf()');
}

/** Starts `sql` in its own session with synchronous commit; its COMMIT hangs until holdCommits(false). */
async function commitHeld(c: LocalCluster, node: string, sql: string): Promise<{ done: Promise<unknown>; client: pg.Client }> {
  const client = new pg.Client({ connectionString: c.dsn(node), application_name: 'held_writer' });
  await client.connect();
  try {
    await client.query('SET synchronous_commit = on');
    // pg_reload_conf() only signals: a session reads the new file between commands, and one that took
    // BEGIN; …; COMMIT in one message before it did committed without waiting (seen under load).
    await eventually('the held writer sees the standby it waits for', async () => {
      const r = await client.query<{ s: string }>(`SELECT current_setting('synchronous_standby_names') AS s`);
      return r.rows[0]?.s === 'nobody';
    });
    const done = client.query(`BEGIN; ${sql}; COMMIT`);
    let ended: string | undefined;
    done.then(
      () => (ended = 'committed'),
      (e: unknown) => (ended = String(e)),
    );
    await eventually('the local commit waits for the standby', async () => {
      if (ended !== undefined) throw new Error(`the held writer ended without waiting: ${ended}`);
      const r = await c.query<{ n: number }>(
        node,
        `SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'held_writer' AND wait_event = 'SyncRep'`,
      );
      return r[0]?.n === 1;
    });
    return { done, client };
  } catch (e) {
    await client.end().catch(() => undefined);
    throw e;
  }
}

async function applyBlocked(c: LocalCluster, node: string): Promise<void> {
  await eventually('the apply session waits for the held row', async () => {
    const r = await c.query<{ n: number }>(
      node,
      `SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name LIKE 'pgbidi%' AND wait_event_type = 'Lock'`,
    );
    return (r[0]?.n ?? 0) >= 1;
  });
}

async function same(c: LocalCluster, sql: string): Promise<[unknown[], unknown[]]> {
  return [await c.query('a', sql), await c.query('b', sql)];
}

/**
 * The race: `seed` is written on a and replicated; then b's `local` change gets its commit timestamp
 * and is held before it becomes visible, a writes `remote` (newer), b's apply of it waits for the held
 * row, and only then b's change becomes visible. a's agent is off meanwhile, so that a does not apply
 * b's change before its own exists.
 */
async function raceHeldCommit(c: LocalCluster, seed: { sql: string; check: string }, local: string, remote: string): Promise<void> {
  await c.query('a', seed.sql);
  await eventually('the seed row on b', async () => (await c.query('b', seed.check)).length === 1);
  await c.stopAgent('a');
  await holdCommits(c, 'b', true);
  let held: Awaited<ReturnType<typeof commitHeld>> | undefined;
  try {
    held = await commitHeld(c, 'b', local);
    await c.query('a', remote);
    await applyBlocked(c, 'b');
  } finally {
    // Also when the race could not be set up: b's commits must not stay held for the next test.
    await holdCommits(c, 'b', false);
    await held?.done;
    await held?.client.end();
  }
  await c.startAgent('a');
}

describe.each(availableServerVersions())('apply against a local commit in flight on $label', ({ binDir }) => {
  const cluster = useCluster(() => ({
    binDir,
    nodes: ['a', 'b'],
    schema: SCHEMA,
    conflicts: { tables: [{ match: ['public.c'], policy: 'delta', delta_columns: ['n'] }] },
  }));

  async function ready(c: LocalCluster): Promise<void> {
    if (c.agents.size === 0) await c.setupAll();
    for (const n of ['a', 'b']) if (!c.agents.has(n)) await c.startAgent(n);
  }

  it('re-creates a row whose older local delete became visible only after the remote update began', async () => {
    const c = cluster.get();
    await ready(c);
    await raceHeldCommit(
      c,
      { sql: `INSERT INTO t VALUES (1, 'first')`, check: 'SELECT 1 FROM t WHERE id = 1' },
      'DELETE FROM t WHERE id = 1',
      `UPDATE t SET v = 'newer' WHERE id = 1`, // newer than b's delete
    );
    await eventually('both nodes hold the newer update', async () => {
      const [x, y] = await same(c, 'SELECT v FROM t WHERE id = 1');
      return JSON.stringify(x) === JSON.stringify([{ v: 'newer' }]) && JSON.stringify(y) === JSON.stringify(x);
    });
    // What b did, on the state it found after the wait: the row was gone, so it was re-created.
    const logged = await c.query<{ k: string }>(
      'b',
      `SELECT conflict_type || '/' || resolution AS k FROM pgbidi.conflicts WHERE table_name = 't' AND key = '["1"]'`,
    );
    expect(logged.map((r) => r.k)).toEqual(['update_missing/apply_remote']);
  });

  it('deletes a row whose older local update became visible only after the remote delete began', async () => {
    const c = cluster.get();
    await ready(c);
    await raceHeldCommit(
      c,
      { sql: `INSERT INTO t VALUES (2, 'first')`, check: 'SELECT 1 FROM t WHERE id = 2' },
      `UPDATE t SET v = 'older' WHERE id = 2`,
      'DELETE FROM t WHERE id = 2',
    );
    await eventually('row 2 gone on both nodes', async () => {
      const [x, y] = await same(c, 'SELECT v FROM t WHERE id = 2');
      return x.length === 0 && y.length === 0;
    });
  });

  it('adds a remote increment to a counter whose older local delete was in flight', async () => {
    const c = cluster.get();
    await ready(c);
    await raceHeldCommit(
      c,
      { sql: 'INSERT INTO c VALUES (1, 10)', check: 'SELECT 1 FROM c WHERE id = 1' },
      'DELETE FROM c WHERE id = 1',
      'UPDATE c SET n = n + 5 WHERE id = 1',
    );
    await eventually('the counter converges', async () => {
      const [x, y] = await same(c, 'SELECT n::int FROM c WHERE id = 1');
      return JSON.stringify(x) === JSON.stringify([{ n: 15 }]) && JSON.stringify(y) === JSON.stringify(x);
    });
    expect((await c.query('b', 'SELECT n::int FROM c')).length).toBe(1);
  });

  // The COMMIT of b's first transaction fails on a deferred trigger. Behind it b's next transaction
  // is already sent. Neither may stay committed, and the failed one must not count as applied:
  // PostgreSQL 18 advances the origin when a transaction aborts after its origin setup.
  it('never commits a transaction behind one whose COMMIT failed; both apply once the cause is gone', async () => {
    const c = cluster.get();
    await ready(c);
    await c.stopAgent('a');
    for (const sql of COMMIT_BLOCKER) await c.query('a', sql);
    await c.query('b', 'INSERT INTO d VALUES (1, 5)'); // on a, its COMMIT fails
    await c.query('b', `INSERT INTO t VALUES (100, 'behind')`); // b's next transaction
    await c.startAgent('a');
    await eventually('the link from b reports the failed COMMIT', () => {
      const s = c.agents
        .get('a')
        ?.status()
        .find((l) => l.peer === 'b');
      return s?.lastError?.code === 'P0001';
    });
    // That COMMIT went out with b's next transaction already sent behind it: neither is here.
    expect(await c.query('a', 'SELECT id FROM d')).toEqual([]);
    expect(await c.query('a', 'SELECT id FROM t WHERE id = 100')).toEqual([]);
    await c.query('a', 'UPDATE ops.block SET blocked = false');
    await eventually('both transactions applied', async () => (await c.query('a', 'SELECT id FROM t WHERE id = 100')).length === 1);
    expect(await c.query('a', 'SELECT id, u FROM d')).toEqual([{ id: 1, u: 5 }]);
  });
});
