import { expect, it } from 'vitest';
import { caughtUp, describeOnEveryPath } from './support/cluster-fixture.js';

/**
 * A primary key under a case-insensitive ICU collation: 'abc' and 'ABC' are the same key. Inserted
 * as one on a and as the other on b while apart, the key exists on both sides (insert_exists) and
 * the later insert wins everywhere, its spelling of the key included: each node had kept its own
 * spelling with the winner's other columns, so the nodes differed for good.
 */
describeOnEveryPath(
  'a key under a nondeterministic collation',
  [
    `CREATE COLLATION case_insensitive (provider = icu, locale = 'und-u-ks-level2', deterministic = false)`,
    `CREATE TABLE users (name text COLLATE case_insensitive PRIMARY KEY, v text)`,
  ],
  (cluster) => {
    it('converges on the spelling of the insert that wins', async () => {
      const c = cluster.get();
      await c.setupAll();
      await c.query('a', `INSERT INTO users VALUES ('abc', 'a'), ('x1', 'a')`);
      await c.query('b', `INSERT INTO users VALUES ('ABC', 'b'), ('X1', 'b')`);
      await c.startAgent('a');
      await c.startAgent('b');
      await caughtUp(c);
      // Deleted under another spelling, then updated later on the other node: the update wins.
      await c.query('a', `INSERT INTO users VALUES ('d1', 'a')`);
      await caughtUp(c);
      await c.stopAgent('a');
      await c.stopAgent('b');
      await c.query('b', `DELETE FROM users WHERE name = 'D1'`);
      await c.query('a', `UPDATE users SET v = 'a2' WHERE name = 'd1'`);
      await c.startAgent('a');
      await c.startAgent('b');
      await caughtUp(c);
      const q = `SELECT name, v FROM users ORDER BY name COLLATE "C"`;
      const expected = [
        { name: 'ABC', v: 'b' },
        { name: 'X1', v: 'b' },
        { name: 'd1', v: 'a2' },
      ];
      expect(await c.query('a', q)).toEqual(expected);
      expect(await c.query('b', q)).toEqual(expected);
    });
  },
);
