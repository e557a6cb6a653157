import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { Agent } from '../src/agent.js';
import { parseConfig } from '../src/config/load-config.js';
import { createLogger } from '../src/observability/logger.js';
import { embeddedBinDir } from '../src/pg-server/postgres-binaries.js';
import { freePort } from '../src/pg-server/free-port.js';
import type { LocalCluster } from '../src/testbed/local-cluster.js';
import { eventually, useCluster } from './support/cluster-fixture.js';

const CONFIG = join(import.meta.dirname, '..', 'deploy', 'haproxy', 'haproxy.cfg');
const HAPROXY = spawnSync('haproxy', ['-v']).status === 0;
if (!HAPROXY && process.env['CI'] === 'true') throw new Error('CI=true but haproxy is not installed (.ci/run installs it)');

/** The PostgreSQL port of the node that answers a new session through HAProxy at `port`. */
async function answeringPort(c: LocalCluster, port: number): Promise<number | null> {
  const url = new URL(c.dsn('a'));
  url.host = `127.0.0.1:${port}`;
  const client = new pg.Client({ connectionString: url.toString(), connectionTimeoutMillis: 3000 });
  client.on('error', () => undefined);
  try {
    await client.connect();
    const r = await client.query<{ port: number }>('SELECT inet_server_port() AS port');
    return r.rows[0]?.port ?? null;
  } catch {
    return null;
  } finally {
    await client.end().catch(() => undefined);
  }
}

const ready = async (agent: Agent): Promise<{ status: number; body: string }> => {
  const r = await fetch(`http://${agent.httpAddress}/readyz`);
  return { status: r.status, body: await r.text() };
};

describe.skipIf(!HAPROXY)('HAProxy with /readyz as the health check (deploy/haproxy/haproxy.cfg)', () => {
  const cluster = useCluster(() => ({ binDir: embeddedBinDir(), nodes: ['a', 'b'], schema: [`CREATE TABLE t (id int PRIMARY KEY, v text)`] }));
  let haproxy: ChildProcess | null = null;
  const output: string[] = [];
  afterAll(async () => {
    const child = haproxy;
    if (child && child.exitCode === null && child.signalCode === null) {
      const gone = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await gone;
    }
  });

  it('moves traffic away from a node that lags beyond the bound, and back once it caught up', async () => {
    const c = cluster.get();
    await c.setupAll();
    const agents = new Map<string, Agent>();
    for (const n of ['a', 'b']) {
      const config = parseConfig({ ...c.rawConfig(n), readiness: { max_lag_ms: 2000 } }, {});
      const agent = await Agent.start({ config, log: createLogger('silent'), defaultMetrics: false });
      c.agents.set(n, agent);
      agents.set(n, agent);
    }
    const a = agents.get('a') as Agent;
    const b = agents.get('b') as Agent;
    await eventually('both agents ready', async () => (await ready(a)).status === 200 && (await ready(b)).status === 200);

    const [write, read, closedPg, closedHttp] = [await freePort(), await freePort(), await freePort(), await freePort()];
    const httpPort = (agent: Agent): string => agent.httpAddress.slice(agent.httpAddress.lastIndexOf(':') + 1);
    const env = {
      ...process.env,
      PGBIDI_LB_WRITE_BIND: `127.0.0.1:${write}`,
      PGBIDI_LB_READ_BIND: `127.0.0.1:${read}`,
      PGBIDI_NODE_A_PG: `127.0.0.1:${c.server('a').port}`,
      PGBIDI_NODE_A_HTTP_PORT: httpPort(a),
      PGBIDI_NODE_B_PG: `127.0.0.1:${c.server('b').port}`,
      PGBIDI_NODE_B_HTTP_PORT: httpPort(b),
      // A third node whose server and agent do not answer: it never gets a session.
      PGBIDI_NODE_C_PG: `127.0.0.1:${closedPg}`,
      PGBIDI_NODE_C_HTTP_PORT: String(closedHttp),
    };
    haproxy = spawn('haproxy', ['-db', '-f', CONFIG], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    const keep = (chunk: Buffer): void => void output.push(chunk.toString('utf8'));
    haproxy.stdout?.on('data', keep);
    haproxy.stderr?.on('data', keep);
    const portA = c.server('a').port;
    const portB = c.server('b').port;

    await eventually('writes go to a, the first ready node', async () => (await answeringPort(c, write)) === portA, 60_000);
    // HAProxy starts every server as up until its first checks fail: c drops out within a few seconds.
    let reads: (number | null)[] = [];
    await eventually(
      'reads go to a and b, never to c',
      async () => {
        reads = [];
        for (let i = 0; i < 6; i++) reads.push(await answeringPort(c, read));
        return reads.every((r) => r !== null);
      },
      60_000,
    );
    expect([...new Set(reads)].sort()).toEqual([portA, portB].sort());

    // a lags: a lock holds its apply of b's insert, so the oldest unapplied transaction ages.
    const blocker = new pg.Client({ connectionString: c.dsn('a') });
    await blocker.connect();
    try {
      await blocker.query('BEGIN');
      await blocker.query('LOCK TABLE t IN ACCESS EXCLUSIVE MODE');
      await c.query('b', `INSERT INTO t VALUES (1, 'from b')`);
      await eventually('a reports that it lags', async () => (await ready(a)).status === 503, 60_000);
      expect((await ready(a)).body).toContain('link from b lags');
      expect((await ready(b)).status).toBe(200);
      await eventually('writes move to b', async () => (await answeringPort(c, write)) === portB, 60_000);
      // Each backend checks on its own schedule: the read side drops a within a few seconds too.
      await eventually(
        'reads avoid the lagging node',
        async () => {
          for (let i = 0; i < 4; i++) if ((await answeringPort(c, read)) !== portB) return false;
          return true;
        },
        60_000,
      );
      expect((await ready(a)).status, 'a still lags while reads avoid it').toBe(503);
    } finally {
      await blocker.query('COMMIT').catch(() => undefined);
      await blocker.end();
    }

    await eventually('a caught up', async () => (await c.query('a', 'SELECT 1 FROM t WHERE id = 1')).length === 1, 60_000);
    await eventually('writes come back to a', async () => (await answeringPort(c, write)) === portA, 60_000);
    expect(haproxy.exitCode, output.join('')).toBeNull();
  });
});
