/**
 * The fault suite's group: three local PostgreSQL servers (LocalCluster), one agent process per node,
 * and one TcpProxy per directed link. Agent `l`'s connection to peer `p` (its replication stream and
 * its scrape-time slot reads) goes through the proxy `p>l`, so that the suite can cut any link
 * alone or both directions between two nodes (a partition). Each agent's own node is reached
 * directly. The workload and the checks also connect directly.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { RawConfig } from '../../config/config-schema.js';
import { freePort } from '../../pg-server/free-port.js';
import type { SettingValue } from '../../pg-server/postgres-server.js';
import { LocalCluster } from '../local-cluster.js';
import { FaultAgent } from './fault-agent.js';
import { FAULT_SCHEMA } from './fault-workload.js';
import { TcpProxy } from './tcp-proxy.js';
import { errorMessage } from '../../util/error-message.js';

export interface FaultClusterOptions {
  readonly binDir: string;
  readonly nodes: readonly string[];
  readonly settings?: Record<string, SettingValue>;
  /** Keep the agents' logs and configs (the directory is printed) instead of removing them. */
  readonly keepLogs?: boolean;
}

/** What one node holds, reduced to what must be equal everywhere. */
export interface NodeFingerprint {
  readonly items: string;
  /** Per writing node: rows, distinct seqs, md5 of the seqs. */
  readonly ledger: Readonly<Record<string, string>>;
  readonly bulk: string;
  /** Ledger or bulk rows present more than once on this node. */
  readonly duplicates: number;
  /** Ledger and bulk rows on this node (grows while the node catches up). */
  readonly rows: number;
}

const MAX_CATCH_UP_MS = 30 * 60_000;

/**
 * Short reconnect delays: the suite waits for every recovery, and a 30 s ceiling would make it a long
 * wait; the backoff logic is the same.
 */
export const FAULT_RECONNECT = { initial_delay_ms: 200, max_delay_ms: 3000 } as const;

export class FaultCluster {
  readonly agents = new Map<string, FaultAgent>();
  readonly proxies = new Map<string, TcpProxy>();

  private constructor(
    readonly options: FaultClusterOptions,
    readonly local: LocalCluster,
    readonly dir: string,
  ) {}

  static async start(options: FaultClusterOptions): Promise<FaultCluster> {
    const local = await LocalCluster.start({
      binDir: options.binDir,
      nodes: options.nodes,
      schema: FAULT_SCHEMA,
      ...(options.settings ? { settings: options.settings } : {}),
    });
    const dir = mkdtempSync(join(tmpdir(), 'pgbidi-faults-'));
    const cluster = new FaultCluster(options, local, dir);
    try {
      for (const l of options.nodes) {
        for (const p of options.nodes) if (p !== l) cluster.proxies.set(`${p}>${l}`, await TcpProxy.start(local.server(p).port));
        cluster.agents.set(l, new FaultAgent(l, dir, await freePort()));
      }
      await local.setupAll();
    } catch (err) {
      await cluster.destroy();
      throw err;
    }
    return cluster;
  }

  get nodes(): readonly string[] {
    return this.options.nodes;
  }

  agent(node: string): FaultAgent {
    const a = this.agents.get(node);
    if (!a) throw new Error(`no agent ${node}`);
    return a;
  }

  /** The proxy that carries what `local`'s agent reads from `peer`. */
  proxy(peer: string, local: string): TcpProxy {
    const p = this.proxies.get(`${peer}>${local}`);
    if (!p) throw new Error(`no proxy ${peer}>${local}`);
    return p;
  }

  dsn(node: string): string {
    return this.local.dsn(node);
  }

  config(node: string): RawConfig {
    const raw = this.local.rawConfig(node);
    return {
      ...raw,
      peers: this.nodes
        .filter((p) => p !== node)
        .map((p) => ({ name: p, dsn: `postgresql://postgres@127.0.0.1:${this.proxy(p, node).port}/${this.local.database}` })),
      replication: { reconnect: FAULT_RECONNECT },
      log: { level: 'info' },
    };
  }

  async startAgent(node: string): Promise<void> {
    await this.agent(node).start(this.config(node));
  }

  async startAll(): Promise<void> {
    for (const n of this.nodes) await this.startAgent(n);
  }

  /** Cuts (or restores) both directions between two nodes. */
  partition(a: string, b: string, cut: boolean): void {
    for (const p of [this.proxy(a, b), this.proxy(b, a)]) {
      if (cut) p.cutAll();
      else p.restore();
    }
  }

