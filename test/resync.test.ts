import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../src/config/load-config.js';
import { setupNode } from '../src/node/setup-node.js';
import { availableServerVersions } from './support/pg-versions.js';
import { eventually, useCluster } from './support/cluster-fixture.js';
import { GrowingGroup } from './support/join-fixture.js';

/**
 * The README's re-synchronization of a node that can no longer follow a peer (a lost slot, or changes
 * its peer logged without the primary key): stop its agent, empty its replicated tables and its
 * tombstones under a replication origin (so that no peer receives the emptying), `pgbidi join` it
 * again from a healthy node, start its agent. It then holds the donor's rows and both directions go on.
 */
describe.each(availableServerVersions())('re-synchronizing a node on $label', ({ binDir }) => {
  const cluster = useCluster(() => ({ binDir, nodes: ['a', 'b'], schema: ['CREATE TABLE items (id int PRIMARY KEY, v text)'] }));

  it('empties b, joins it again from a, and both nodes go on replicating', async () => {
    const c = cluster.get();
    const group = new GrowingGroup(c);
    try {
      for (const n of ['a', 'b']) await setupNode(parseConfig(group.rawConfig(n, ['a', 'b']), {}, n));
      await group.startAgent('a', ['a', 'b']);
      await group.startAgent('b', ['a', 'b']);
      await c.query('a', `INSERT INTO items SELECT g, 'a' FROM generate_series(1, 100) g`);
      await eventually('b has a', async () => (await c.query('b', 'SELECT 1 FROM items')).length === 100);

      // b stops following a; a goes on (an update, deletes that leave tombstones), and b's copy is stale.
      await group.agents.get('b')?.stop();
      group.agents.delete('b');
      await c.query('a', `UPDATE items SET v = 'a, later' WHERE id <= 10`);
      await c.query('a', `DELETE FROM items WHERE id > 90`);

      // As psql runs the README's script: one statement at a time, so that the TRUNCATE commits
      // while the origin is set (PostgreSQL 15 peers tell such transactions by their commit's origin).
      const session = new pg.Client({ connectionString: c.dsn('b') });
      await session.connect();
      try {
        await session.query(`SELECT pg_replication_origin_session_setup('pgbidi_a')`);
        await session.query('TRUNCATE public.items, pgbidi.tombstones');
        await session.query('SELECT pg_replication_origin_session_reset()');
      } finally {
        await session.end();
      }
      const joined = await group.join('b', ['a', 'b'], 'a');
      expect(joined.err).toBe('');
      expect(joined.code).toBe(0);
      expect(joined.out).toMatch(/pgbidi\.tombstones: 10 rows/);
      await group.startAgent('b', ['a', 'b']);
      await group.startAgent('a', ['a', 'b']);

      await c.query('b', `INSERT INTO items VALUES (500, 'b')`);
      await c.query('a', `INSERT INTO items VALUES (501, 'a')`);
      const rows = (node: string) => c.query(node, 'SELECT id, v FROM items ORDER BY id');
      await eventually('a and b hold the same rows', async () => JSON.stringify(await rows('a')) === JSON.stringify(await rows('b')), 30_000);
      expect((await c.query('b', `SELECT count(*)::int AS n, count(*) FILTER (WHERE v = 'a, later')::int AS later FROM items`))[0]).toEqual({
        n: 92,
        later: 10,
      });
      expect(await c.query('b', 'SELECT count(*)::int AS n FROM pgbidi.conflicts')).toEqual([{ n: 0 }]);
    } finally {
      await group.stop();
    }
  });
});
