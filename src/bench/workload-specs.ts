/**
 * Pure: what every workload measures, as data. The runners (w1-bulk.ts …) fill these figures in; the
 * summary, the report and the targets read them. A figure's key is stable (it is the JSON key too).
 */
import type { Engine, Side, WorkloadId } from './bench-results.js';

export type Unit = 's' | 'rows/s' | 'txn/s' | 'µs/txn' | 'µs/row' | 'per txn' | 'MiB' | 'txn';
/** Which way is better; 'none' for counts that only give context (no ratio is shown). */
export type Better = 'higher' | 'lower' | 'none';

export interface FigureSpec {
  readonly key: string;
  readonly label: string;
  readonly unit: Unit;
  readonly better: Better;
  /** Only these engines have the figure (pgbidi's agent process, pg_stat_statements of its statements). */
  readonly engines?: readonly Engine[];
}

export type W1Mode = 'backlog' | 'streaming';

/** Workload sizes: the full run's defaults or --quick's, each overridable on the command line. */
export interface Sizes {
  readonly w1Rows: number;
  readonly w1TxnRows: number;
  readonly w1Modes: readonly W1Mode[];
  /** pgbench -T of W2, W3, the mesh and the W2-based comparisons (obs, storm). */
  readonly pgbenchSeconds: number;
  readonly pgbenchScale: number;
  /** pgbench -R (transactions/s over all clients of a node); null: unthrottled. */
  readonly pgbenchRate: number | null;
  readonly w4Rows: number;
  readonly w5Transactions: number;
  /** How long the single client of the synchronous-link comparison commits. */
  readonly syncSeconds: number;
}

export const FULL_SIZES: Sizes = Object.freeze<Sizes>({
  w1Rows: 200_000,
  w1TxnRows: 1000,
  w1Modes: ['backlog', 'streaming'],
  pgbenchSeconds: 30,
  pgbenchScale: 10,
  pgbenchRate: null,
  w4Rows: 1_000_000,
  w5Transactions: 100_000,
  syncSeconds: 15,
});

/**
 * --quick: proves in CI that every figure can be measured, in minutes. pgbench is throttled so that a
 * slow applier's backlog stays small; nothing measured at these sizes says anything about speed.
 */
export const QUICK_SIZES: Sizes = Object.freeze<Sizes>({
  w1Rows: 20_000,
  w1TxnRows: 1000,
  w1Modes: ['backlog', 'streaming'],
  pgbenchSeconds: 3,
  pgbenchScale: 1,
  pgbenchRate: 100,
  w4Rows: 50_000,
  w5Transactions: 5000,
  syncSeconds: 2,
});

export interface WorkloadSpec {
  readonly id: WorkloadId;
  /** One line: what runs, at these sizes. */
  readonly title: (sizes: Sizes) => string;
  readonly figures: readonly FigureSpec[];
  /** The ratio column is subject ÷ baseline, per repetition, then the median. */
  readonly baseline: Side;
  readonly subject: Side;
  /** Figures printed on the progress line after each run. */
  readonly headline: readonly string[];
  /** Show "overhead %" (how much worse subject is than baseline) beside the ratio. */
  readonly overhead?: boolean;
  /** The statement profile of the W2 backlog is part of the run. */
  readonly profile?: boolean;
}

const NATIVE: Side = { engine: 'native', variant: 'default' };
const PGBIDI: Side = { engine: 'pgbidi', variant: 'default' };
const PGBIDI_ONLY: readonly Engine[] = ['pgbidi'];

function lagFigures(prefix: string, what: string): FigureSpec[] {
  return [
    { key: `${prefix}.lagP50`, label: `${what} heartbeat lag p50`, unit: 's', better: 'lower' },
    { key: `${prefix}.lagP99`, label: `${what} heartbeat lag p99`, unit: 's', better: 'lower' },
    { key: `${prefix}.lagMax`, label: `${what} heartbeat lag max`, unit: 's', better: 'lower' },
    { key: `${prefix}.catchUpSeconds`, label: `${what} catch-up: load end -> fence visible`, unit: 's', better: 'lower' },
  ];
}

