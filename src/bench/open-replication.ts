/** Starts a workload's servers and wires one engine on them (see replication.ts). */
import { LocalCluster } from '../testbed/local-cluster.js';
import type { Engine, Variant } from './bench-results.js';
import { BENCH_DATABASE, BENCH_SERVER_SETTINGS, commonNodeSql, STATEMENT_STATS_SETTINGS } from './bench-settings.js';
import { NativeReplication } from './native-replication.js';
import { PgbidiReplication } from './pgbidi-replication.js';
import type { Replication, Topology } from './replication.js';

export interface OpenOptions {
  readonly engine: Engine;
  readonly variant: Variant;
  readonly binDir: string;
  readonly major: number;
  readonly topology: Topology;
}

/** Fresh servers, prepared, with the engine wired and nothing applying yet. */
export async function openReplication(options: OpenOptions): Promise<Replication> {
  const { topology } = options;
  const cluster = await LocalCluster.start({
    binDir: options.binDir,
    nodes: topology.nodes,
    database: BENCH_DATABASE,
    schema: commonNodeSql(topology.statementStats),
    settings: { ...BENCH_SERVER_SETTINGS, ...(topology.statementStats ? STATEMENT_STATS_SETTINGS : {}) },
  });
  try {
    for (const [index, node] of topology.nodes.entries()) await topology.prepare(cluster.server(node), index);
    return options.engine === 'native'
      ? await NativeReplication.open(cluster, topology, options.major)
      : await PgbidiReplication.open(cluster, topology, options.variant);
  } catch (err) {
    await cluster.destroy();
    throw err;
  }
}
