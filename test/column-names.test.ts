import { expect, it } from 'vitest';
import { caughtUp, describeOnEveryPath } from './support/cluster-fixture.js';

/** Two 63-byte names that share their first 61 bytes: a prefix of two more bytes cuts them alike. */
const LONG_1 = `c${'x'.repeat(60)}_1`;
const LONG_2 = `c${'x'.repeat(60)}_2`;

/**
 * Columns named like the names apply's statements give their own columns (ord, inserted, complete,
 * present, local, the input columns' c0, k0, v1, f2) or cut by PostgreSQL to the same 63 bytes once
 * prefixed. A column called ord stopped every multi-row statement ("column reference "ord" is
 * ambiguous", SQLSTATE 42702): the link retried the same transaction for ever.
 */
describeOnEveryPath(
  'column names',
  [
    `CREATE TABLE t (id int PRIMARY KEY, ord int, complete boolean, present int, local text, x text, c0 int, k0 int, v1 int, f2 int, "${LONG_1}" int, "${LONG_2}" int)`,
    `CREATE TABLE t2 (ord int, inserted int, "${LONG_1}" int, "${LONG_2}" int, v int, PRIMARY KEY (ord, inserted, "${LONG_1}", "${LONG_2}"))`,
  ],
  (cluster) => {
    it('inserts, updates and deletes, with and without conflicts, and the nodes converge', async () => {
      const c = cluster.get();
      await c.setupAll();
      // The same keys on both nodes before the agents run: insert_exists on both sides.
      await c.query('a', `INSERT INTO t (id, ord, "${LONG_1}", "${LONG_2}") VALUES (1, 10, 11, 12)`);
      await c.query('b', `INSERT INTO t (id, ord, "${LONG_1}", "${LONG_2}") VALUES (1, 20, 21, 22)`);
      await c.query('a', `INSERT INTO t2 VALUES (1, 1, 1, 1, 10)`);
      await c.query('b', `INSERT INTO t2 VALUES (1, 1, 1, 1, 20)`);
      await c.startAgent('a');
      await c.startAgent('b');
      await c.query('a', `INSERT INTO t SELECT g, g, g % 2 = 0, g, 'l', 'x', g, g, g, g, g + 1, g + 2 FROM generate_series(2, 300) g`);
      await c.query('a', `INSERT INTO t2 SELECT g, g, g + 1, g + 2, g FROM generate_series(2, 300) g`);
      await caughtUp(c);
      await c.query('a', `UPDATE t SET ord = ord + 1000, "${LONG_1}" = "${LONG_1}" + 5, "${LONG_2}" = 7, v1 = 0 WHERE id <= 150`);
      await c.query('b', `UPDATE t SET ord = -ord, "${LONG_2}" = 9, x = 'y', complete = NOT complete WHERE id > 150`);
      await c.query('a', `UPDATE t2 SET v = -1, "${LONG_2}" = "${LONG_2}" + 1000 WHERE ord <= 100`);
      await c.query('b', `DELETE FROM t WHERE id BETWEEN 200 AND 210`);
      await c.query('b', `DELETE FROM t2 WHERE ord BETWEEN 200 AND 210`);
      await caughtUp(c);
      // Small transactions (the apply procedure's, under its limit).
      await c.query('a', `UPDATE t SET ord = 5, "${LONG_1}" = 1, c0 = 0 WHERE id = 3`);
      await c.query('b', `UPDATE t2 SET v = 7, "${LONG_1}" = -6 WHERE ord = 6`);
      await c.query('a', `DELETE FROM t2 WHERE ord = 5`);
      await c.query('b', `INSERT INTO t2 VALUES (1000, 1, 1, 1, 1)`);
      // Inserts into a table with tombstones, on the path that checks each row against them.
      await c.query('a', `INSERT INTO t (id, ord) SELECT g, g FROM generate_series(400, 520) g`);
      await caughtUp(c);
      for (const table of ['t', 't2']) {
        const q = `SELECT count(*)::int AS n, md5(string_agg(r::text, ',' ORDER BY r::text)) AS h FROM ${table} AS r`;
        const [onA] = await c.query('a', q);
        const [onB] = await c.query('b', q);
        expect(onB).toEqual(onA);
      }
      const [rows] = await c.query<{ n: number }>('a', 'SELECT count(*)::int AS n FROM t');
      expect(rows?.n).toBe(300 - 11 + 121);
      const [rows2] = await c.query<{ n: number }>('a', 'SELECT count(*)::int AS n FROM t2');
      expect(rows2?.n).toBe(300 - 11 - 1 + 1);
      for (const node of ['a', 'b']) {
        expect(await c.query(node, `SELECT DISTINCT table_name FROM pgbidi.conflicts WHERE conflict_type = 'insert_exists' ORDER BY 1`)).toEqual([
          { table_name: 't' },
          { table_name: 't2' },
        ]);
        expect(await c.query(node, 'SELECT reason FROM pgbidi.dead_letters')).toEqual([]);
      }
    });
  },
);
