import { expect, it } from 'vitest';
import { caughtUp, databaseSetting, describeOnEveryPath } from './support/cluster-fixture.js';

/**
 * Settings that change how the server reads text input, set for the whole database on both nodes
 * (legacy applications keep array_nulls = off; xmloption = document is a documented choice).
 * pgbidi reads every value it applies as text, and its columns as array literals: a null must
 * stay a null, the string 'NULL' a string, and an XML fragment a peer holds must be taken.
 */
describeOnEveryPath(
  'input settings of the database',
  [
    `CREATE TABLE t (id int PRIMARY KEY, s text, n int, tags text[], nums int[], x xml)`,
    databaseSetting('array_nulls', 'off'),
    databaseSetting('xmloption', 'document'),
  ],
  (cluster) => {
    it('applies nulls as nulls, the string NULL as a string, and XML fragments, in both directions', async () => {
      const c = cluster.get();
      await c.setupAll();
      await c.startAgent('a');
      await c.startAgent('b');
      // One large insert (the plain INSERT of a first insert run), then small transactions.
      await c.query(
        'a',
        `INSERT INTO t SELECT g, CASE WHEN g % 3 = 0 THEN NULL WHEN g % 3 = 1 THEN 'NULL' ELSE 'v' END,
                CASE WHEN g % 2 = 0 THEN NULL ELSE g END, ARRAY['NULL', NULL, 'x'], ARRAY[g, NULL],
                CASE WHEN g % 2 = 0 THEN NULL ELSE xmlparse(content 'a<b/>c') END
           FROM generate_series(1, 2000) g`,
      );
      await c.query('a', `INSERT INTO t VALUES (-1, NULL, NULL, ARRAY[NULL]::text[], ARRAY[NULL]::int[], xmlparse(content 'text only'))`);
      await c.query('b', `INSERT INTO t VALUES (-2, 'NULL', 2, ARRAY['NULL'], ARRAY[NULL, 1], xmlparse(content '<p/><p/>'))`);
      await caughtUp(c);
      await c.query('a', `UPDATE t SET s = NULL, n = NULL, tags = ARRAY[NULL, 'NULL'] WHERE id = 1`);
      await c.query('b', `UPDATE t SET s = 'NULL', x = xmlparse(content 'x<y/>') WHERE id = 3`);
      await caughtUp(c);

      const q = `SELECT id, s, n, tags, nums, x::text AS x FROM t ORDER BY id`;
      const [a, b] = [await c.query('a', q), await c.query('b', q)];
      expect(b.length).toBe(2002);
      expect(b).toEqual(a);
      const [counts] = await c.query<{ nulls: number; strings: number }>(
        'b',
        `SELECT count(*) FILTER (WHERE s IS NULL)::int AS nulls, count(*) FILTER (WHERE s = 'NULL')::int AS strings FROM t`,
      );
      expect(counts).toEqual({ nulls: 667, strings: 668 });
      for (const node of ['a', 'b']) {
        expect(await c.query(node, 'SELECT reason FROM pgbidi.dead_letters')).toEqual([]);
      }
    });
  },
);
