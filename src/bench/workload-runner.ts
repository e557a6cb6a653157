/**
 * What every workload runner gets and the frame it runs in: fresh servers wired by one engine,
 * always destroyed, with the appliers' state added to the message of anything that went wrong.
 */
import type { PostgresServer } from '../pg-server/postgres-server.js';
import { BENCH_DATABASE } from './bench-settings.js';
import { BenchError, describeError } from './bench-error.js';
import type { RunRecorder, Side } from './bench-results.js';
import { openReplication } from './open-replication.js';
import type { Replication, Topology } from './replication.js';
import type { Sizes } from './workload-specs.js';

export interface RunContext {
  readonly binDir: string;
  readonly major: number;
  readonly rep: number;
  readonly side: Side;
  readonly sizes: Sizes;
  /** Limit of every wait for data to arrive (--timeout-s). */
  readonly timeoutMs: number;
}

export type WorkloadRunner = (ctx: RunContext, rec: RunRecorder) => Promise<void>;

/** Opens the topology for ctx's engine, runs `body`, and destroys the servers whatever happens. */
export async function withReplication(ctx: RunContext, rec: RunRecorder, topology: Topology, body: (repl: Replication) => Promise<void>): Promise<void> {
  const repl = await openReplication({ engine: ctx.side.engine, variant: ctx.side.variant, binDir: ctx.binDir, major: ctx.major, topology });
  try {
    rec.version(repl.server(topology.nodes[0] as string).versionNum);
    await body(repl);
  } catch (err) {
    const state = await repl.describe().catch(() => '');
    const message = err instanceof BenchError ? err.message : describeError(err);
    throw new BenchError(err instanceof BenchError ? err.code : 'BENCH_UNEXPECTED', `${message}${state ? ` [appliers: ${state}]` : ''}`, { cause: err });
  } finally {
    await repl.destroy();
  }
}

/** Two nodes, A applied on B, one table created on both with `tableSql`: the W1, W4 and W5 layout. */
export function oneTableTopology(table: string, tableSql: string): Topology {
  return {
    nodes: ['a', 'b'],
    links: [{ source: 'a', target: 'b' }],
    tables: [table],
    statementStats: false,
    prepare: async (server: PostgresServer) => {
      await server.query(tableSql, [], BENCH_DATABASE);
    },
  };
}

/** Row count and a content hash (rows in id order) of one table: equal on every node once converged. */
export async function tableFingerprint(server: PostgresServer, table: string): Promise<string> {
  const rows = await server.query<{ n: number; md5: string | null }>(
    `SELECT count(*)::int AS n, md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t.id), '')) AS md5 FROM public.${table} t`,
    [],
    BENCH_DATABASE,
  );
  return `${rows[0]?.n ?? 0}:${rows[0]?.md5 ?? ''}`;
}

/** Whether every node holds what the first one holds, by `fingerprint`. */
export async function allEqual(servers: readonly PostgresServer[], fingerprint: (s: PostgresServer) => Promise<string>): Promise<boolean> {
  const prints = new Set<string>();
  for (const s of servers) prints.add(await fingerprint(s));
  return prints.size === 1;
}

/** µs per transaction from seconds, or null. */
export function microsPer(seconds: number | null, transactions: number): number | null {
  return seconds === null || transactions <= 0 ? null : (seconds * 1e6) / transactions;
}
