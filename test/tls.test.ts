import { describe, expect, it } from 'vitest';
import { Agent } from '../src/agent.js';
import { parseConfig } from '../src/config/load-config.js';
import type { RawConfig } from '../src/config/config-schema.js';
import { setupNode } from '../src/node/setup-node.js';
import { createLogger } from '../src/observability/logger.js';
import type { LocalCluster } from '../src/testbed/local-cluster.js';
import { eventually, useCluster } from './support/cluster-fixture.js';
import { availableServerVersions } from './support/pg-versions.js';
import { makeTestPki } from './support/tls-certs.js';

/**
 * TLS to PostgreSQL with sslmode=verify-full: the servers get a certificate for 127.0.0.1 from a CA
 * the test makes; the agents verify it (sslrootcert) on every connection (apply, replication,
 * control, scrape-time reads), and refuse a server whose certificate another CA signed.
 */
function withTls(dsn: string, caFile: string): string {
  const url = new URL(dsn);
  url.searchParams.set('sslmode', 'verify-full');
  url.searchParams.set('sslrootcert', caFile);
  return url.toString();
}

function tlsConfig(c: LocalCluster, node: string, caFile: string): RawConfig {
  const raw = c.rawConfig(node);
  return {
    ...raw,
    node: { ...raw.node, dsn: withTls(raw.node.dsn, caFile) },
    peers: (raw.peers ?? []).map((p) => ({ ...p, dsn: withTls(p.dsn, caFile) })),
  };
}

async function enableTls(c: LocalCluster, node: string, cert: string, key: string): Promise<void> {
  const server = c.server(node);
  await server.writeDataFile('server.crt', cert);
  await server.writeDataFile('server.key', key);
  for (const sql of [`ALTER SYSTEM SET ssl_cert_file = 'server.crt'`, `ALTER SYSTEM SET ssl_key_file = 'server.key'`, 'ALTER SYSTEM SET ssl = on']) {
    await server.query(sql);
  }
  // SSL settings take effect on reload (PostgreSQL 10+).
  await server.query('SELECT pg_reload_conf()');
  await eventually(`ssl on ${node}`, async () => (await server.query<{ ssl: string }>('SHOW ssl'))[0]?.ssl === 'on', 10_000);
}

describe.each(availableServerVersions())('TLS verify-full ($label)', ({ binDir }) => {
  const cluster = useCluster(() => ({
    binDir,
    nodes: ['a', 'b'],
    schema: ['CREATE TABLE kv (id int PRIMARY KEY, v text)'],
    replication: { heartbeat_interval_ms: 300, feedback_interval_ms: 300, reconnect: { initial_delay_ms: 200, max_delay_ms: 500 } },
  }));

  it('replicates over verified TLS both ways, on the apply and the replication connections', async () => {
    const c = cluster.get();
    const pki = makeTestPki('good');
    for (const n of ['a', 'b']) await enableTls(c, n, pki.serverCert, pki.serverKey);
    const configs = new Map(['a', 'b'].map((n) => [n, parseConfig(tlsConfig(c, n, pki.caFile), {}, `node ${n}`)] as const));
    for (const config of configs.values()) await setupNode(config);
    for (const [n, config] of configs) c.agents.set(n, await Agent.start({ config, log: createLogger('silent'), defaultMetrics: false }));

    await c.query('a', `INSERT INTO kv VALUES (1, 'from a')`);
    await c.query('b', `INSERT INTO kv VALUES (2, 'from b')`);
    await c.waitConverged('public', 'kv');
    expect(await c.query('a', 'SELECT id FROM kv ORDER BY id')).toEqual([{ id: 1 }, { id: 2 }]);

    // Every session of the agents on either server is encrypted: walsenders and apply sessions both.
    for (const n of ['a', 'b']) {
      const sessions = await c.query<{ backend_type: string; application_name: string; ssl: boolean }>(
        n,
        `SELECT a.backend_type, a.application_name, s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
          WHERE a.application_name LIKE 'pgbidi%'`,
      );
      expect(sessions.some((s) => s.backend_type === 'walsender')).toBe(true);
      expect(sessions.some((s) => s.backend_type === 'client backend')).toBe(true);
      expect(sessions.filter((s) => !s.ssl)).toEqual([]);
    }
    for (const n of ['a', 'b']) {
      await c.agents.get(n)?.stop();
      c.agents.delete(n);
    }
  });

  it('refuses a server certificate from another CA, and one that does not name the host', async () => {
    const c = cluster.get();
    const expectRefused = async (what: string, caFile: string, error: RegExp): Promise<void> => {
      const config = parseConfig(tlsConfig(c, 'a', caFile), {}, `node a (${what})`);
      const agent = await Agent.start({ config, log: createLogger('silent'), defaultMetrics: false });
      try {
        await eventually(`the link reports the TLS failure (${what})`, () => agent.status()[0]?.lastError != null, 20_000);
        const link = agent.status()[0];
        expect(link?.state, what).not.toBe('streaming');
        expect(link?.lastError?.message, what).toMatch(error);
      } finally {
        await agent.stop();
      }
    };
    await expectRefused('another CA', makeTestPki('stranger').caFile, /certificate/i);
    // Certificates that name another host, from a CA the agent trusts: verify-full still refuses them.
    const misnamed = makeTestPki('misnamed', 'DNS:db.invalid');
    for (const n of ['a', 'b']) await enableTls(c, n, misnamed.serverCert, misnamed.serverKey);
    await expectRefused('a certificate for another host', misnamed.caFile, /altnames|does not match/i);
  });
});