  async fingerprint(node: string): Promise<NodeFingerprint> {
    const items = await this.local.tableHash(node, 'public', 'items');
    const ledger = await this.local.query<{ node: string; rows: number; seqs: number; md5: string }>(
      node,
      `SELECT node, count(*)::int AS rows, count(DISTINCT seq)::int AS seqs, md5(string_agg(seq::text, ',' ORDER BY seq)) AS md5
         FROM ledger GROUP BY node ORDER BY node`,
    );
    // Large transactions write seq 1..n with payload md5(seq): per transaction, the count, the
    // distinct seqs and sums over seq and payload identify the rows without sorting 100,000s of
    // strings (which took seconds per node on a loaded machine).
    const bulk = await this.local.query<{ node: string; batch: number; rows: number; seqs: number; sums: string }>(
      node,
      `SELECT node, batch, count(*)::int AS rows, count(DISTINCT seq)::int AS seqs,
              sum(seq)::text || '/' || sum(hashtext(payload)::bigint)::text AS sums
         FROM bulk GROUP BY node, batch ORDER BY node, batch`,
    );
    return {
      items: `${items.rows}:${items.md5}`,
      ledger: Object.fromEntries(ledger.map((r) => [r.node, `${r.rows}/${r.seqs}:${r.md5}`])),
      bulk: `${bulk.reduce((s, b) => s + b.rows, 0)}:${bulk.map((b) => `${b.node}.${b.batch}=${b.rows}/${b.seqs}/${b.sums}`).join(',')}`,
      duplicates: ledger.reduce((s, r) => s + r.rows - r.seqs, 0) + bulk.reduce((s, b) => s + b.rows - b.seqs, 0),
      rows: ledger.reduce((s, r) => s + r.rows, 0) + bulk.reduce((s, b) => s + b.rows, 0),
    };
  }

  /**
   * Waits until every node holds the same items, the same ledger rows of every writer and the same
   * bulk rows, with no row twice; then looks again a little later (a change applied twice would come
   * after the first match). The ledger rows a node wrote itself are the truth for that writer, so
   * "the same everywhere" also means "nothing lost". Returns null when converged, else what differs
   * once the nodes have stopped changing for `timeoutMs`.
   */
  async waitConverged(timeoutMs: number): Promise<string | null> {
    // The deadline moves while the nodes catch up (rows still arriving): on a loaded machine a
    // backlog can take longer than any fixed bound, and only nodes that stopped changing and still
    // differ have diverged. MAX_CATCH_UP_MS bounds the whole wait.
    const hardDeadline = Date.now() + MAX_CATCH_UP_MS;
    let deadline = Date.now() + timeoutMs;
    let rowsSeen = -1;
    let last: string;
    for (;;) {
      const prints = new Map<string, NodeFingerprint>();
      try {
        for (const n of this.nodes) prints.set(n, await this.fingerprint(n));
        const rows = [...prints.values()].reduce((s, p) => s + p.rows, 0);
        if (rows > rowsSeen) {
          if (rowsSeen >= 0) deadline = Math.min(hardDeadline, Math.max(deadline, Date.now() + timeoutMs));
          rowsSeen = rows;
        }
        const texts = new Set([...prints.values()].map((p) => JSON.stringify(p)));
        const dup = [...prints.entries()].filter(([, p]) => p.duplicates > 0);
        if (dup.length) return `rows applied twice on ${dup.map(([n, p]) => `${n} (${p.duplicates})`).join(', ')}`;
        if (texts.size === 1) {
          await sleep(2000);
          const again = await Promise.all(this.nodes.map(async (n) => JSON.stringify(await this.fingerprint(n))));
          if (new Set(again).size === 1 && again[0] === [...texts][0]) return null;
        }
        last = describeDifference(prints);
      } catch (err) {
        last = `cannot read a node: ${errorMessage(err)}`;
      }
      if (Date.now() > deadline) return last;
      await sleep(1000);
    }
  }

  /** Conflicts recorded on every node so far. */
  async conflicts(): Promise<number> {
    let total = 0;
    for (const n of this.nodes) {
      const r = await this.local.query<{ n: number }>(n, `SELECT count(*)::int AS n FROM pgbidi.conflicts`);
      total += r[0]?.n ?? 0;
    }
    return total;
  }

  /** One line per link that is not streaming, for a failure message. */
  async describeLinks(): Promise<string> {
    const parts: string[] = [];
    for (const [n, a] of this.agents) {
      if (!a.running) {
        parts.push(`${n}: agent not running`);
        continue;
      }
      try {
        for (const l of await a.status()) {
          if (l.state !== 'streaming' || l.lastError)
            parts.push(`${n}<-${l.peer}: ${l.state}${l.lastError ? ` (${l.lastError.code ?? ''} ${l.lastError.message})` : ''}`);
        }
      } catch (err) {
        parts.push(`${n}: no /status (${errorMessage(err)})`);
      }
    }
    return parts.join('; ');
  }

  async destroy(): Promise<void> {
    await Promise.all([...this.agents.values()].map((a) => a.stop().catch(() => undefined)));
    await Promise.all([...this.proxies.values()].map((p) => p.close().catch(() => undefined)));
    await this.local.destroy();
    if (!this.options.keepLogs) rmSync(this.dir, { recursive: true, force: true });
  }
}

function describeDifference(prints: ReadonlyMap<string, NodeFingerprint>): string {
  const parts: string[] = [];
  const entries = [...prints.entries()];
  const first = entries[0]?.[1];
  if (!first) return 'no nodes';
  for (const key of ['items', 'bulk'] as const) {
    if (new Set(entries.map(([, p]) => p[key])).size > 1) parts.push(`${key}: ${entries.map(([n, p]) => `${n}=${p[key].split(':')[0]}`).join(' ')} rows`);
  }
  const writers = new Set(entries.flatMap(([, p]) => Object.keys(p.ledger)));
  for (const w of writers) {
    const v = entries.map(([n, p]) => [n, p.ledger[w] ?? '0/0:'] as const);
    if (new Set(v.map(([, x]) => x)).size > 1) parts.push(`ledger of ${w}: ${v.map(([n, x]) => `${n}=${x.split('/')[0]}`).join(' ')} rows`);
  }
  return parts.join('; ');
}