const pgbenchLoad = (s: Sizes, clients: string): string =>
  `pgbench -n ${clients} -T ${s.pgbenchSeconds}${s.pgbenchRate === null ? '' : ` -R ${s.pgbenchRate}`}, scale ${s.pgbenchScale}`;

const W2_FIGURES: readonly FigureSpec[] = [
  { key: 'backlog.transactions', label: 'backlog: pgbench transactions on A', unit: 'txn', better: 'none' },
  { key: 'backlog.sourceTps', label: 'backlog: pgbench TPS on A (nothing applying)', unit: 'txn/s', better: 'none' },
  { key: 'backlog.agentStartSeconds', label: 'backlog: agent process spawn -> /status (before the clock)', unit: 's', better: 'lower', engines: PGBIDI_ONLY },
  { key: 'backlog.catchUpSeconds', label: 'backlog catch-up: start -> fence on B', unit: 's', better: 'lower' },
  { key: 'backlog.txnPerSecond', label: 'backlog: transactions/s applied', unit: 'txn/s', better: 'higher' },
  { key: 'backlog.applyCpuUsPerTxn', label: 'backlog: CPU of all that applies on B', unit: 'µs/txn', better: 'lower' },
  { key: 'backlog.agentCpuUsPerTxn', label: 'backlog: CPU of the agent process', unit: 'µs/txn', better: 'lower', engines: PGBIDI_ONLY },
  { key: 'profile.serverUsPerTxn', label: 'profiled backlog: server exec+plan time on B', unit: 'µs/txn', better: 'lower', engines: PGBIDI_ONLY },
  { key: 'profile.statementsPerTxn', label: 'profiled backlog: top-level statements on B', unit: 'per txn', better: 'lower', engines: PGBIDI_ONLY },
  { key: 'profile.callsPerTxn', label: 'profiled backlog: calls incl. nested on B', unit: 'per txn', better: 'lower', engines: PGBIDI_ONLY },
  { key: 'profile.plansPerTxn', label: 'profiled backlog: plans on B', unit: 'per txn', better: 'lower', engines: PGBIDI_ONLY },
  { key: 'live.transactions', label: 'live: pgbench transactions on A', unit: 'txn', better: 'none' },
  { key: 'live.sourceTps', label: 'live: pgbench TPS on A', unit: 'txn/s', better: 'higher' },
  ...lagFigures('live', 'live: A -> B'),
];

/**
 * The conflict storm's own figures: how many conflicts each phase logged, and what the statements
 * that write the conflict log (the INSERTs into pgbidi.conflicts, nested in the apply procedure or
 * sent by the statement path) cost the server, against which the rest of the storm's cost is read.
 */
const STORM_FIGURES: readonly FigureSpec[] = [
  ...W2_FIGURES,
  { key: 'backlog.conflictsPerTxn', label: 'backlog: conflicts logged on B', unit: 'per txn', better: 'none', engines: PGBIDI_ONLY },
  { key: 'live.conflictsPerTxn', label: 'live: conflicts logged on B', unit: 'per txn', better: 'none', engines: PGBIDI_ONLY },
  { key: 'profile.conflictsPerTxn', label: 'profiled backlog: conflicts logged on B', unit: 'per txn', better: 'none', engines: PGBIDI_ONLY },
  {
    key: 'profile.conflictLogUsPerTxn',
    label: 'profiled backlog: server time of the conflict log INSERTs on B',
    unit: 'µs/txn',
    better: 'none',
    engines: PGBIDI_ONLY,
  },
];

