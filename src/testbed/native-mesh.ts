import { quoteIdent, quoteLiteral } from '../util/sql.js';
import type { LocalCluster } from './local-cluster.js';

/**
 * PostgreSQL's own bidirectional replication for comparison: a full mesh of publications and
 * `origin = none` subscriptions (PostgreSQL 16+), with no pgbidi agent involved.
 */
export async function setupNativeMesh(cluster: LocalCluster, nodes: readonly string[], table: string): Promise<void> {
  for (const n of nodes) await cluster.query(n, `CREATE PUBLICATION native_pub FOR TABLE ${table}`);
  for (const target of nodes) {
    for (const source of nodes) {
      if (source === target) continue;
      const conn = `host=127.0.0.1 port=${cluster.server(source).port} dbname=${cluster.database} user=postgres`;
      await cluster.query(
        target,
        `CREATE SUBSCRIPTION ${quoteIdent(`native_${source}_to_${target}`)} CONNECTION ${quoteLiteral(conn)}
           PUBLICATION native_pub WITH (origin = none, copy_data = false)`,
      );
    }
  }
}

export interface NativeConflictReport {
  /** Sum of pg_stat_subscription_stats counters per node (PostgreSQL 18 has the confl_* columns). */
  readonly stats: Record<string, Record<string, number>>;
}

export async function nativeConflictStats(cluster: LocalCluster, nodes: readonly string[]): Promise<NativeConflictReport> {
  const stats: Record<string, Record<string, number>> = {};
  for (const n of nodes) {
    const rows = await cluster.query<Record<string, string | number | null>>(n, `SELECT * FROM pg_stat_subscription_stats`);
    const sums: Record<string, number> = {};
    for (const r of rows) {
      for (const [k, v] of Object.entries(r)) {
        if ((k.startsWith('confl_') || k.endsWith('error_count')) && v !== null) sums[k] = (sums[k] ?? 0) + Number(v);
      }
    }
    stats[n] = sums;
  }
  return { stats };
}
