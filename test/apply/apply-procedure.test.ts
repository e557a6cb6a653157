import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { applyProcedureSql, decodeEvent } from '../../src/apply/apply-procedure-sql.js';
import type { StepKind, StepShape } from '../../src/apply/apply-procedure-sql.js';
import { loadLocalTable } from '../../src/apply/local-catalog.js';
import { mapRelation } from '../../src/apply/table-mapping.js';
import type { TableMapping } from '../../src/apply/table-mapping.js';
import { applyRules } from '../../src/conflict/table-policies.js';
import { POLICIES } from '../../src/conflict/policy.js';
import { metadataSchemaSql, tombstoneTriggerSql } from '../../src/node/metadata-schema.js';
import { TOMBSTONE_WRITE_LOCK, TOMBSTONE_WRITES_SEQUENCE } from '../../src/node/names.js';
import { availableServerVersions } from '../support/pg-versions.js';
import { useServer } from '../support/server-fixture.js';

/**
 * The generated procedure compiles (PL/pgSQL checks its body at CREATE) and runs for every shape
 * kind, every policy and both server generations, on a table whose names collide with everything
 * the procedure uses itself: its variables, aliases, the RETURNING old row, a reserved word, and
 * more columns than one jsonb_build_object call takes.
 */
const AWKWARD = ['t', 'c', 'tb', 'r', 'w', 'x', 'p', 'k', 'old', 'select', 'pgbidi_v', 'pgbidi_apply', 'ts', 'vals', 'O"dd'];
const FILLERS = Array.from({ length: 50 }, (_, i) => `f${i}`);

/**
 * Creates the origin `pgbidi_<peer>`, defines the procedure in `c`'s session and makes it the
 * session's origin, as an apply session does; returns the origin's roident.
 */
async function applySession(
  c: pg.Client,
  shapes: readonly StepShape[],
  peer: string,
  versionNum: number,
  tombstoneWrites = true,
  epoch = '2000-01-01 00:00:00+00',
): Promise<number> {
  const [origin] = (await c.query<{ ro: number }>(`SELECT pg_replication_origin_create($1)::int AS ro`, [`pgbidi_${peer}`])).rows;
  const peerOrigin = origin?.ro ?? 0;
  await c.query(applyProcedureSql(shapes, { returningOld: versionNum >= 180_000, peerOrigin, epoch, tombstoneWrites }));
  await c.query(`SELECT pg_replication_origin_session_setup($1)`, [`pgbidi_${peer}`]);
  return peerOrigin;
}

/** Last-update-wins shapes of whole rows of `m`, with ids 1, 2, … in the order of `kinds`. */
function lwwShapes(m: TableMapping, kinds: readonly StepKind[]): StepShape[] {
  const rules = applyRules({ policy: 'last_update_wins', deltaColumns: [], unique: 'dead_letter' });
  const table = `${m.local.schema}.${m.local.name}`;
  return kinds.map((kind, i) => ({ mapping: m, table, rules, losing: 'keep_local', carried: m.columns, sent: m.columns, complete: true, id: i + 1, kind }));
}

/** Runs `sql` in one transaction of `c` as replication origin `origin` (created here), committed at `at`. */
async function writeAsOrigin(c: pg.Client, origin: string, sql: string, at: string): Promise<void> {
  await c.query(`SELECT pg_replication_origin_create($1)`, [origin]);
  await c.query(`SELECT pg_replication_origin_session_setup($1)`, [origin]);
  await c.query('BEGIN');
  await c.query(sql);
  await c.query(`SELECT pg_replication_origin_xact_setup('0/1', $1)`, [at]);
  await c.query('COMMIT');
}

/** Creates public.`name` (id int PRIMARY KEY, v text) and maps it as the peer sends it. */
async function idValueTable(c: pg.Client, name: string, relationId: number): Promise<TableMapping> {
  await c.query(`CREATE TABLE public.${name} (id int PRIMARY KEY, v text)`);
  const local = await loadLocalTable(c, 'public', name);
  const columns = [
    { name: 'id', isKey: true, typeOid: 23, typeMod: -1 },
    { name: 'v', isKey: false, typeOid: 25, typeMod: -1 },
  ];
  return mapRelation({ tag: 'relation', relationId, namespace: 'public', name, replicaIdentity: 'default', columns }, local);
}

