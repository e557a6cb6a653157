import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { Agent } from '../src/agent.js';
import { main } from '../src/cli.js';
import { parseConfig } from '../src/config/load-config.js';
import { createLogger } from '../src/observability/logger.js';
import { embeddedBinDir } from '../src/pg-server/postgres-binaries.js';
import { eventually, useCluster } from './support/cluster-fixture.js';
import { tempDir } from './support/temp-dir.js';

/**
 * No secret in any output: the agent's /metrics, /status, /readyz, /view.json, its JSON logs and the
 * errors it reports while a peer is down, and what the CLI prints, never show a password or a DSN
 * that carries one. The servers trust local connections, so the passwords are there only to be
 * looked for.
 */
const PASSWORD = 'Pw4Secrets-7f3a9c';
const OTHER_PASSWORD = 'PeerPw-2b8e61d0';

describe('secrets (PostgreSQL 18)', () => {
  const cluster = useCluster(() => ({
    binDir: embeddedBinDir(),
    nodes: ['a', 'b'],
    schema: ['CREATE TABLE kv (id int PRIMARY KEY, v text)'],
    replication: { heartbeat_interval_ms: 300, feedback_interval_ms: 300, reconnect: { initial_delay_ms: 200, max_delay_ms: 500 } },
  }));

  it('shows no password or DSN in metrics, status, the web view, logs, errors or CLI output', async () => {
    const c = cluster.get();
    const raw = c.rawConfig('a');
    // Passwords the way operators pass them: from the environment.
    const env = { PGBIDI_NODE_PASSWORD: PASSWORD, PGBIDI_PEER_B_PASSWORD: OTHER_PASSWORD };
    const config = parseConfig(raw, env, 'node a');
    expect(config.node.dsn).toContain(PASSWORD);
    const secrets = [PASSWORD, OTHER_PASSWORD, config.node.dsn, ...config.peers.map((p) => p.dsn)];

    // CLI: setup and status with the DSNs (passwords included) in the file.
    const dir = tempDir('pgbidi-secrets-');
    const file = join(dir, 'a.yaml');
    const printed: string[] = [];
    const io = { out: (s: string) => void printed.push(s), err: (s: string) => void printed.push(s) };
    writeFileSync(file, stringify({ ...raw, node: { ...raw.node, dsn: config.node.dsn }, peers: config.peers.map((p) => ({ name: p.name, dsn: p.dsn })) }));
    expect(await main(['setup', '--config', file], io)).toBe(0);
    await c.setupAll();

    const logs: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        logs.push(chunk.toString('utf8'));
        done();
      },
    });
    const agent = await Agent.start({ config, log: createLogger('debug', sink), defaultMetrics: true });
    c.agents.set('a', agent);
    await c.startAgent('b');
    const base = `http://${agent.httpAddress}`;
    await c.query('b', `INSERT INTO kv VALUES (1, 'x')`);
    await eventually('row 1 on a', async () => (await c.query('a', 'SELECT 1 FROM kv WHERE id = 1')).length === 1);

    // A peer that goes away: the link reports the connection error, the log records it.
    await c.server('b').stop();
    await eventually('the link from b reports an error', () => agent.status()[0]?.lastError != null, 30_000);
    const bodies: string[] = [];
    for (const path of ['/metrics', '/status', '/readyz', '/view.json', '/']) bodies.push(await (await fetch(`${base}${path}`)).text());
    writeFileSync(file, stringify({ ...raw, http: { listen: agent.httpAddress }, node: { ...raw.node, dsn: config.node.dsn } }));
    await main(['status', '--config', file], io);
    await c.server('b').restart();
    await eventually('streaming again', () => agent.status()[0]?.state === 'streaming', 30_000);

    const everything = [...bodies, logs.join(''), printed.join(''), JSON.stringify(agent.status())].join('\n');
    expect(logs.join('')).toContain('"level"');
    expect(bodies[1]).toContain('"lastError":{"message":');
    for (const secret of secrets) {
      expect(everything.includes(secret), `output contains ${secret.replace(/:[^:@/]*@/, ':***@')}`).toBe(false);
      expect(everything.includes(encodeURIComponent(secret))).toBe(false);
    }
  });
});
