import { expect, it } from 'vitest';
import { caughtUp, databaseSetting, describeOnEveryPath } from './support/cluster-fixture.js';

/**
 * A database whose search_path puts a schema before pg_catalog, where a function with a built-in's
 * name and signature is found first (CVE-2018-1058's pattern). pgbidi's sessions run with
 * search_path = pg_catalog, as PostgreSQL's own apply worker runs with an empty one, and the
 * tombstone trigger that pgbidi puts on the application's tables names pg_catalog's functions: the
 * application's function is called neither by apply (which lost every other deleted key through it)
 * nor by the trigger in the application's own DELETE. The other sessions the agent and setup open
 * (the link's control connection with its heartbeats, the metrics' reads) are pinned alike.
 */
describeOnEveryPath(
  'search_path of the database',
  [
    `CREATE TABLE t (id int PRIMARY KEY, v text)`,
    `CREATE SCHEMA audit`,
    `CREATE TABLE audit.calls (app text)`,
    // Records who called one of the functions below, which shadow built-ins of the same signature.
    `CREATE FUNCTION audit.note(fn text) RETURNS void LANGUAGE sql
           AS $$ INSERT INTO audit.calls SELECT pg_catalog.current_setting('application_name') || '/' || fn || '/' || pg_catalog.left(query, 200) FROM pg_catalog.pg_stat_activity WHERE pid = pg_catalog.pg_backend_pid() $$`,
    // Keeps every other element.
    `CREATE FUNCTION public.unnest(anyarray) RETURNS SETOF anyelement LANGUAGE sql
           AS $$ SELECT audit.note('unnest'); SELECT x FROM pg_catalog.unnest($1) WITH ORDINALITY AS u(x, i) WHERE i % 2 = 1 $$`,
    // Called by the link's heartbeat, the metrics' slot reads, setup and the link's start.
    `CREATE FUNCTION public.pg_logical_emit_message(boolean, text, text) RETURNS pg_lsn LANGUAGE sql
           AS $$ SELECT audit.note('pg_logical_emit_message'); SELECT pg_catalog.pg_logical_emit_message($1, $2, $3) $$`,
    `CREATE FUNCTION public.pg_current_wal_lsn() RETURNS pg_lsn LANGUAGE sql
           AS $$ SELECT audit.note('pg_current_wal_lsn'); SELECT pg_catalog.pg_current_wal_lsn() $$`,
    `CREATE FUNCTION public.current_setting(text) RETURNS text LANGUAGE sql
           AS $$ SELECT audit.note('current_setting'); SELECT pg_catalog.current_setting($1) $$`,
    databaseSetting('search_path', 'public, pg_catalog'),
  ],
  (cluster) => {
    it('applies every row without calling the function that shadows a built-in', async () => {
      const c = cluster.get();
      await c.setupAll();
      const agents = [await c.startAgent('a', undefined, '127.0.0.1:0'), await c.startAgent('b', undefined, '127.0.0.1:0')];
      await c.query('a', `INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 2000) g`);
      await c.query('a', `INSERT INTO t VALUES (-1, 'one')`);
      await c.query('b', `INSERT INTO t VALUES (-2, 'two'), (-3, 'three')`);
      await caughtUp(c); // the rows b deletes next are there
      await c.query('a', `UPDATE t SET v = 'changed' WHERE id <= 10`);
      await c.query('b', `DELETE FROM t WHERE id BETWEEN 11 AND 20`);
      await caughtUp(c);
      const q = `SELECT count(*)::int AS n, md5(string_agg(id || ':' || v, ',' ORDER BY id)) AS h FROM t`;
      const [onA] = await c.query<{ n: number; h: string }>('a', q);
      const [onB] = await c.query<{ n: number; h: string }>('b', q);
      expect(onA?.n).toBe(1993);
      expect(onB).toEqual(onA);
      // Heartbeats (one a second) sent after this point, and the metrics' reads of every slot.
      expect(await c.waitCaughtUp(Date.now(), 30_000)).not.toBeNull();
      for (const agent of agents) expect((await fetch(`http://${agent.httpAddress}/metrics`)).status).toBe(200);
      for (const node of ['a', 'b']) {
        expect(await c.query(node, 'SELECT app, count(*)::int AS n FROM audit.calls GROUP BY app')).toEqual([]);
        expect(await c.query(node, 'SELECT reason FROM pgbidi.dead_letters')).toEqual([]);
      }
    });
  },
);