describe.each(availableServerVersions())('apply procedure SQL on $label', ({ binDir }) => {
  let mapping: TableMapping;
  const db = useServer(
    () => ({ binDir, name: 'procedure-sql' }),
    async ({ client }) => {
      for (const q of metadataSchemaSql('b')) await client.query(q);
      const columns = [...AWKWARD, ...FILLERS].map((n) => `"${n.replace(/"/g, '""')}" text`);
      await client.query(`CREATE TABLE "we""ird"."ta ble" (id int PRIMARY KEY, n int GENERATED ALWAYS AS IDENTITY, ${columns.join(', ')})`).catch(async () => {
        await client.query(`CREATE SCHEMA "we""ird"`);
        await client.query(`CREATE TABLE "we""ird"."ta ble" (id int PRIMARY KEY, n int GENERATED ALWAYS AS IDENTITY, ${columns.join(', ')})`);
      });
      const local = await loadLocalTable(client, 'we"ird', 'ta ble');
      // The peer's types are the local ones (int4 = 23, text = 25): a column of another type is a schema mismatch.
      const remote = ['id', 'n', ...AWKWARD, ...FILLERS].map((name) => ({
        name,
        isKey: name === 'id',
        typeOid: name === 'id' || name === 'n' ? 23 : 25,
        typeMod: -1,
      }));
      mapping = mapRelation({ tag: 'relation', relationId: 1, namespace: 'we"ird', name: 'ta ble', replicaIdentity: 'default', columns: remote }, local);
    },
  );

  /** A row of the awkward table: its id, n = 7 and `v` in the column named old; the others null. */
  const awkwardRow = (id: number, v: string): (string | null)[] =>
    mapping.columns.map((c) => (c.name === 'id' ? String(id) : c.name === 'n' ? '7' : c.name === 'old' ? v : null));

  it('compiles for every shape, policy and generation', async () => {
    const some = mapping.columns.filter((c) => c.name !== 'vals'); // an update whose 'vals' was unchanged TOAST
    let id = 0;
    const shapes: StepShape[] = [];
    for (const policy of POLICIES.filter((p) => p !== 'delta' && p !== 'error')) {
      const rules = applyRules({ policy, deltaColumns: [], unique: 'dead_letter' });
      const losing = policy === 'skip' ? 'skip' : 'keep_local';
      const base = { mapping, table: 'we"ird.ta ble', rules, losing } as const;
      shapes.push({ ...base, id: ++id, kind: 'insert', carried: mapping.columns, sent: mapping.columns, complete: true });
      shapes.push({ ...base, id: ++id, kind: 'delete', carried: mapping.columns, sent: mapping.columns, complete: true });
      shapes.push({ ...base, id: ++id, kind: 'update', carried: mapping.columns, sent: mapping.columns, complete: true });
      shapes.push({ ...base, id: ++id, kind: 'update', carried: some, sent: some, complete: false });
    }
    for (const [returningOld, tombstoneWrites] of [
      [false, false],
      [false, true],
      [true, true],
    ] as const) {
      if (returningOld && db.server.versionNum < 180_000) continue;
      await db.client.query('SET check_function_bodies = on');
      const sql = applyProcedureSql(shapes, { returningOld, peerOrigin: 1, epoch: '2000-01-01 00:00:00+00', tombstoneWrites });
      // A node set up before the mark has neither its sequence nor its lock: nothing may name them.
      if (!tombstoneWrites) expect([sql.includes(TOMBSTONE_WRITES_SEQUENCE), sql.includes(TOMBSTONE_WRITE_LOCK)]).toEqual([false, false]);
      await db.client.query(sql);
      const r = await db.client.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM pg_proc WHERE proname = 'pgbidi_apply' AND pronamespace = pg_my_temp_schema()`,
      );
      expect(r.rows[0]?.n).toBe(1);
    }
  });

  it('runs each kind of step: insert, update, a missing row, delete', async () => {
    await applySession(db.client, lwwShapes(mapping, ['insert', 'update', 'delete']), 'a', db.server.versionNum);
    await db.client.query(`INSERT INTO pgbidi.node (name) VALUES ('b')`);
    const vals = [...awkwardRow(1, 'one'), ...awkwardRow(1, 'uno'), ...awkwardRow(2, 'two'), ...awkwardRow(1, 'x')];
    const lsns = ['0/10', '0/20', '0/30', '0/40'];
    // Each remote transaction newer than the one before (the peer's commit order).
    const times = [4, 3, 2, 1].map((s) => new Date(Date.now() - s * 1000).toISOString());
    const r = await db.client.query<{ done: number; events: number[]; stop_step: number }>(
      `CALL pg_temp.pgbidi_apply('0/0', 'a', $1::pg_lsn[], $1::pg_lsn[], $2::timestamptz[], '{1,1,1,1}', '{1,2,2,3}', $3::text[], NULL, NULL, NULL, NULL)`,
      [lsns, times, vals],
    );
    expect(r.rows[0]).toMatchObject({ done: 4, stop_step: 0 });
    // Step 3 updated a row that is not there: re-created, and logged as update_missing.
    const logged = await db.client.query<{ t: string; k: unknown }>(
      `SELECT conflict_type || '/' || resolution AS t, key AS k FROM pgbidi.conflicts ORDER BY id`,
    );
    expect(logged.rows).toEqual([{ t: 'update_missing/apply_remote', k: ['2'] }]);
    const rows = await db.client.query(`SELECT id, n, "old" FROM "we""ird"."ta ble" ORDER BY id`);
    expect(rows.rows).toEqual([{ id: 2, n: 7, old: 'two' }]);
    const tomb = await db.client.query(`SELECT key FROM pgbidi.tombstones`);
    expect(tomb.rows).toEqual([{ key: [1] }]);
    const progress = await db.client.query<{ lsn: string }>(`SELECT pg_replication_origin_session_progress(false)::text AS lsn`);
    expect(progress.rows[0]?.lsn).toBe('0/40');
  });

  it.each([
    { mark: true, name: 'race', peer: 'r' },
    { mark: false, name: 'race_unmarked', peer: 'u' },
  ])(
    'undoes an insert whose key a newer delete removed: one that committed while the insert waited, and one from before (tombstone-write mark: $mark)',
    async ({ mark, name, peer }) => {
      const race = await idValueTable(db.client, name, 2);
      for (const q of tombstoneTriggerSql(`public.${name}`, ['id'])) await db.client.query(q);
      const shapes = lwwShapes(race, ['insert', 'delete']);
      const writer = new pg.Client({ connectionString: db.server.connectionString() });
      const applier = new pg.Client({ connectionString: db.server.connectionString() });
      await Promise.all([writer.connect(), applier.connect()]);
      try {
        const ro = await applySession(applier, shapes, peer, db.server.versionNum, mark);
        await applier.query(`SET session_replication_role = replica`); // as apply sessions do: no tombstone trigger
        const ago = (s: number): string => new Date(Date.now() - s * 1000).toISOString();
        const stepsOf = (ids: number[]): string => `{${ids.join(',')}}`;
        const run = (expected: string, lsns: string[], times: string[], shapeIds: number[], vals: (string | null)[]): Promise<pg.QueryResult> =>
          applier.query(
            `CALL pg_temp.pgbidi_apply($1, '${peer}', $2::pg_lsn[], $2::pg_lsn[], $3::timestamptz[], $4::int[], $5::int[], $6::text[], NULL, NULL, NULL, NULL)`,
            [expected, lsns, times, stepsOf(shapeIds.map(() => 1)), stepsOf(shapeIds), vals],
          );
        const version = (id: number): Promise<pg.QueryResult> =>
          applier.query(
            `SELECT c.timestamp AS ts, c.roident::int AS ro FROM public.${name} AS t, pg_xact_commit_timestamp_origin(t.xmin) AS c WHERE t.id = $1`,
            [id],
          );
        const logged = async (): Promise<string[]> =>
          (
            await applier.query<{ t: string }>(
              `SELECT conflict_type || '/' || resolution || ' ' || key::text AS t FROM pgbidi.conflicts WHERE peer = '${peer}' ORDER BY id`,
            )
          ).rows.map((r) => r.t);

        // No tombstone when the CALL begins: the inserts are checked at the end of their transactions.
        // The procedure's own delete leaves an older tombstone: the insert after it stays, with its
        // own commit time and origin (the origin set up after the check).
        const t1 = [ago(9), ago(8), ago(7)];
        expect((await run('0/0', ['0/10', '0/20', '0/30'], t1, [1, 2, 1], ['30', 'a', '30', 'a', '30', 'b'])).rows[0]).toMatchObject({ done: 3, stop_step: 0 });
        expect((await version(30)).rows).toEqual([{ ts: new Date(t1[2] as string), ro }]);
        expect(await logged()).toEqual([]);

        // A local delete holds key 40 while the remote insert of it waits; it commits after the
        // insert's snapshot, is newer, and wins: the insert is undone at the end of its transaction.
        await db.client.query(`DELETE FROM pgbidi.tombstones`);
        await writer.query(`INSERT INTO public.${name} VALUES (40, 'local')`);
        await writer.query('BEGIN');
        await writer.query(`DELETE FROM public.${name} WHERE id = 40`);
        const t2 = [ago(6), ago(5)];
        const waiting = run('0/30', ['0/40', '0/50'], t2, [1, 1], ['40', 'remote', '41', 'remote']);
        // Until the CALL waits for the writer's lock on the row (without it there would be no race).
        const blocked = async (): Promise<boolean> =>
          (await db.client.query(`SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'CALL pg_temp.pgbidi_apply%'`)).rowCount === 1;
        for (let i = 0; i < 200 && !(await blocked()); i++) await new Promise((r) => setTimeout(r, 50));
        expect(await blocked()).toBe(true);
        await writer.query('COMMIT');
        expect((await waiting).rows[0]).toMatchObject({ done: 2, stop_step: 0 });
        expect((await applier.query(`SELECT id FROM public.${name} WHERE id IN (40, 41) ORDER BY id`)).rows).toEqual([{ id: 41 }]);
        expect((await version(41)).rows).toEqual([{ ts: new Date(t2[1] as string), ro }]);
        expect(await logged()).toEqual(['update_deleted/skip ["40"]']);

        // The table has a tombstone when the CALL begins: an insert of an older version of key 40 is
        // undone at once.
        expect((await run('0/50', ['0/60', '0/70'], [ago(4), ago(3)], [1, 1], ['40', 'older', '42', 'x'])).rows[0]).toMatchObject({ done: 2, stop_step: 0 });
        expect((await applier.query(`SELECT id FROM public.${name} ORDER BY id`)).rows).toEqual([{ id: 30 }, { id: 41 }, { id: 42 }]);
        expect(await logged()).toEqual(['update_deleted/skip ["40"]', 'update_deleted/skip ["40"]']);
        const progress = await applier.query<{ lsn: string }>(`SELECT pg_replication_origin_session_progress(false)::text AS lsn`);
        expect(progress.rows[0]?.lsn).toBe('0/70');

        // No tombstone and no writer when the CALL begins; a local delete of key 45 commits while the
        // CALL's transaction waits (for a key lock, before its insert of 45): nothing holds the row
        // then, the insert does not wait, and only the tombstone-write sequence, which moved, sends the
        // end of the transaction back to the tombstones. The newer delete wins: the insert is undone.
        await db.client.query(`DELETE FROM pgbidi.tombstones`);
        await writer.query(`INSERT INTO public.${name} VALUES (45, 'local')`);
        await db.client.query('SELECT pg_advisory_lock(7, 7)');
        const held = applier.query(
          `CALL pg_temp.pgbidi_apply('0/70', '${peer}', '{0/80}', '{0/80}', $1::timestamptz[], '{2}', '{0,1}', '{7,7,45,remote}', NULL, NULL, NULL, NULL)`,
          [[ago(2)]],
        );
        for (let i = 0; i < 200 && !(await blocked()); i++) await new Promise((r) => setTimeout(r, 50));
        expect(await blocked()).toBe(true);
        await writer.query(`DELETE FROM public.${name} WHERE id = 45`);
        await db.client.query('SELECT pg_advisory_unlock(7, 7)');
        expect((await held).rows[0]).toMatchObject({ done: 1, stop_step: 0 });
        expect((await applier.query(`SELECT id FROM public.${name} WHERE id = 45`)).rows).toEqual([]);
        expect((await logged()).slice(-1)).toEqual(['update_deleted/skip ["45"]']);

        // While nothing writes tombstones, a transaction of inserts ends without reading them: a CALL
        // of four such transactions reads the tombstones as often as a CALL of one (when it begins).
        const scans = async (): Promise<number> => {
          await applier.query('SELECT pg_stat_force_next_flush()');
          await db.client.query('SELECT pg_stat_clear_snapshot()');
          const r = await db.client.query<{ n: string }>(
            `SELECT coalesce(seq_scan, 0) + coalesce(idx_scan, 0) AS n FROM pg_stat_user_tables WHERE relid = 'pgbidi.tombstones'::regclass`,
          );
          return Number(r.rows[0]?.n);
        };
        await db.client.query(`DELETE FROM pgbidi.tombstones`);
        await db.client.query('SELECT pg_stat_force_next_flush()');
        const before = await scans();
        const four = await run(
          '0/80',
          ['0/90', '0/A0', '0/B0', '0/C0'],
          [ago(1.5), ago(1.4), ago(1.3), ago(1.2)],
          [1, 1, 1, 1],
          ['50', 'a', '51', 'b', '52', 'c', '53', 'd'],
        );
        expect(four.rows[0]).toMatchObject({ done: 4, stop_step: 0 });
        const afterFour = await scans();
        expect((await run('0/C0', ['0/D0'], [ago(1.1)], [1], ['54', 'e'])).rows[0]).toMatchObject({ done: 1, stop_step: 0 });
        expect(afterFour - before).toBeGreaterThan(0);
        const afterOne = await scans();
        // Without the mark, every transaction of inserts reads them at its end.
        if (mark) expect(afterFour - before).toBe(afterOne - afterFour);
        else expect(afterFour - before).toBeGreaterThan(afterOne - afterFour);
        expect((await applier.query(`SELECT count(*)::int AS n FROM public.${name} WHERE id BETWEEN 50 AND 54`)).rows).toEqual([{ n: 5 }]);
      } finally {
        await Promise.all([writer.end(), applier.end()]);
      }
    },
  );

  it('commits a transaction whose commit time is ahead of the local clock only once the clock has passed it', async () => {
    const shapes = lwwShapes(await idValueTable(db.client, 'ahead', 4), ['insert']);
    const applier = new pg.Client({ connectionString: db.server.connectionString() });
    await applier.connect();
    try {
      await applySession(applier, shapes, 'ahead', db.server.versionNum);
      const ahead = new Date(Date.now() + 400).toISOString();
      const r = await applier.query<{ done: number; commits: number[] }>(
        `CALL pg_temp.pgbidi_apply('0/0', 'ahead', '{0/100}', '{0/100}', $1::timestamptz[], '{1}', '{1}', '{1,x}', NULL, NULL, NULL, NULL)`,
        [[ahead]],
      );
      expect(r.rows[0]?.done).toBe(1);
      // The server's clock when the COMMIT was done is past the remote commit time (400 ms ahead when
      // the CALL was sent, so not by chance), and the row keeps that commit time.
      expect(r.rows[0]?.commits[0]).toBeGreaterThan(Date.parse(ahead));
      const row = await applier.query<{ ts: Date }>('SELECT pg_xact_commit_timestamp(xmin) AS ts FROM public.ahead WHERE id = 1');
      expect(row.rows[0]?.ts.toISOString()).toBe(ahead);
    } finally {
      await applier.end();
    }
  });

  it('decides a tie of commit times by node name, the same way as remote_wins', async () => {
    const shapes = lwwShapes(mapping, ['update']);
    const at = '2020-01-01 00:00:00+00'; // past: the procedure waits for a remote commit time ahead of the clock
    // Rows 10 and 11 last written by node c at `at` (another origin's session, its commit time set).
    const writer = new pg.Client({ connectionString: db.server.connectionString() });
    const applier = new pg.Client({ connectionString: db.server.connectionString() });
    await Promise.all([writer.connect(), applier.connect()]);
    try {
      await writeAsOrigin(writer, 'pgbidi_c', `INSERT INTO "we""ird"."ta ble" (id, "old") VALUES (10, 'local'), (11, 'local')`, at);
      await applySession(applier, shapes, 'q', db.server.versionNum);
      const call = (expected: string, peer: string, lsn: string, id: number): Promise<pg.QueryResult> =>
        applier.query(`CALL pg_temp.pgbidi_apply($1, $2, $3::pg_lsn[], $3::pg_lsn[], $4::timestamptz[], '{1}', '{1}', $5::text[], NULL, NULL, NULL, NULL)`, [
          expected,
          peer,
          [lsn],
          [at],
          awkwardRow(id, peer),
        ]);
      // The same commit time: node a sorts before c, so c's version stays; d sorts after c and wins.
      expect((await call('0/0', 'a', '0/100', 10)).rows[0]).toMatchObject({ done: 1, stop_step: 0 });
      expect((await call('0/100', 'd', '0/200', 11)).rows[0]).toMatchObject({ done: 1, stop_step: 0 });
      const rows = await applier.query(`SELECT id, "old" FROM "we""ird"."ta ble" WHERE id IN (10, 11) ORDER BY id`);
      expect(rows.rows).toEqual([
        { id: 10, old: 'local' },
        { id: 11, old: 'd' },
      ]);
      const logged = await applier.query(
        `SELECT conflict_type || '/' || resolution AS t, key AS k FROM pgbidi.conflicts WHERE key IN ('["10"]', '["11"]') ORDER BY id`,
      );
      expect(logged.rows).toEqual([
        { t: 'update_origin_differs/keep_local', k: ['10'] },
        { t: 'update_origin_differs/apply_remote', k: ['11'] },
      ]);
    } finally {
      await Promise.all([writer.end(), applier.end()]);
    }
  });

  it('updates a row from before the group, and one the peer wrote, with one statement each (the quiet write)', async () => {
    // Each update the quiet write cannot decide reads the row again (15) or writes a second time (18):
    // a second scan of the table's key. Rows 1 and 2 are from before the group (its epoch is after
    // them), row 3 is the peer's own (written by the first CALL).
    const shapes = lwwShapes(await idValueTable(db.client, 'quiet', 3), ['insert', 'update']);
    await db.client.query(`INSERT INTO public.quiet VALUES (1, 'before'), (2, 'before')`);
    const applier = new pg.Client({ connectionString: db.server.connectionString() });
    await applier.connect();
    try {
      const epoch = (await db.client.query<{ t: string }>('SELECT now()::text AS t')).rows[0]?.t;
      await applySession(applier, shapes, 'quiet', db.server.versionNum, true, epoch);
      await new Promise((r) => setTimeout(r, 50));
      // Remote commit times after the epoch (and so after rows 1 and 2), before the clock.
      const ago = (ms: number): string => new Date(Date.now() - ms).toISOString();
      const run = (expected: string, lsns: string[], shapeIds: number[], vals: string[]): Promise<pg.QueryResult> =>
        applier.query(
          `CALL pg_temp.pgbidi_apply($1, 'quiet', $2::pg_lsn[], $2::pg_lsn[], $3::timestamptz[], $4::int[], $5::int[], $6::text[], NULL, NULL, NULL, NULL)`,
          [expected, lsns, lsns.map((_, i) => ago(5 * (lsns.length - i))), `{${lsns.map(() => 1).join(',')}}`, `{${shapeIds.join(',')}}`, vals],
        );
      const scans = async (): Promise<number> => {
        await applier.query('SELECT pg_stat_force_next_flush()');
        await db.client.query('SELECT pg_stat_clear_snapshot()');
        const r = await db.client.query<{ n: string }>(`SELECT coalesce(idx_scan, 0) AS n FROM pg_stat_user_tables WHERE relid = 'public.quiet'::regclass`);
        return Number(r.rows[0]?.n);
      };
      expect((await run('0/0', ['0/10'], [1], ['3', 'peer'])).rows[0]).toMatchObject({ done: 1, stop_step: 0 });
      const before = await scans();
      const updated = await run('0/10', ['0/20', '0/30', '0/40'], [2, 2, 2], ['1', 'x', '2', 'x', '3', 'x']);
      expect(updated.rows[0]).toMatchObject({ done: 3, stop_step: 0, events: [] });
      expect((await scans()) - before).toBe(3);
      expect((await applier.query(`SELECT id, v FROM public.quiet ORDER BY id`)).rows).toEqual([1, 2, 3].map((id) => ({ id, v: 'x' })));
    } finally {
      await applier.end();
    }
  });

  it('logs every update of a run of rows another origin wrote, and none of the rows between them', async () => {
    // The table has columns named t and old: the conflict log must hold the row, not those columns.
    // On 18 a step after one whose quiet write found nothing starts with the RETURNING statement, until
    // a write finds no conflict (writeBlock): this run goes quiet → differs → differs → quiet → differs.
    const shapes = lwwShapes(mapping, ['update', 'insert']);
    const writer = new pg.Client({ connectionString: db.server.connectionString() });
    const applier = new pg.Client({ connectionString: db.server.connectionString() });
    await Promise.all([writer.connect(), applier.connect()]);
    try {
      // Rows 21, 22 and 24 last written by node e, 20 and 23 by the peer itself (the first CALL).
      await writeAsOrigin(writer, 'pgbidi_e', `INSERT INTO "we""ird"."ta ble" (id, "old") VALUES (21, 'e'), (22, 'e'), (24, 'e')`, '2020-01-01 00:00:00+00');
      await applySession(applier, shapes, 'run', db.server.versionNum);
      const times = (n: number, from: number): string[] => Array.from({ length: n }, (_, i) => new Date(Date.UTC(2021, 0, 1, 0, 0, from + i)).toISOString());
      const lsns = (n: number, from: number): string[] => Array.from({ length: n }, (_, i) => `0/${(from + i).toString(16)}0`);
      const ids = [20, 21, 22, 23, 24];
      const first = await applier.query(
        `CALL pg_temp.pgbidi_apply('0/0', 'run', $1::pg_lsn[], $1::pg_lsn[], $2::timestamptz[], '{1,1}', '{2,2}', $3::text[], NULL, NULL, NULL, NULL)`,
        [lsns(2, 1), times(2, 0), [...awkwardRow(20, 'r0'), ...awkwardRow(23, 'r0')]],
      );
      expect(first.rows[0]).toMatchObject({ done: 2, stop_step: 0, events: [] });
      const second = await applier.query(
        `CALL pg_temp.pgbidi_apply('0/20', 'run', $1::pg_lsn[], $1::pg_lsn[], $2::timestamptz[], '{1,1,1,1,1}', '{1,1,1,1,1}', $3::text[], NULL, NULL, NULL, NULL)`,
        [lsns(5, 3), times(5, 10), ids.flatMap((id) => awkwardRow(id, 'r1'))],
      );
      expect(second.rows[0]).toMatchObject({ done: 5, stop_step: 0 });
      expect((second.rows[0] as { events: number[] }).events.map((e) => decodeEvent(e))).toEqual(
        [2, 3, 5].map((step) => ({ step, type: 'update_origin_differs', resolution: 'apply_remote' })),
      );
      const rows = await applier.query(`SELECT id, "old" FROM "we""ird"."ta ble" WHERE id BETWEEN 20 AND 24 ORDER BY id`);
      expect(rows.rows).toEqual(ids.map((id) => ({ id, old: 'r1' })));
      const logged = await applier.query<{ k: string[]; local: string }>(
        `SELECT key AS k, local_tuple->>'old' AS local FROM pgbidi.conflicts WHERE peer = 'run' ORDER BY id`,
      );
      expect(logged.rows).toEqual([21, 22, 24].map((id) => ({ k: [String(id)], local: 'e' })));
    } finally {
      await Promise.all([writer.end(), applier.end()]);
    }
  });
});
