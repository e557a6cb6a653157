import { describe, expect, it } from 'vitest';
import { parseConfig } from '../src/config/load-config.js';
import { embeddedBinDir } from '../src/pg-server/postgres-binaries.js';
import { SetupError, setupNode } from '../src/node/setup-node.js';
import { databaseSetting, useCluster } from './support/cluster-fixture.js';

async function setupError(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (err) {
    if (err instanceof SetupError) return err.message;
    throw err;
  }
  throw new Error('setup succeeded');
}

describe('setup', () => {
  const misconfigured = useCluster(() => ({
    binDir: embeddedBinDir(),
    nodes: ['a', 'b'],
    settings: { wal_level: 'replica', track_commit_timestamp: 'off', max_replication_slots: 0, max_wal_senders: 0 },
    schema: [
      `CREATE TABLE nokey (v text)`,
      `CREATE TABLE ok (id int PRIMARY KEY, body text)`,
      `CREATE TABLE later (id int PRIMARY KEY, email text CONSTRAINT later_email UNIQUE DEFERRABLE INITIALLY DEFERRED)`,
      `CREATE TABLE byindex (id int PRIMARY KEY, code text NOT NULL CONSTRAINT byindex_code UNIQUE)`,
      `ALTER TABLE byindex REPLICA IDENTITY USING INDEX byindex_code`,
      `CREATE TABLE unlogged_keys (id int PRIMARY KEY)`,
      `ALTER TABLE unlogged_keys REPLICA IDENTITY NOTHING`,
      // An identity index that holds the primary key's columns: its old keys carry them.
      `CREATE TABLE wider (id int PRIMARY KEY, code text NOT NULL, CONSTRAINT wider_id_code UNIQUE (code, id))`,
      `ALTER TABLE wider REPLICA IDENTITY USING INDEX wider_id_code`,
      `CREATE UNLOGGED TABLE scratch (id int PRIMARY KEY)`,
    ],
  }));

  it('names every missing setting and table problem at once, with the fix', async () => {
    const c = misconfigured.get();
    const message = await setupError(setupNode(c.config('a')));
    expect(message).toContain("wal_level is 'replica': set wal_level = logical");
    expect(message).toContain('track_commit_timestamp is off');
    expect(message).toContain('max_replication_slots is 0');
    expect(message).toContain('max_wal_senders is 0');
    expect(message).toContain('public.nokey');
    expect(message).toContain('deferrable unique, primary key or exclusion constraints cannot be replicated: public.later.later_email');
    expect(message).toContain(
      "tables whose replica identity does not carry their primary key cannot be replicated: public.byindex (REPLICA IDENTITY USING INDEX on (code), without the primary key's id), " +
        'public.unlogged_keys (REPLICA IDENTITY NOTHING: its updates and deletes would fail once published)',
    );
    expect(message).toContain('ALTER TABLE … REPLICA IDENTITY DEFAULT (or FULL)');
    expect(message).toContain(
      'unlogged tables cannot be replicated (their changes are not in the WAL that logical decoding reads): public.scratch; ' +
        'ALTER TABLE … SET LOGGED, or leave them out with replication.exclude_tables',
    );
    expect(message).not.toContain('public.ok');
    expect(message).not.toContain('public.wider');
  });

  const cluster = useCluster(() => ({
    binDir: embeddedBinDir(),
    nodes: ['a', 'b'],
    replication: { tables: ['public.*', 'pgsales.*'] },
    schema: [
      `CREATE TABLE ok (id int PRIMARY KEY, body text)`,
      // Only pg_* schemas are the system's. With standard_conforming_strings off (a legacy setting a
      // database may keep), the catalog query's pattern 'pg\_%' read as 'pg_%' and left pgsales out.
      databaseSetting('standard_conforming_strings', 'off'),
      `CREATE SCHEMA pgsales`,
      `CREATE TABLE pgsales.orders (id int PRIMARY KEY)`,
    ],
  }));

  it('is idempotent, notes TOAST-able tables, and rejects conflict settings that differ between nodes', async () => {
    const c = cluster.get();
    const first = await setupNode(c.config('a'));
    const again = await setupNode(c.config('a'));
    expect(again.slots).toEqual([{ peer: 'b', slot: 'pgbidi_a_to_b', status: 'exists' }]);
    expect(first.slots[0]?.status).toBe('created');
    expect(again.notes.join(' ')).toContain('public.ok can hold out-of-line (TOAST) values');

    const keepLocal = parseConfig({ ...c.rawConfig('b'), conflicts: { default_policy: 'keep_local' } }, {});
    const message = await setupError(setupNode(keepLocal));
    expect(message).toContain('conflict settings differ from peer a');
    const same = await setupNode(c.config('b'));
    expect(same.tables).toEqual(['pgsales.orders', 'public.ok']);
  });
});
