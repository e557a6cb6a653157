import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { Agent } from '../src/agent.js';
import { main } from '../src/cli.js';
import type { RawConfig } from '../src/config/config-schema.js';
import { parseConfig } from '../src/config/load-config.js';
import type { LinkStatus } from '../src/link/link.js';
import { createLogger } from '../src/observability/logger.js';
import { freePort } from '../src/pg-server/free-port.js';
import { PostgresServer } from '../src/pg-server/postgres-server.js';
import { eventually, useCluster } from './support/cluster-fixture.js';
import { availableServerVersions } from './support/pg-versions.js';
import { tempDir } from './support/temp-dir.js';

/**
 * Bad environments (README "Bad input"): every case says what is wrong and what to change. `setup`
 * exits 1 (2 is for the config file itself); a running agent does not exit or spin: each link waits
 * with capped exponential backoff and shows the problem as its last error in /status.
 */

const PASSWORD = 'right-horse-battery';
/** Password authentication for every role but postgres (which the fixtures use), on TCP. */
const HBA = [
  'local all all trust',
  'host all postgres 127.0.0.1/32 trust',
  'host all postgres ::1/128 trust',
  'host all all 127.0.0.1/32 scram-sha-256',
  'host all all ::1/128 scram-sha-256',
  '',
].join('\n');

function withUser(dsn: string, user: string, password: string, database?: string): string {
  const u = new URL(dsn);
  u.username = user;
  u.password = password;
  if (database !== undefined) u.pathname = `/${database}`;
  return u.toString();
}

async function cli(args: string[]): Promise<{ code: number; err: string; out: string }> {
  let out = '';
  let err = '';
  const code = await main(args, { out: (s) => (out += s), err: (s) => (err += s) });
  return { code, out, err };
}

function configFile(raw: RawConfig): string {
  const dir = tempDir('pgbidi-badenv-');
  const file = join(dir, 'node.yaml');
  writeFileSync(file, stringify(raw));
  return file;
}

