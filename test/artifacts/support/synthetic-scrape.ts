/**
 * A history of scrapes of two agents (a ← b and b ← a), as Prometheus would have stored it, written
 * as OpenMetrics with timestamps for `promtool tsdb create-blocks-from openmetrics`.
 *
 * The series come from the agent's own registry (Metrics plus the PeerCollectors gauges), driven
 * through the same calls the link makes, so their names and labels are the real ones. Only `up` and
 * `ALERTS` are added by hand (Prometheus makes those). Deterministic: a fixed-seed generator.
 */
import { Metrics } from '../../../src/observability/metrics.js';
import { PeerCollectors } from '../../../src/observability/peer-collectors.js';

interface Family {
  readonly type: string;
  readonly lines: string[];
}

function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

function labelText(labels: Readonly<Record<string, string | number>>): string {
  return Object.entries(labels)
    .map(([k, v]) => `${k}="${String(v).replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`)
    .join(',');
}

export interface SyntheticHistory {
  readonly openMetrics: string;
  /** Timestamp (Unix seconds) of the last scrape: query at this time. */
  readonly end: number;
}

export async function syntheticHistory(options: { end: number; minutes: number; step: number }): Promise<SyntheticHistory> {
  const random = lcg(42);
  const families = new Map<string, Family>();
  const add = (family: string, type: string, sample: string, labels: Readonly<Record<string, string | number>>, value: number, ts: number): void => {
    let f = families.get(family);
    if (!f) {
      f = { type, lines: [] };
      families.set(family, f);
    }
    f.lines.push(`${sample}{${labelText(labels)}} ${value} ${ts}`);
  };

  const agents = [
    { node: 'a', peer: 'b', instance: 'a:9464' },
    { node: 'b', peer: 'a', instance: 'b:9464' },
  ].map((a) => {
    const metrics = new Metrics({ node: a.node, version: '0.0.0-test', peers: [a.peer] });
    const peers = new PeerCollectors({ node: a.node, peers: [], registries: [metrics.registry] });
    return { ...a, metrics, peers, slot: `pgbidi_${a.peer}_to_${a.node}` };
  });

  const start = options.end - options.minutes * 60;
  for (let t = start; t <= options.end; t += options.step) {
    for (const a of agents) {
      const link = a.metrics.link(a.peer);
      link.state('streaming');
      for (let i = 0; i < 5; i++) {
        link.received('insert');
        link.receivedBytes(200);
        link.applied('insert', 1);
        link.transactionApplied({
          commitUnixSeconds: t - 1,
          delaySeconds: 0.05 + random() * 0.2,
          durationSeconds: 0.002 + random() * 0.01,
          changes: 1 + Math.floor(random() * 20),
        });
      }
      link.filtered('update', 'origin');
      link.transactionFiltered('origin');
      link.conflict('public.kv', 'update_origin_differs', 'apply_remote');
      if (random() < 0.3) link.conflict('public.kv', 'insert_exists', 'keep_local');
      if (random() < 0.05) link.applyError('connection');
      if (random() < 0.02) link.reconnect();
      link.lag(random() * 2);
      link.heartbeat(t - 1);
      link.queue(Math.floor(random() * 100), 100_000);
      link.positions({ received: BigInt(t) * 1000n, applied: BigInt(t) * 1000n, confirmed: BigInt(t) * 1000n });
      a.peers.scrapeErrors.inc({ peer: a.peer }, 0);
      a.peers.applyLag.set({ peer: a.peer }, 4096);
      a.peers.slotActive.set({ peer: a.peer, slot: a.slot }, 1);
      a.peers.retainedWal.set({ peer: a.peer, slot: a.slot }, 50e6);
      a.peers.safeWalSize.set({ peer: a.peer, slot: a.slot }, 5e9);
      for (const s of ['reserved', 'extended', 'unreserved', 'lost'])
        a.peers.walStatus.set({ peer: a.peer, slot: a.slot, wal_status: s }, s === 'reserved' ? 1 : 0);
      const local = { peer: a.peer, slot: `pgbidi_${a.node}_to_${a.peer}` };
      a.peers.localSlotActive.set(local, 1);
      a.peers.localRetainedWal.set(local, 40e6);
      for (const s of ['reserved', 'extended', 'unreserved', 'lost']) a.peers.localWalStatus.set({ ...local, wal_status: s }, s === 'reserved' ? 1 : 0);

      const target = { job: 'pgbidi', instance: a.instance };
      for (const f of await a.metrics.registry.getMetricsAsJSON()) {
        const type = String(f.type);
        const family = type === 'counter' ? f.name.replace(/_total$/, '') : f.name;
        for (const v of f.values as { value: number; labels: Record<string, string | number>; metricName?: string }[]) {
          add(family, type, v.metricName ?? f.name, { ...target, ...v.labels }, v.value, t);
        }
      }
      add('up', 'gauge', 'up', target, 1, t);
      add('ALERTS', 'gauge', 'ALERTS', { alertname: 'PgbidiReplicationLagHigh', alertstate: 'firing', severity: 'warning', ...target, peer: a.peer }, 1, t);
    }
  }
  for (const a of agents) await a.peers.close();

  let text = '';
  for (const [name, f] of families) text += `# TYPE ${name} ${f.type}\n${f.lines.join('\n')}\n`;
  return { openMetrics: `${text}# EOF\n`, end: options.end };
}
