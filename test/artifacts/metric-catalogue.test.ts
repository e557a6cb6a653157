import { describe, expect, it } from 'vitest';
import { METRICS } from '../../src/artifacts/metric-names.js';
import { Metrics } from '../../src/observability/metrics.js';
import { PeerCollectors } from '../../src/observability/peer-collectors.js';
import { SchemaWatch } from '../../src/node/schema-watch.js';
import { createLogger } from '../../src/observability/logger.js';

interface Family {
  readonly type: string;
  readonly labels: readonly string[];
}

/** What the agent's registry exposes, with every label combination it can produce initialised. */
async function exported(): Promise<Map<string, Family>> {
  const m = new Metrics({ node: 'a', version: '0.0.0-test', peers: ['b'] });
  // The slot and byte-lag gauges the agent reads from its peers at scrape time (no peer: nothing is read).
  const peers = new PeerCollectors({ node: 'a', peers: [], registries: [m.registry] });
  // The schema comparison's gauge (not started: nothing is read).
  new SchemaWatch({
    node: 'a',
    dsn: 'postgres://unused',
    peers: [{ name: 'b', dsn: 'postgres://unused' }],
    tables: ['*'],
    excludeTables: [],
    registries: [m.registry],
    log: createLogger('silent'),
  });
  const out = new Map<string, Family>();
  for (const f of await m.registry.getMetricsAsJSON()) {
    // The declared label names (a histogram with no observation yet has no values to read them from).
    const declared = (m.registry.getSingleMetric(f.name) as unknown as { labelNames?: readonly string[] } | undefined)?.labelNames ?? [];
    out.set(f.name, { type: String(f.type), labels: [...declared].sort() });
  }
  await peers.close();
  return out;
}

describe('metric catalogue (src/artifacts/metric-names.ts)', () => {
  it('has one entry per name, Prometheus naming, and pgbidi_ on everything the agent defines', () => {
    const names = METRICS.map((m) => m.name);
    expect(new Set(names).size).toBe(names.length);
    for (const m of METRICS) {
      if (m.source === 'pgbidi') expect(m.name).toMatch(/^pgbidi_[a-z0-9_]+$/);
      if (m.type === 'counter') expect(m.name).toMatch(/_total$/);
      else expect(m.name).not.toMatch(/_total$/);
    }
  });

  it('every entry marked exported is registered by the agent, with the same type and labels', async () => {
    const registry = await exported();
    for (const m of METRICS.filter((x) => x.status === 'exported' && x.source !== 'prometheus')) {
      const f = registry.get(m.name);
      expect(f, `${m.name} is marked exported but the agent does not register it`).toBeDefined();
      expect(f?.type, m.name).toBe(m.type);
      expect(f?.labels, m.name).toEqual([...m.labels].sort());
    }
  });

  it('every pgbidi_ metric the agent registers is in the catalogue', async () => {
    const catalogued = new Set<string>(METRICS.map((m) => m.name));
    const missing = [...(await exported()).keys()].filter((n) => n.startsWith('pgbidi_') && !catalogued.has(n));
    expect(missing, 'add these to src/artifacts/metric-names.ts so dashboards and rules may use them').toEqual([]);
  });

  it('entries not exported yet are not registered under another type or labels', async () => {
    // Not a failure when one lands (colleagues add metrics in their own commits): a warning asks for the
    // status to be promoted, so that rules on it drop out of the acknowledged list in rules.test.ts.
    const registry = await exported();
    for (const m of METRICS.filter((x) => x.status !== 'exported')) {
      const f = registry.get(m.name);
      if (!f) continue;
      console.warn(`metric-names.ts: ${m.name} is registered now; mark it exported`);
      expect(f.type, m.name).toBe(m.type);
      expect(f.labels, m.name).toEqual([...m.labels].sort());
    }
  });
});
