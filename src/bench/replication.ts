/**
 * What a workload needs from a replication engine, whichever it is. A workload describes its nodes,
 * links and data (a Topology); openReplication starts fresh servers, prepares them identically and
 * wires the engine with every link stopped (open-replication.ts), so that the same code measures pgbidi and PostgreSQL's
 * native logical replication:
 *
 *   open ──(load written while nothing applies: backlog)──> readyToStart ──clock──> start ──> caught up
 *                                                                                   │
 *                                        (live: load written while it streams) <────┘
 *                                                      │
 *                                                      └──> stop ──(a backlog again)──> readyToStart ──> start
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { PostgresServer } from '../pg-server/postgres-server.js';
import { BenchError } from './bench-error.js';
import type { Engine } from './bench-results.js';
import { now, POLL_MS } from './bench-settings.js';

/** A directed link: `target` applies what is written on `source`. */
export interface Link {
  readonly source: string;
  readonly target: string;
}

export interface Topology {
  /** Node names; the first is the source of one-way workloads ("a"). */
  readonly nodes: readonly string[];
  readonly links: readonly Link[];
  /** The workload's tables in public (native publishes them and the marks table; pgbidi replicates public.*). */
  readonly tables: readonly string[];
  /** Load pg_stat_statements on every node (W2 and the observability comparison). */
  readonly statementStats: boolean;
  /** Creates the workload's tables and data on node `index`, before the engine is wired. */
  readonly prepare: (server: PostgresServer, index: number) => Promise<void>;
}

/** CPU and memory of what applies on one node, read right when the applied data became visible. */
export interface ApplierUsage {
  /**
   * CPU seconds of everything applying on the node: pgbidi's agent process (since it answered
   * /status) plus its backends on the node; native's apply workers (since they started).
   */
  readonly applyCpuSeconds: number | null;
  /** pgbidi only: the agent process alone. */
  readonly agentCpuSeconds: number | null;
  /** pgbidi only: the agent's peak resident set size (VmHWM), bytes. */
  readonly agentPeakRssBytes: number | null;
}

/**
 * Where a backlog's clock starts. native: right before ALTER SUBSCRIPTION … ENABLE (the worker's
 * launch and connect are measured). pgbidi: when the agent process first answers /status with its node, right
 * before its links start (their connect and slot start are measured; spawning Node and loading
 * modules, a one-off cost of each agent start, is reported apart as startupSeconds).
 */
export interface Started {
  /** now() at which the clock starts. */
  readonly clockAt: number;
  /** pgbidi: spawn → /status of the slowest agent started; native: null. */
  readonly startupSeconds: number | null;
}

export interface Replication {
  readonly engine: Engine;
  server(node: string): PostgresServer;
  /** Waits out what must pass before start() and must not be measured (native: the launcher's restart throttle). */
  readyToStart(): Promise<void>;
  /**
   * Starts every link's applier; resolves once they are started, not once they caught up, with the
   * moment the measured clock starts (see Started).
   */
  start(): Promise<Started>;
  /**
   * Stops every link's applier and resolves once none runs (what its source writes from then on is a
   * backlog again); start() starts them anew.
   */
  stop(timeoutMs: number): Promise<void>;
  /** Resolves when every link streams from its source (its walsender is in state 'streaming'). */
  waitStreaming(timeoutMs: number): Promise<void>;
  usage(node: string): Promise<ApplierUsage>;
  /** The appliers' state, for a failure message. */
  describe(): Promise<string>;
  destroy(): Promise<void>;
}

/** Whether some node both sends and receives: native then needs origin = none (PostgreSQL 16+). */
export function hasCycle(links: readonly Link[]): boolean {
  const targets = new Set(links.map((l) => l.target));
  return links.some((l) => targets.has(l.source));
}

/** Every ordered pair of distinct nodes: a full mesh. */
export function fullMesh(nodes: readonly string[]): Link[] {
  return nodes.flatMap((source) => nodes.filter((t) => t !== source).map((target) => ({ source, target })));
}

/** Waits until `source` has a walsender for `applicationName` in state 'streaming'. */
export async function waitForWalsender(source: PostgresServer, applicationName: string, timeoutMs: number): Promise<void> {
  const deadline = now() + timeoutMs;
  for (;;) {
    const rows = await source.query(`SELECT 1 FROM pg_stat_replication WHERE application_name = $1 AND state = 'streaming'`, [applicationName]);
    if (rows.length > 0) return;
    if (now() > deadline) {
      throw new BenchError('BENCH_TIMEOUT', `no streaming walsender for ${applicationName} on ${source.name} after ${Math.round(timeoutMs / 1000)} s`);
    }
    await sleep(POLL_MS * 5);
  }
}
