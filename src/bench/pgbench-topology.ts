/** The pgbench-based workloads' topology (W2, W3, the mesh, the observability comparison). */
import type { PostgresServer } from '../pg-server/postgres-server.js';
import { initPgbench, PGBENCH_TABLES, pgbenchFingerprint } from './pgbench.js';
import type { Link, Replication, Topology } from './replication.js';
import { allEqual } from './workload-runner.js';
import type { RunContext } from './workload-runner.js';

export function pgbenchTopology(ctx: RunContext, nodes: readonly string[], links: readonly Link[], statementStats: boolean): Topology {
  return {
    nodes,
    links,
    tables: PGBENCH_TABLES,
    statementStats,
    prepare: (server: PostgresServer, index: number) => initPgbench(server, ctx.sizes.pgbenchScale, index, nodes.length, ctx.timeoutMs),
  };
}

/** md5 of the 4 pgbench tables in key order, equal on every node. */
export function pgbenchConverged(repl: Replication, nodes: readonly string[]): Promise<boolean> {
  return allEqual(
    nodes.map((n) => repl.server(n)),
    pgbenchFingerprint,
  );
}
