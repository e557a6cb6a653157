import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { caughtUp, databaseSetting, eventually, sleep, useCluster, versionsAndApplyPaths } from './support/cluster-fixture.js';
import type { LocalCluster } from '../src/testbed/local-cluster.js';
import { main } from '../src/cli.js';
import { tempDir } from './support/temp-dir.js';

const SCHEMA = [
  `CREATE TABLE t (id int PRIMARY KEY, v text)`,
  `CREATE TABLE users (id int PRIMARY KEY, email text UNIQUE)`,
  `CREATE TABLE contacts (id int PRIMARY KEY, email text UNIQUE, phone text UNIQUE)`,
  `CREATE TABLE strict (id int PRIMARY KEY, v text)`,
  `CREATE TABLE counters (id int PRIMARY KEY, n bigint NOT NULL)`,
  `ALTER TABLE counters REPLICA IDENTITY FULL`,
  `CREATE TABLE tallies (id int PRIMARY KEY, n bigint NOT NULL, label text)`,
  `ALTER TABLE tallies REPLICA IDENTITY FULL`,
  `CREATE TABLE marker (id int PRIMARY KEY)`,
  // Loaded on both nodes before the group exists (as from one dump).
  `CREATE TABLE preloaded (id int PRIMARY KEY, v text)`,
  `INSERT INTO preloaded SELECT g, 'loaded' FROM generate_series(1, 3) g`,
  // Names that need quoting everywhere: a space, a quote, a backslash, mixed case, a non-ASCII letter,
  // a keyword. With standard_conforming_strings off (a legacy setting a database may keep), a
  // backslash in a plain string constant starts an escape.
  databaseSetting('standard_conforming_strings', 'off'),
  `CREATE SCHEMA "Sales Dept"`,
  `CREATE TABLE "Sales Dept"."Order ""Lines"" \\ Q4" ("Id" int, "Région" text, "Qty ""x""" int, "select" text, PRIMARY KEY ("Région", "Id"))`,
  `CREATE TABLE "Sales Dept"."Ctr" ("K" int PRIMARY KEY, "N" bigint NOT NULL)`,
  `ALTER TABLE "Sales Dept"."Ctr" REPLICA IDENTITY FULL`,
];

const LINES = `"Sales Dept"."Order ""Lines"" \\ Q4"`;

async function rows(c: LocalCluster, node: string, sql: string): Promise<unknown[]> {
  return c.query(node, sql);
}

async function conflictRows(c: LocalCluster, node: string, table: string): Promise<string[]> {
  const r = await c.query<{ k: string }>(
    node,
    `SELECT conflict_type || '/' || resolution || ' ' || key::text AS k FROM pgbidi.conflicts WHERE table_name = $1 ORDER BY id`,
    [table],
  );
  return r.map((x) => x.k);
}

async function counter(c: LocalCluster, node: string, labels: Record<string, string>): Promise<number> {
  const metric = await c.agents.get(node)?.metrics.registry.getSingleMetric('pgbidi_conflicts_total')?.get();
  return (metric?.values ?? []).filter((v) => Object.entries(labels).every(([k, val]) => v.labels[k] === val)).reduce((s, v) => s + v.value, 0);
}

/** Setup and agents once per cluster, so that every test also runs alone (vitest -t). */
async function ensureGroup(c: LocalCluster): Promise<void> {
  if (c.agents.size > 0) return;
  await c.setupAll();
  await c.startAgent('a');
  await c.startAgent('b');
}

/** Writes on both nodes while no agent runs, so that both versions exist before either is applied. */
async function whileDisconnected(c: LocalCluster, writes: () => Promise<void>): Promise<void> {
  await Promise.all(['a', 'b'].map((n) => c.stopAgent(n)));
  await writes();
  await c.startAgent('a');
  await c.startAgent('b');
}

