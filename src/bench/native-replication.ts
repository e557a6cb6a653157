/**
 * PostgreSQL's own logical replication: a publication of the workload's tables on every source, and
 * one subscription per link on its target, WITH (copy_data = false) and, where a node both sends and
 * receives, origin = none (PostgreSQL 16+). All other options stay at their defaults (so the apply
 * worker commits with synchronous_commit off, as pgbidi's apply session does).
 *
 * Subscriptions are created disabled (the slot is created then, so the backlog is retained) and
 * ENABLEd by start(). The launcher starts workers at most once per wal_retrieve_retry_interval (5 s):
 * per subscription since PostgreSQL 16 (a subscription that never ran starts at once), and per
 * launcher before, where every subscription DDL wakes the launcher and restarts that clock. On 15,
 * readyToStart() therefore waits that long after the last DDL, before the clock starts, so that
 * start() is never throttled.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { PostgresServer } from '../pg-server/postgres-server.js';
import type { LocalCluster } from '../testbed/local-cluster.js';
import { quoteIdent, quoteLiteral } from '../util/sql.js';
import { BenchError } from './bench-error.js';
import { BENCH_DATABASE, driverClient, MARKS_TABLE, now } from './bench-settings.js';
import { backendCpuSeconds } from './proc-stats.js';
import { hasCycle, waitForWalsender } from './replication.js';
import type { ApplierUsage, Link, Replication, Started, Topology } from './replication.js';

const PUBLICATION = 'bench_pub';
/** Margin on top of wal_retrieve_retry_interval before ENABLE. */
const THROTTLE_MARGIN_MS = 500;

/** Also the application_name of its walsender on the source. */
export function subscriptionName(link: Link): string {
  return `bench_${link.source}_to_${link.target}`;
}

export class NativeReplication implements Replication {
  readonly engine = 'native' as const;
  private readonly lastDdlAt = new Map<string, number>();

  private constructor(
    private readonly cluster: LocalCluster,
    private readonly topology: Topology,
    private readonly major: number,
  ) {}

  static async open(cluster: LocalCluster, topology: Topology, major: number): Promise<NativeReplication> {
    const cyclic = hasCycle(topology.links);
    if (cyclic && major < 16) {
      throw new BenchError('BENCH_UNEXPECTED', `native replication in both directions needs origin = none (PostgreSQL 16+), not ${major}`);
    }
    const replication = new NativeReplication(cluster, topology, major);
    const tables = [...topology.tables, MARKS_TABLE].map((t) => `public.${quoteIdent(t)}`).join(', ');
    for (const source of new Set(topology.links.map((l) => l.source))) {
      await cluster.server(source).query(`CREATE PUBLICATION ${PUBLICATION} FOR TABLE ${tables}`, [], BENCH_DATABASE);
    }
    for (const link of topology.links) {
      const conn = cluster.server(link.source).connectionString(BENCH_DATABASE);
      await cluster.server(link.target).query(
        `CREATE SUBSCRIPTION ${quoteIdent(subscriptionName(link))} CONNECTION ${quoteLiteral(conn)} PUBLICATION ${PUBLICATION}
           WITH (copy_data = false, enabled = false${cyclic ? ', origin = none' : ''})`,
        [],
        BENCH_DATABASE,
      );
      replication.lastDdlAt.set(link.target, now());
    }
    return replication;
  }

  server(node: string): PostgresServer {
    return this.cluster.server(node);
  }

  async readyToStart(): Promise<void> {
    if (this.major >= 16) return;
    for (const [node, at] of this.lastDdlAt) {
      const rows = await this.server(node).query<{ ms: number }>(`SELECT setting::int AS ms FROM pg_settings WHERE name = 'wal_retrieve_retry_interval'`);
      await sleep(Math.max(0, at + (rows[0]?.ms ?? 5000) + THROTTLE_MARGIN_MS - now()));
    }
  }

  async start(): Promise<Started> {
    const clockAt = now();
    for (const link of this.topology.links) {
      // As the driver role: on the applying node this statement must not count as the applier's.
      const client = await driverClient(this.server(link.target));
      try {
        await client.query(`ALTER SUBSCRIPTION ${quoteIdent(subscriptionName(link))} ENABLE`);
      } finally {
        await client.end().catch(() => undefined);
      }
    }
    return { clockAt, startupSeconds: null };
  }

  async stop(timeoutMs: number): Promise<void> {
    const deadline = now() + timeoutMs;
    for (const link of this.topology.links) {
      const client = await driverClient(this.server(link.target));
      try {
        await client.query(`ALTER SUBSCRIPTION ${quoteIdent(subscriptionName(link))} DISABLE`);
        this.lastDdlAt.set(link.target, now());
        // DISABLE returns before the worker exits (it notices at its next loop).
        for (;;) {
          const r = await client.query(`SELECT 1 FROM pg_stat_subscription WHERE subname = $1 AND pid IS NOT NULL`, [subscriptionName(link)]);
          if (!r.rowCount) break;
          if (now() > deadline) throw new BenchError('BENCH_TIMEOUT', `the apply worker of ${subscriptionName(link)} did not exit after DISABLE`);
          await sleep(20);
        }
      } finally {
        await client.end().catch(() => undefined);
      }
    }
  }

  async waitStreaming(timeoutMs: number): Promise<void> {
    for (const link of this.topology.links) await waitForWalsender(this.server(link.source), subscriptionName(link), timeoutMs);
  }

  async usage(node: string): Promise<ApplierUsage> {
    const client = await driverClient(this.server(node));
    try {
      // Leader apply workers, and parallel apply workers on 16+ (any running for a large transaction).
      const r = await client.query<{ pid: number }>(`SELECT pid FROM pg_stat_subscription WHERE pid IS NOT NULL`);
      const cpu = r.rows.map((row) => backendCpuSeconds(row.pid));
      const applyCpuSeconds = cpu.length && cpu.every((c) => c !== null) ? cpu.reduce<number>((s, c) => s + (c ?? 0), 0) : null;
      return { applyCpuSeconds, agentCpuSeconds: null, agentPeakRssBytes: null };
    } finally {
      await client.end().catch(() => undefined);
    }
  }

  async describe(): Promise<string> {
    const parts: string[] = [];
    for (const node of new Set(this.topology.links.map((l) => l.target))) {
      const rows = await this.server(node)
        .query<{ subname: string; pid: number | null; received_lsn: string | null }>(
          `SELECT subname, pid, received_lsn::text FROM pg_stat_subscription`,
          [],
          BENCH_DATABASE,
        )
        .catch(() => []);
      parts.push(...rows.map((r) => `${r.subname}: worker ${r.pid ?? 'not running'}, received ${r.received_lsn ?? '-'}`));
    }
    return parts.join('; ');
  }

  async destroy(): Promise<void> {
    // Subscribers first, so that no apply worker retries against a stopped publisher.
    const targets = new Set(this.topology.links.map((l) => l.target));
    for (const node of targets)
      await this.server(node)
        .stop()
        .catch(() => undefined);
    await this.cluster.destroy();
  }
}
