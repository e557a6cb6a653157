import { expect, it } from 'vitest';
import { databaseSetting, describeOnEveryPath, eventually } from './support/cluster-fixture.js';

/**
 * A DBA keeps applications from writing to a node by setting default_transaction_read_only for its
 * database. PostgreSQL's own apply worker keeps applying into such a database; pgbidi's apply stopped
 * at its first write (SQLSTATE 25006, "cannot execute INSERT in a read-only transaction") and
 * retried the same transaction for ever. (caughtUp is not used: it writes on every node.)
 */
describeOnEveryPath('a read-only database', ['CREATE TABLE t (id int PRIMARY KEY, v text)'], (cluster) => {
  it('applies inserts, updates, deletes and conflicts into a database whose default_transaction_read_only is on', async () => {
    const c = cluster.get();
    await c.setupAll();
    await c.query('b', `INSERT INTO t VALUES (1, 'b')`);
    await c.query('a', `INSERT INTO t VALUES (1, 'a')`);
    await c.query('b', databaseSetting('default_transaction_read_only', 'on'));
    await expect(c.query('b', `INSERT INTO t VALUES (0, 'app')`)).rejects.toThrow(/read-only transaction/);
    await c.startAgent('a');
    await c.startAgent('b');
    // One large transaction, then small ones (the apply procedure's).
    await c.query('a', `INSERT INTO t SELECT g, 'x' FROM generate_series(2, 300) g`);
    await c.query('a', `UPDATE t SET v = 'y' WHERE id < 10`);
    for (let i = 0; i < 20; i++) await c.query('a', `UPDATE t SET v = 'z${i}' WHERE id = ${i + 20}`);
    await c.query('a', `DELETE FROM t WHERE id BETWEEN 100 AND 109`);
    const q = `SELECT count(*)::int AS n, md5(string_agg(t::text, ',' ORDER BY id)) AS h FROM t`;
    const [onA] = await c.query('a', q);
    expect(onA?.n).toBe(290);
    await eventually('b has what a has', async () => JSON.stringify(await c.query('b', q)) === JSON.stringify([onA]));
    expect(await c.query('b', `SELECT conflict_type FROM pgbidi.conflicts`)).toEqual([{ conflict_type: 'insert_exists' }]);
    const link = c.agents.get('b')?.status()[0];
    expect(link?.lastError).toBeNull();
    expect(link?.reconnects).toBe(0);
  });
});