describe.each(availableServerVersions())('bad environments on $label', ({ binDir }) => {
  const cluster = useCluster(() => ({
    binDir,
    nodes: ['a', 'b'],
    schema: [
      `CREATE TABLE kv (id int PRIMARY KEY, v text)`,
      `CREATE ROLE pw_user LOGIN SUPERUSER PASSWORD '${PASSWORD}'`,
      `CREATE ROLE weak LOGIN PASSWORD '${PASSWORD}'`,
    ],
    replication: { reconnect: { initial_delay_ms: 500, max_delay_ms: 4000 } },
  }));
  /** wal_level = replica, track_commit_timestamp = off: the settings pgbidi needs, both wrong. */
  let odd: PostgresServer | undefined;
  beforeAll(async () => {
    odd = await PostgresServer.start({ binDir, name: 'odd', settings: { wal_level: 'replica', track_commit_timestamp: 'off' } });
    await odd.createDatabase('app');
    await odd.query(`CREATE TABLE kv (id int PRIMARY KEY, v text)`, [], 'app');
    const c = cluster.get();
    for (const n of ['a', 'b']) {
      await c.server(n).writeDataFile('pg_hba.conf', HBA);
      await c.query(n, 'SELECT pg_reload_conf()');
    }
  });
  afterAll(async () => {
    await odd?.destroy();
  });

  it('setup names an unreachable host, a wrong password, a missing database and a missing privilege, with the fix, and exits 1', async () => {
    const c = cluster.get();
    const raw = c.rawConfig('a');
    const port = await freePort();
    const cases = [
      { dsn: `postgres://pgbidi@127.0.0.1:${port}/app`, says: [`127.0.0.1:${port}`, 'connection refused', 'correct the host and port in node.dsn'] },
      { dsn: withUser(c.dsn('a'), 'pw_user', 'wrong-password'), says: ['password authentication failed', 'node.dsn or in PGBIDI_NODE_PASSWORD'] },
      { dsn: withUser(c.dsn('a'), 'pw_user', PASSWORD, 'nope'), says: ['database nope does not exist', 'correct the database name in node.dsn'] },
      { dsn: withUser(c.dsn('a'), 'weak', PASSWORD), says: ['user weak lacks a privilege', 'Least privilege'] },
    ];
    for (const k of cases) {
      const r = await cli(['setup', '--config', configFile({ ...raw, node: { name: 'a', dsn: k.dsn } })]);
      expect({ code: r.code, dsn: k.dsn }).toEqual({ code: 1, dsn: k.dsn });
      for (const text of k.says) expect(r.err).toContain(text);
      expect(r.err).not.toContain('wrong-password');
      expect(r.err).not.toContain(PASSWORD);
      expect(r.err).not.toMatch(/\n\s+at /);
    }
  });

  /** Starts an agent for `raw`, waits until its only link has failed at least three times, and stops it. */
  async function failingLink(raw: RawConfig): Promise<{ link: LinkStatus; elapsedMs: number }> {
    const agent = await Agent.start({ config: parseConfig(raw, {}, 'test'), log: createLogger('silent'), defaultMetrics: false });
    const started = Date.now();
    try {
      const link = (): LinkStatus => agent.status()[0] as LinkStatus;
      await eventually('three failed attempts', () => link().reconnects >= 3 && link().lastError !== null, 60_000);
      return { link: link(), elapsedMs: Date.now() - started };
    } finally {
      await agent.stop();
    }
  }

  it('a running agent keeps its links in backoff and says what is wrong: peer down, wrong password, missing privilege, node not set up, wal_level, track_commit_timestamp', async () => {
    const c = cluster.get();
    const server = odd as PostgresServer;
    await c.setupAll();
    await server.query(`SELECT pg_replication_origin_create('pgbidi_b')`, [], 'app');
    await c.query('b', `SELECT pg_replication_origin_create('pgbidi_odd')`);
    const base = c.rawConfig('a');
    const port = await freePort();
    const cases: { raw: RawConfig; says: string[] }[] = [
      {
        raw: { ...base, peers: [{ name: 'b', dsn: `postgres://pgbidi@127.0.0.1:${port}/app` }] },
        says: ['peer b (peers.0.dsn', 'connection refused'],
      },
      {
        raw: { ...base, peers: [{ name: 'b', dsn: withUser(c.dsn('b'), 'pw_user', 'wrong-password') }] },
        says: ['password authentication failed on peer b', 'PGBIDI_PEER_B_PASSWORD'],
      },
      {
        // The agent's role on its own node lacks what the README's GRANTs give (origins, tables).
        raw: { ...base, node: { name: 'a', dsn: withUser(c.dsn('a'), 'weak', PASSWORD) } },
        says: ['user weak lacks a privilege on this node (node.dsn', 'Least privilege'],
      },
      {
        // Node a has no origin for a peer named c: it was never set up for it.
        raw: { ...base, peers: [{ name: 'c', dsn: c.dsn('b') }] },
        says: ['this node is not set up for peer c', 'run pgbidi setup'],
      },
      {
        raw: { ...c.rawConfig('b'), peers: [{ name: 'odd', dsn: server.connectionString('app') }] },
        says: ["wal_level is 'replica' on peer odd", 'set wal_level = logical'],
      },
      {
        raw: { ...base, node: { name: 'odd', dsn: server.connectionString('app') }, peers: [{ name: 'b', dsn: c.dsn('b') }] },
        says: ["track_commit_timestamp is 'off' on this node", 'set track_commit_timestamp = on'],
      },
    ];
    for (const k of cases) {
      const { link, elapsedMs } = await failingLink(k.raw);
      expect(link.state).not.toBe('streaming');
      for (const text of k.says) expect(link.lastError?.message).toContain(text);
      expect(link.lastError?.message).not.toContain('wrong-password');
      // Backoff, not a tight loop: three attempts take at least the two first delays' lower bounds
      // (backoff.ts: at least half of 500 ms, then of 1000 ms).
      expect(elapsedMs).toBeGreaterThanOrEqual(250 + 500);
    }
  });

  it('a node set up by an older version: the link says to run setup again, and applies once it has run', async () => {
    const c = cluster.get();
    await c.setupAll();
    // What a node set up before pgbidi.stored_key existed lacks.
    await c.query('a', 'DROP FUNCTION pgbidi.stored_key(jsonb)');
    const { link } = await failingLink(c.rawConfig('a'));
    expect(link.lastError?.message).toContain("this node's pgbidi schema was set up by an older version of pgbidi (no pgbidi.stored_key(jsonb))");
    expect(link.lastError?.message).toContain('run pgbidi setup --config FILE here again');
    await c.setupAll();
    await c.startAgent('a');
    await c.startAgent('b');
    await c.query('b', `INSERT INTO kv VALUES (7, 'after setup')`);
    await c.query('b', `DELETE FROM kv WHERE id = 7`);
    // b's delete of the row, applied on a, leaves its tombstone there through pgbidi.stored_key.
    await eventually('the delete applied on a', async () => {
      const r = await c.query<{ n: number }>('a', `SELECT count(*)::int AS n FROM pgbidi.tombstones WHERE table_name = 'public.kv'`);
      return r[0]?.n === 1;
    });
  });
});