describe.each(versionsAndApplyPaths())('conflicts on $label through the $path', ({ binDir, apply_procedure_max_changes }) => {
  const cluster = useCluster(() => ({
    binDir,
    nodes: ['a', 'b'],
    schema: SCHEMA,
    replication: { apply_procedure_max_changes, tables: ['public.*', 'Sales Dept.*'] },
    conflicts: {
      tables: [
        { match: ['public.strict'], policy: 'error' },
        { match: ['Sales Dept.Ctr'], policy: 'delta', delta_columns: ['N'] },
        { match: ['public.counters', 'public.tallies'], policy: 'delta', delta_columns: ['n'] },
      ],
    },
  }));

  it('resolves every primary-key conflict type by last-update-wins and records it', async () => {
    const c = cluster.get();
    await ensureGroup(c);
    await c.query('a', `INSERT INTO t VALUES (2, 'two'), (3, 'three'), (4, 'four'), (5, 'five')`);
    await caughtUp(c);

    await whileDisconnected(c, async () => {
      await c.query('a', `INSERT INTO t VALUES (1, 'a1')`); // insert_exists: b's insert is newer
      await c.query('a', `UPDATE t SET v = 'a2' WHERE id = 2`); // update_origin_differs: b's update is newer
      await c.query('b', `DELETE FROM t WHERE id = 3`); // then a updates 3: the update is newer than the delete
      await c.query('a', `UPDATE t SET v = 'a3' WHERE id = 3`);
      await c.query('a', `UPDATE t SET v = 'a4' WHERE id = 4`); // then b deletes 4: the delete is newer
      await c.query('b', `DELETE FROM t WHERE id = 4`);
      await c.query('a', `DELETE FROM t WHERE id = 5`); // both delete 5: delete_missing
      await c.query('b', `DELETE FROM t WHERE id = 5`);
      await sleep(5);
      await c.query('b', `INSERT INTO t VALUES (1, 'b1')`);
      await c.query('b', `UPDATE t SET v = 'b2' WHERE id = 2`);
    });
    await caughtUp(c);

    const expected = [
      { id: 1, v: 'b1' },
      { id: 2, v: 'b2' },
      { id: 3, v: 'a3' },
    ];
    expect(await rows(c, 'a', 'SELECT * FROM t ORDER BY id')).toEqual(expected);
    expect(await rows(c, 'b', 'SELECT * FROM t ORDER BY id')).toEqual(expected);

    expect(await conflictRows(c, 'a', 't')).toEqual(
      expect.arrayContaining([
        'insert_exists/apply_remote ["1"]',
        'delete_origin_differs/keep_local ["3"]',
        'delete_missing/skip ["5"]',
        // a's own newer rows overwritten by b's newer change: logged like PostgreSQL 18 does.
        'update_origin_differs/apply_remote ["2"]',
        'delete_origin_differs/apply_remote ["4"]',
      ]),
    );
    expect(await conflictRows(c, 'b', 't')).toEqual(
      expect.arrayContaining([
        'insert_exists/keep_local ["1"]',
        'update_origin_differs/keep_local ["2"]',
        'update_missing/apply_remote ["3"]',
        'update_deleted/skip ["4"]',
        'delete_missing/skip ["5"]',
      ]),
    );
    expect(await counter(c, 'b', { table: 'public.t', type: 'update_deleted', resolution: 'skip' })).toBe(1);
    // The path under test did the work: the apply procedure exists in the apply sessions' pg_temp only then.
    const [procedures] = await c.query<{ n: number }>('b', `SELECT count(*)::int AS n FROM pg_proc WHERE proname = 'pgbidi_apply'`);
    expect(procedures?.n).toBe(apply_procedure_max_changes > 0 ? 1 : 0);
    // The log keeps both rows of a conflict, with the remote version.
    const [logged] = await c.query<{ local: unknown; remote: unknown; node: string; lsn: string | null }>(
      'b',
      `SELECT local_tuple AS local, remote_tuple AS remote, remote_node AS node, remote_commit_lsn::text AS lsn
         FROM pgbidi.conflicts WHERE table_name = 't' AND conflict_type = 'insert_exists'`,
    );
    expect(logged).toMatchObject({ local: { id: 1, v: 'b1' }, remote: { id: '1', v: 'a1' }, node: 'a' });
    expect(logged?.lsn).toMatch(/^[0-9A-F]+\/[0-9A-F]+$/);
    expect(await counter(c, 'a', { table: 'public.t', type: 'insert_exists', resolution: 'apply_remote' })).toBe(1);
    const [overwrote] = await c.query<{ local: unknown; remote: unknown }>(
      'a',
      `SELECT local_tuple AS local, remote_tuple AS remote FROM pgbidi.conflicts WHERE table_name = 't' AND conflict_type = 'update_origin_differs'`,
    );
    expect(overwrote).toEqual({ local: { id: 2, v: 'a2' }, remote: { id: '2', v: 'b2' } });
    // The resurrected row 3 has a tombstone history; row 4 stays deleted on both nodes.
    const [tomb] = await c.query<{ n: number }>('b', `SELECT count(*)::int AS n FROM pgbidi.tombstones WHERE table_name = 'public.t' AND key = '[4]'`);
    expect(tomb?.n).toBe(1);
  });

  it('does not count a remote change to a row from before the group as a conflict, and still orders it by version', async () => {
    const c = cluster.get();
    await ensureGroup(c);
    await c.query('a', `UPDATE preloaded SET v = 'a1' WHERE id = 1`);
    await c.query('b', `DELETE FROM preloaded WHERE id = 2`);
    await caughtUp(c);
    // Last-update-wins still decides: a newer write made during the group beats an older one.
    await whileDisconnected(c, async () => {
      await c.query('b', `UPDATE preloaded SET v = 'b3' WHERE id = 3`);
      await c.query('a', `UPDATE preloaded SET v = 'a3' WHERE id = 3`);
    });
    await caughtUp(c);
    const expected = [
      { id: 1, v: 'a1' },
      { id: 3, v: 'a3' },
    ];
    expect(await rows(c, 'a', 'SELECT * FROM preloaded ORDER BY id')).toEqual(expected);
    expect(await rows(c, 'b', 'SELECT * FROM preloaded ORDER BY id')).toEqual(expected);
    // Rows 1 and 2 were last written by the load on each node: not conflicts. Row 3 was written on
    // both nodes during the group: b's older update lost to a's (b logs an update_origin_differs it
    // applied, a one it kept out).
    expect(await conflictRows(c, 'b', 'preloaded')).toEqual(['update_origin_differs/apply_remote ["3"]']);
    expect(await conflictRows(c, 'a', 'preloaded')).toEqual(['update_origin_differs/keep_local ["3"]']);
  });

  it('adds up counters incremented on both nodes at once (delta policy)', async () => {
    const c = cluster.get();
    await ensureGroup(c);
    await c.query('a', 'INSERT INTO counters VALUES (1, 100)');
    await caughtUp(c);
    await whileDisconnected(c, async () => {
      await c.query('a', 'UPDATE counters SET n = n + 5 WHERE id = 1');
      await c.query('b', 'UPDATE counters SET n = n + 7 WHERE id = 1');
      await c.query('a', 'UPDATE counters SET n = n + 1 WHERE id = 1');
    });
    await caughtUp(c);
    expect(await rows(c, 'a', 'SELECT n::int FROM counters')).toEqual([{ n: 113 }]);
    expect(await rows(c, 'b', 'SELECT n::int FROM counters')).toEqual([{ n: 113 }]);
  });

  it('keeps the newer version of the other columns of a delta row across several merges', async () => {
    const c = cluster.get();
    await ensureGroup(c);
    await c.query('a', `INSERT INTO tallies VALUES (1, 0, 'start')`);
    await caughtUp(c);
    // b writes twice, then a once: a's label is the newest. When a merges b's first change, its own
    // label stays; b's second change is still older than a's label and must not replace it.
    await whileDisconnected(c, async () => {
      await c.query('b', `UPDATE tallies SET n = n + 1, label = 'b1' WHERE id = 1`);
      await c.query('b', `UPDATE tallies SET n = n + 1, label = 'b2' WHERE id = 1`);
      await sleep(5);
      await c.query('a', `UPDATE tallies SET n = n + 10, label = 'a' WHERE id = 1`);
    });
    await caughtUp(c);
    expect(await rows(c, 'a', 'SELECT n::int, label FROM tallies')).toEqual([{ n: 12, label: 'a' }]);
    expect(await rows(c, 'b', 'SELECT n::int, label FROM tallies')).toEqual([{ n: 12, label: 'a' }]);
    // A later write from b is newer than everything and replaces the label everywhere.
    await c.query('b', `UPDATE tallies SET label = 'b3' WHERE id = 1`);
    await caughtUp(c);
    expect(await rows(c, 'a', 'SELECT n::int, label FROM tallies')).toEqual([{ n: 12, label: 'b3' }]);
  });

  it('puts a change that violates a secondary unique key into the dead letters and keeps going; retry applies it', async () => {
    const c = cluster.get();
    await ensureGroup(c);
    await whileDisconnected(c, async () => {
      await c.query('a', `INSERT INTO users VALUES (10, 'x@example.com')`);
      await c.query('b', `INSERT INTO users VALUES (11, 'x@example.com')`);
    });
    await caughtUp(c); // later changes flow although both inserts conflict
    const [dl] = await c.query<{ id: string; conflict_type: string; constraint_name: string; status: string }>(
      'a',
      `SELECT id::text, conflict_type, constraint_name, status FROM pgbidi.dead_letters WHERE table_name = 'users'`,
    );
    expect(dl).toMatchObject({ conflict_type: 'insert_exists', constraint_name: 'users_email_key', status: 'pending' });
    expect(await counter(c, 'a', { table: 'public.users', resolution: 'dead_letter' })).toBe(1);

    // The operator frees the address on a (this replicates to b), then retries a's dead letter.
    await c.query('a', `UPDATE users SET email = 'other@example.com' WHERE id = 10`);
    await caughtUp(c);
    const agentA = c.agents.get('a');
    const out: string[] = [];
    const configFile = writeConfig(c, 'a', agentA?.httpAddress ?? '');
    const code = await main(['dead-letters', '--config', configFile, '--retry', dl?.id ?? '0'], { out: (s) => out.push(s), err: (s) => out.push(s) });
    expect(out.join('')).toContain('"outcome":"applied"');
    expect(code).toBe(0);
    expect(await rows(c, 'a', 'SELECT id, email FROM users ORDER BY id')).toEqual([
      { id: 10, email: 'other@example.com' },
      { id: 11, email: 'x@example.com' },
    ]);
  });

  it('tells a row that collides with two unique keys (multiple_unique_conflicts) from one that collides with one', async () => {
    const c = cluster.get();
    await ensureGroup(c);
    await whileDisconnected(c, async () => {
      await c.query('a', `INSERT INTO contacts VALUES (1, 'm@example.com', '555-1'), (3, 'solo@example.com', '555-3')`);
      await c.query('b', `INSERT INTO contacts VALUES (2, 'm@example.com', '555-1'), (4, 'solo@example.com', '555-4')`);
    });
    await caughtUp(c);
    for (const node of ['a', 'b']) {
      const types = await c.query<{ conflict_type: string }>(
        node,
        `SELECT conflict_type FROM pgbidi.dead_letters WHERE table_name = 'contacts' ORDER BY (change->'new'->>0)::int`,
      );
      expect(types.map((t) => t.conflict_type)).toEqual(['multiple_unique_conflicts', 'insert_exists']);
    }
    expect(await counter(c, 'a', { table: 'public.contacts', type: 'multiple_unique_conflicts', resolution: 'dead_letter' })).toBe(1);

    // An update that moves a row onto another row's unique value: update_exists.
    await c.query('a', `INSERT INTO contacts VALUES (5, 'five@example.com', '555-5')`);
    await caughtUp(c);
    await whileDisconnected(c, async () => {
      await c.query('a', `UPDATE contacts SET email = 'up@example.com' WHERE id = 5`);
      await c.query('b', `INSERT INTO contacts VALUES (6, 'up@example.com', '555-6')`);
    });
    await caughtUp(c);
    const onB = await c.query<{ conflict_type: string; op: string }>(
      'b',
      `SELECT conflict_type, op FROM pgbidi.dead_letters WHERE table_name = 'contacts' AND (change->'new'->>0)::int = 5`,
    );
    expect(onB).toEqual([{ conflict_type: 'update_exists', op: 'update' }]);
    expect(await counter(c, 'b', { table: 'public.contacts', type: 'update_exists', resolution: 'dead_letter' })).toBe(1);
  });

  it('resolves conflicts alike on tables and columns whose names need quoting', async () => {
    const c = cluster.get();
    await ensureGroup(c);
    await c.query('a', `INSERT INTO ${LINES} VALUES (1, 'eu', 5, 'x'), (2, 'us', 6, 'y'), (3, 'eu', 7, 'z')`);
    await c.query('a', `INSERT INTO "Sales Dept"."Ctr" VALUES (1, 10)`);
    await caughtUp(c);
    await whileDisconnected(c, async () => {
      await c.query('a', `UPDATE ${LINES} SET "Qty ""x""" = 50 WHERE "Id" = 1`);
      await c.query('b', `DELETE FROM ${LINES} WHERE "Id" = 2`);
      await c.query('a', `UPDATE ${LINES} SET "Id" = 30 WHERE "Id" = 3`);
      await c.query('a', `UPDATE "Sales Dept"."Ctr" SET "N" = "N" + 1`);
      await c.query('b', `UPDATE "Sales Dept"."Ctr" SET "N" = "N" + 2`);
      await sleep(5);
      await c.query('b', `UPDATE ${LINES} SET "select" = 'b' WHERE "Id" = 1`);
      await c.query('b', `INSERT INTO ${LINES} VALUES (9, 'eu', 1, 'b')`);
      await c.query('a', `INSERT INTO ${LINES} VALUES (9, 'eu', 1, 'a')`);
    });
    await caughtUp(c);
    // Row 1: b's later update wins the whole row; row 2: b's delete is newer than a's insert.
    const expected = [
      { Id: 1, Région: 'eu', 'Qty "x"': 5, select: 'b' },
      { Id: 9, Région: 'eu', 'Qty "x"': 1, select: 'a' },
      { Id: 30, Région: 'eu', 'Qty "x"': 7, select: 'z' },
    ];
    for (const node of ['a', 'b']) {
      expect(await rows(c, node, `SELECT * FROM ${LINES} ORDER BY "Id"`)).toEqual(expected);
      expect(await rows(c, node, `SELECT * FROM "Sales Dept"."Ctr"`)).toEqual([{ K: 1, N: '13' }]);
    }
    expect(await conflictRows(c, 'a', 'Order "Lines" \\ Q4')).toEqual(
      expect.arrayContaining([
        'delete_origin_differs/apply_remote ["us", "2"]',
        'update_origin_differs/apply_remote ["eu", "1"]',
        'insert_exists/keep_local ["eu", "9"]',
      ]),
    );
    expect(await conflictRows(c, 'b', 'Order "Lines" \\ Q4')).toEqual(
      expect.arrayContaining(['update_origin_differs/keep_local ["eu", "1"]', 'insert_exists/apply_remote ["eu", "9"]']),
    );
  });

  it('halts the link under the error policy until an operator skips the transaction', async () => {
    const c = cluster.get();
    await ensureGroup(c);
    await c.query('a', `INSERT INTO strict VALUES (1, 'base')`);
    await caughtUp(c);
    await whileDisconnected(c, async () => {
      await c.query('a', `UPDATE strict SET v = 'from a' WHERE id = 1`);
      await c.query('b', `UPDATE strict SET v = 'from b' WHERE id = 1`);
    });
    await eventually('a link halted', () => ['a', 'b'].some((n) => c.agents.get(n)?.status()[0]?.state === 'error'));
    // Both nodes see the other's update as a conflict; while halted, nothing else is applied.
    await eventually('both links halted', () => ['a', 'b'].every((n) => c.agents.get(n)?.status()[0]?.state === 'error'));
    await c.query('a', 'INSERT INTO marker VALUES (-1)');
    await sleep(1500);
    expect(await rows(c, 'b', 'SELECT id FROM marker WHERE id = -1')).toEqual([]);
    for (const node of ['a', 'b']) {
      const status = c.agents.get(node)?.status()[0];
      expect(status?.haltedAt?.conflict).toContain('update_origin_differs');
      const configFile = writeConfig(c, node, c.agents.get(node)?.httpAddress ?? '');
      const sink = { out: () => undefined, err: () => undefined };
      expect(await main(['resolve', '--config', configFile, '--peer', node === 'a' ? 'b' : 'a', '--skip'], sink)).toBe(0);
    }
    await eventually('links streaming again', () => ['a', 'b'].every((n) => c.agents.get(n)?.status()[0]?.state === 'streaming'));
    await caughtUp(c);
    expect(await rows(c, 'b', 'SELECT id FROM marker WHERE id = -1')).toEqual([{ id: -1 }]);
    // Skipping is the operator's decision: each node kept its own version.
    expect(await rows(c, 'a', 'SELECT v FROM strict')).toEqual([{ v: 'from a' }]);
    expect(await rows(c, 'b', 'SELECT v FROM strict')).toEqual([{ v: 'from b' }]);
  });
});

function writeConfig(c: LocalCluster, node: string, httpAddress: string): string {
  const dir = tempDir('pgbidi-cli-');
  const file = join(dir, `${node}.yaml`);
  writeFileSync(file, stringify(c.rawConfig(node, httpAddress)));
  return file;
}
