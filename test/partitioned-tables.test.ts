import { expect, it } from 'vitest';
import { caughtUp, describeOnEveryPath } from './support/cluster-fixture.js';

/**
 * Partitioned tables (list and hash): pgoutput publishes each change under its partition's name
 * (publish_via_partition_root is off), the tombstone trigger that setup puts on the parent fires on
 * the partitions, and an update that moves a row to another partition arrives as a delete from one
 * and an insert into the other. Both nodes write, also while apart, and converge.
 */
describeOnEveryPath(
  'partitioned tables',
  [
    `CREATE TABLE p (id int, region int, v text, PRIMARY KEY (id, region)) PARTITION BY LIST (region)`,
    `CREATE TABLE p1 PARTITION OF p FOR VALUES IN (1)`,
    `CREATE TABLE p2 PARTITION OF p FOR VALUES IN (2)`,
    `CREATE TABLE q (id int PRIMARY KEY, v text) PARTITION BY HASH (id)`,
    `CREATE TABLE q0 PARTITION OF q FOR VALUES WITH (MODULUS 2, REMAINDER 0)`,
    `CREATE TABLE q1 PARTITION OF q FOR VALUES WITH (MODULUS 2, REMAINDER 1)`,
  ],
  (cluster) => {
    it('converge after moves between partitions and conflicting writes', async () => {
      const c = cluster.get();
      await c.setupAll();
      await c.startAgent('a');
      await c.startAgent('b');
      await c.query('a', `INSERT INTO p SELECT g, 1 + g % 2, 'v' FROM generate_series(1, 200) g`);
      await c.query('a', `INSERT INTO q SELECT g, 'v' FROM generate_series(1, 200) g`);
      await caughtUp(c);
      await c.query('a', `UPDATE p SET region = 3 - region WHERE id <= 20`);
      await c.query('b', `UPDATE p SET v = 'b' WHERE id > 10 AND id <= 30`);
      await c.query('b', `DELETE FROM p WHERE id > 30 AND id <= 40`);
      await c.query('a', `UPDATE p SET v = 'a' WHERE id > 35 AND id <= 45`);
      await c.query('b', `DELETE FROM q WHERE id <= 10`);
      await c.query('a', `UPDATE q SET v = 'a' WHERE id <= 20`);
      await c.query('a', `UPDATE q SET id = id + 1000 WHERE id > 190`);
      await caughtUp(c);
      await c.stopAgent('a');
      await c.stopAgent('b');
      // Conflicting writes while the agents are down.
      await c.query('a', `UPDATE p SET v = 'a2' WHERE id BETWEEN 50 AND 60`);
      await c.query('b', `DELETE FROM p WHERE id BETWEEN 55 AND 65`);
      await c.query('b', `UPDATE q SET v = 'b2' WHERE id BETWEEN 50 AND 60`);
      await c.query('a', `DELETE FROM q WHERE id BETWEEN 55 AND 65`);
      await c.query('a', `UPDATE p SET region = 3 - region WHERE id BETWEEN 70 AND 80`);
      await c.query('b', `UPDATE p SET v = 'b3' WHERE id BETWEEN 75 AND 85`);
      await c.startAgent('a');
      await c.startAgent('b');
      await caughtUp(c);
      for (const tbl of ['p', 'q']) {
        const q = `SELECT count(*)::int AS n, md5(string_agg(t::text, ',' ORDER BY t::text)) AS h FROM ${tbl} t`;
        const [onA] = await c.query('a', q);
        const [onB] = await c.query('b', q);
        expect(onB).toEqual(onA);
      }
      for (const node of ['a', 'b']) expect(await c.query(node, 'SELECT reason FROM pgbidi.dead_letters')).toEqual([]);
      // Kept under the partitions' names, the names apply looks them up by.
      expect(await c.query('a', 'SELECT DISTINCT table_name FROM pgbidi.tombstones ORDER BY 1')).toEqual(
        ['public.p1', 'public.p2', 'public.q0', 'public.q1'].map((table_name) => ({ table_name })),
      );
    });
  },
);