export const WORKLOADS: Readonly<Record<WorkloadId, WorkloadSpec>> = {
  w1: {
    id: 'w1',
    title: (s) =>
      `W1 bulk: ${s.w1Rows.toLocaleString('en-US')} rows in ${s.w1TxnRows.toLocaleString('en-US')}-row transactions on A, applied on B (${s.w1Modes.join(', ')})`,
    figures: [
      { key: 'backlog.rowsPerSecond', label: 'backlog rows/s: start -> all rows on B', unit: 'rows/s', better: 'higher' },
      { key: 'backlog.applyRowsPerSecond', label: 'backlog rows/s: first -> last row on B', unit: 'rows/s', better: 'higher' },
      { key: 'backlog.seconds', label: 'backlog: start -> all rows on B', unit: 's', better: 'lower' },
      { key: 'backlog.firstRowSeconds', label: 'backlog: start -> first row on B', unit: 's', better: 'lower' },
      { key: 'backlog.applyCpuUsPerRow', label: 'backlog: CPU of all that applies on B', unit: 'µs/row', better: 'lower' },
      { key: 'backlog.agentCpuUsPerRow', label: 'backlog: CPU of the agent process', unit: 'µs/row', better: 'lower', engines: PGBIDI_ONLY },
      { key: 'streaming.rowsPerSecond', label: 'streaming rows/s: first commit on A -> all rows on B', unit: 'rows/s', better: 'higher' },
      { key: 'streaming.tailSeconds', label: 'streaming: last commit on A -> all rows on B', unit: 's', better: 'lower' },
      { key: 'streaming.sourceInsertSeconds', label: 'streaming: insert time on A', unit: 's', better: 'lower' },
      { key: 'streaming.applyCpuUsPerRow', label: 'streaming: CPU of all that applies on B', unit: 'µs/row', better: 'lower' },
    ],
    baseline: NATIVE,
    subject: PGBIDI,
    headline: ['backlog.rowsPerSecond', 'streaming.rowsPerSecond'],
  },
  w2: {
    id: 'w2',
    title: (s) => `W2 OLTP: ${pgbenchLoad(s, '-N -c 4 -j 2')} on A; backlog (applier stopped during the load), then live`,
    figures: W2_FIGURES,
    baseline: NATIVE,
    subject: PGBIDI,
    headline: ['backlog.catchUpSeconds', 'backlog.txnPerSecond', 'live.sourceTps', 'live.lagP99'],
    profile: true,
  },
  w3: {
    id: 'w3',
    title: (s) => `W3 bidirectional: ${pgbenchLoad(s, '-N-like -c 2 -j 1')} on A and on B at once, disjoint accounts (A the lower half, B the upper)`,
    figures: [
      { key: 'a.tps', label: 'pgbench TPS on A', unit: 'txn/s', better: 'higher' },
      { key: 'b.tps', label: 'pgbench TPS on B', unit: 'txn/s', better: 'higher' },
      ...lagFigures('ab', 'A -> B'),
      ...lagFigures('ba', 'B -> A'),
    ],
    baseline: NATIVE,
    subject: PGBIDI,
    headline: ['ab.lagP99', 'ba.lagP99', 'ab.catchUpSeconds', 'ba.catchUpSeconds'],
  },
  w4: {
    id: 'w4',
    title: (s) => `W4 large transaction: one ${s.w4Rows.toLocaleString('en-US')}-row INSERT transaction on A (3 short columns); backlog, then streaming`,
    figures: [
      { key: 'backlog.seconds', label: 'backlog: start -> all rows on B', unit: 's', better: 'lower' },
      { key: 'backlog.rowsPerSecond', label: 'backlog rows/s: start -> all rows on B', unit: 'rows/s', better: 'higher' },
      { key: 'streaming.secondsAfterCommit', label: 'streaming: commit on A -> all rows on B', unit: 's', better: 'lower' },
      { key: 'peakRssMiB', label: 'agent peak RSS (VmHWM), both phases', unit: 'MiB', better: 'lower', engines: PGBIDI_ONLY },
      { key: 'sourceInsertSeconds', label: 'insert + commit time on A (backlog)', unit: 's', better: 'none' },
    ],
    baseline: NATIVE,
    subject: PGBIDI,
    headline: ['backlog.seconds', 'streaming.secondsAfterCommit', 'peakRssMiB'],
  },
  w5: {
    id: 'w5',
    title: (s) => `W5 single-row transactions: ${s.w5Transactions.toLocaleString('en-US')} one-row INSERT transactions on A, backlog`,
    figures: [
      { key: 'txnPerSecond', label: 'apply txn/s: first -> last row on B', unit: 'txn/s', better: 'higher' },
      { key: 'txnPerSecondFromStart', label: 'apply txn/s: start -> last row on B', unit: 'txn/s', better: 'higher' },
      { key: 'firstRowSeconds', label: 'start -> first row on B', unit: 's', better: 'lower' },
      { key: 'sourceSeconds', label: 'time A took to commit them', unit: 's', better: 'none' },
    ],
    baseline: NATIVE,
    subject: PGBIDI,
    headline: ['txnPerSecond', 'txnPerSecondFromStart'],
  },
  mesh: {
    id: 'mesh',
    title: (s) =>
      `3-node mesh: ${pgbenchLoad(s, '-N -c 4 -j 2')} on A, live; pgbidi: every node a peer of every other; native: A -> B and A -> C (a full origin = none mesh on 16+)`,
    figures: [{ key: 'sourceTps', label: 'pgbench TPS on A', unit: 'txn/s', better: 'higher' }, ...lagFigures('b', 'A -> B'), ...lagFigures('c', 'A -> C')],
    baseline: NATIVE,
    subject: PGBIDI,
    headline: ['b.lagP99', 'c.lagP99', 'b.catchUpSeconds', 'c.catchUpSeconds'],
  },
  obs: {
    id: 'obs',
    title: (s) =>
      `Observability on vs off: W2 (${pgbenchLoad(s, '-N -c 4 -j 2')}) with pgbidi twice: off = silent logs, no tracing, no scrape; ` +
      `on = info logs to a file, a trace per transaction over OTLP/HTTP, /metrics scraped every second`,
    figures: W2_FIGURES,
    baseline: { engine: 'pgbidi', variant: 'observability-off' },
    subject: { engine: 'pgbidi', variant: 'observability-on' },
    headline: ['backlog.catchUpSeconds', 'live.lagP99'],
    overhead: true,
    profile: true,
  },
  storm: {
    id: 'storm',
    title: (s) =>
      `Conflict storm: W2 (${pgbenchLoad(s, '-N -c 4 -j 2')}) with pgbidi twice, everything on as in obs: free = B's accounts ` +
      `rewritten on B before the group began (no conflict), storm = rewritten on B after it began (each first update of an ` +
      `account is an update_origin_differs, applied and logged)`,
    figures: STORM_FIGURES,
    baseline: { engine: 'pgbidi', variant: 'conflict-free' },
    subject: { engine: 'pgbidi', variant: 'conflict-storm' },
    headline: ['backlog.catchUpSeconds', 'backlog.conflictsPerTxn', 'live.lagP99'],
    overhead: true,
    profile: true,
  },
  sync: {
    id: 'sync',
    title: (s) =>
      `Synchronous link: one client on A commits one-row INSERTs for ${s.syncSeconds} s while B applies; ` +
      `B's link from A asynchronous, then synchronous (every commit on A waits until B applied and flushed it)`,
    figures: [
      { key: 'commits', label: 'commits on A', unit: 'txn', better: 'none' },
      { key: 'tps', label: 'commits/s on A (one client)', unit: 'txn/s', better: 'higher' },
      { key: 'commitP50', label: 'commit latency on A p50', unit: 's', better: 'lower' },
      { key: 'commitP99', label: 'commit latency on A p99', unit: 's', better: 'lower' },
      { key: 'commitMax', label: 'commit latency on A max', unit: 's', better: 'lower' },
      { key: 'catchUpSeconds', label: 'load end -> all rows on B', unit: 's', better: 'lower' },
    ],
    baseline: { engine: 'pgbidi', variant: 'asynchronous' },
    subject: { engine: 'pgbidi', variant: 'synchronous' },
    headline: ['commitP50', 'commitP99', 'tps'],
  },
};

/** Whether `engine` has the figure at all. */
export function figureApplies(figure: FigureSpec, engine: Engine): boolean {
  return figure.engines === undefined || figure.engines.includes(engine);
}

/** Label of a side in tables: the engine, or the variant when both sides are one engine. */
export function sideLabel(spec: WorkloadSpec, which: 'baseline' | 'subject'): string {
  const side = spec[which];
  if (spec.baseline.engine !== spec.subject.engine) return side.engine;
  return side.variant.replace('observability-', 'obs ').replace('asynchronous', 'async').replace('synchronous', 'sync').replace('conflict-', '');
}
