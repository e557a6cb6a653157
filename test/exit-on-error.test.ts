import { expect, it } from 'vitest';
import { caughtUp, databaseSetting, describeOnEveryPath, sleep } from './support/cluster-fixture.js';

/**
 * exit_on_error = on for the database turns every error into the end of the session, even one that
 * a savepoint or the apply procedure's own checks expect (a row set aside by its policy, the insert
 * fast path stopped by a tombstone): both links reconnected 7 times in 30 s and applied nothing
 * more. pgbidi's sessions start with it off. plpgsql.extra_errors = 'all' (strict PL/pgSQL checks a
 * DBA may turn on) is set too: the apply procedure must compile and run under it.
 */
describeOnEveryPath(
  'exit_on_error of the database',
  [
    `CREATE TABLE t (id int PRIMARY KEY, v text, n int)`,
    `CREATE TABLE u (id int PRIMARY KEY, email text UNIQUE)`,
    databaseSetting('exit_on_error', 'on'),
    databaseSetting('plpgsql.extra_errors', "'all'"),
  ],
  (cluster) => {
    it('resolves conflicts and sets rows aside without losing the apply session', async () => {
      const c = cluster.get();
      await c.setupAll();
      await c.query('b', `ALTER TABLE t ADD CONSTRAINT small CHECK (n < 1000000)`);
      await c.startAgent('a');
      await c.startAgent('b');
      await c.query('a', `INSERT INTO t SELECT g, 'v', g FROM generate_series(1, 2000) g`);
      await caughtUp(c);
      await Promise.all(['a', 'b'].map((n) => c.stopAgent(n)));
      await c.query('a', `UPDATE t SET v = 'a' WHERE id <= 5`);
      await c.query('a', `INSERT INTO t VALUES (-1, 'a', 1)`);
      await c.query('a', `INSERT INTO u VALUES (1, 'x@a')`);
      await c.query('b', `DELETE FROM t WHERE id BETWEEN 3 AND 8`); // tombstones: the fast path stops
      await c.query('b', `INSERT INTO u VALUES (2, 'x@a')`);
      await sleep(5);
      await c.query('b', `UPDATE t SET v = 'b' WHERE id <= 2`);
      await c.query('b', `INSERT INTO t VALUES (-1, 'b', 1)`);
      await c.query('a', `INSERT INTO t SELECT g, 'w', g FROM generate_series(3000, 4000) g`);
      await c.query('a', `INSERT INTO t VALUES (-5, 'refused on b', 2000000)`);
      await c.startAgent('a');
      await c.startAgent('b');
      await caughtUp(c);

      const q = `SELECT count(*)::int AS n, md5(string_agg(id || ':' || v, ',' ORDER BY id)) AS h FROM t WHERE id <> -5`;
      const [onA] = await c.query('a', q);
      expect(await c.query('b', q)).toEqual([onA]);
      expect(await c.query('b', `SELECT conflict_type FROM pgbidi.dead_letters ORDER BY conflict_type`)).toEqual([
        { conflict_type: 'check_violation' },
        { conflict_type: 'insert_exists' },
      ]);
      // Failures the link retries are the statements' own (a SQLSTATE), never a session that ended.
      for (const node of ['a', 'b']) {
        for (const link of c.agents.get(node)?.status() ?? []) expect(link.lastError?.message ?? '').not.toContain('terminated');
      }
    });
  },
);
