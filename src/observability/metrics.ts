import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { Metric, OpenMetricsContentType } from 'prom-client';
import { CONFLICT_TYPES, RESOLUTIONS } from '../conflict/conflict-types.js';
import type { ConflictType, Resolution } from '../conflict/conflict-types.js';
import { PeerHistogram } from './peer-histogram.js';

/**
 * The metric catalogue: one explicit registry per agent (no global registry), prefix pgbidi_, base
 * units in names, _total counters, bounded labels. Domain code never sees prom-client: it receives a
 * LinkMetrics handle.
 */

// parted: the peer left the group (pgbidi part); the link stays stopped until the agent restarts.
export const LINK_STATES = ['connecting', 'streaming', 'backoff', 'paused', 'error', 'stopped', 'parted'] as const;
export type LinkState = (typeof LINK_STATES)[number];

export const CHANGE_OPS = ['insert', 'update', 'delete', 'truncate'] as const;
export type ChangeOp = (typeof CHANGE_OPS)[number];

export const FILTER_REASONS = ['origin', 'operator_skip'] as const;
export type FilterReason = (typeof FILTER_REASONS)[number];

export const APPLY_ERROR_KINDS = ['connection', 'unique_violation', 'schema', 'timeout', 'serialization', 'resources', 'other'] as const;
export type ApplyErrorKind = (typeof APPLY_ERROR_KINDS)[number];

/** The conflict types that can end in the dead letters (a unique key other than the primary key). */
const UNIQUE_CONFLICT_TYPES: readonly ConflictType[] = ['insert_exists', 'update_exists', 'multiple_unique_conflicts'];

const DELAY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];
const DURATION_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 10];
/**
 * prom-client's default process metrics include three gauges with a `_total` suffix, which
 * `promtool check metrics` rejects (the suffix is reserved for counters in the exposition format's
 * naming rules). Each repeats the sum of a gauge exported by type next to it: sum(nodejs_active_handles)
 * and so on.
 */
const GAUGES_NAMED_AS_COUNTERS = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'];

const SIZE_BUCKETS = [1, 2, 5, 10, 50, 100, 500, 1000, 5000, 10000, 100000];

export interface MetricsOptions {
  readonly node: string;
  readonly version: string;
  readonly peers: readonly string[];
  readonly defaultMetrics?: boolean;
}

export class Metrics {
  /** Prometheus text format. */
  readonly registry = new Registry();
  /** The same metrics in OpenMetrics format, which is the one that carries exemplars. */
  readonly openMetrics: Registry = openMetricsRegistry();
  private readonly registries = [this.registry, this.openMetrics];
  private readonly handles = new Map<string, LinkMetrics>();
  /**
   * The apply path counts per transaction and per change; those counts reach prom-client here, when
   * a scrape reads the metrics (prom-client calls `collect` first), instead of one labelled update
   * per event: that cost showed in the agent's CPU profile at tens of thousands of transactions/s.
   */
  private readonly flush = (): void => {
    for (const h of this.handles.values()) h.flush();
  };

  readonly buildInfo = new Gauge({
    name: 'pgbidi_build_info',
    help: 'Agent build information (always 1).',
    labelNames: ['version', 'node', 'nodejs'],
    registers: this.registries,
  });
  readonly linkState = new Gauge({
    name: 'pgbidi_link_state',
    help: 'Current state of the link from a peer to this node (1 for the current state, 0 otherwise).',
    labelNames: ['peer', 'state'],
    registers: this.registries,
  });
  readonly linkConnected = new Gauge({
    name: 'pgbidi_link_connected',
    help: 'Whether the replication connection from the peer is streaming (1) or not (0).',
    labelNames: ['peer'],
    registers: this.registries,
  });
  readonly reconnects = new Counter({
    name: 'pgbidi_link_reconnects_total',
    help: 'Reconnect attempts after a link failure.',
    labelNames: ['peer'],
    registers: this.registries,
  });
  readonly transactionRestarts = new Counter({
    name: 'pgbidi_transaction_restarts_total',
    help: 'Remote transactions applied again from their start without the insert fast path: a plain INSERT of theirs met an existing key or a tombstone (expected, not a failure).',
    labelNames: ['peer'],
    registers: this.registries,
  });
  readonly receivedLsn = new Gauge({
    name: 'pgbidi_received_lsn_bytes',
    help: 'Last WAL position received from the peer, as a byte offset.',
    labelNames: ['peer'],
    registers: this.registries,
    collect: this.flush,
  });
  readonly appliedLsn = new Gauge({
    name: 'pgbidi_applied_lsn_bytes',
    help: 'Commit end position of the last peer transaction committed on this node, as a byte offset.',
    labelNames: ['peer'],
    registers: this.registries,
    collect: this.flush,
  });
  readonly confirmedLsn = new Gauge({
    name: 'pgbidi_confirmed_flush_lsn_bytes',
    help: 'Position last confirmed to the peer as durably applied, as a byte offset.',
    labelNames: ['peer'],
    registers: this.registries,
    collect: this.flush,
  });
  readonly changesReceived = new Counter({
    name: 'pgbidi_changes_received_total',
    help: 'Row changes decoded from the peer stream.',
    labelNames: ['peer', 'op'],
    registers: this.registries,
    collect: this.flush,
  });
  readonly changesApplied = new Counter({
    name: 'pgbidi_changes_applied_total',
    help: 'Row changes written on this node.',
    labelNames: ['peer', 'op'],
    registers: this.registries,
    collect: this.flush,
  });
  readonly changesFiltered = new Counter({
    name: 'pgbidi_changes_filtered_total',
    help: 'Row changes received but not applied, by reason (origin = loop prevention).',
    labelNames: ['peer', 'op', 'reason'],
    registers: this.registries,
  });
  readonly transactionsApplied = new Counter({
    name: 'pgbidi_transactions_applied_total',
    help: 'Peer transactions committed on this node.',
    labelNames: ['peer'],
    registers: this.registries,
    collect: this.flush,
  });
  readonly transactionsFiltered = new Counter({
    name: 'pgbidi_transactions_filtered_total',
    help: 'Peer transactions skipped, by reason (origin = it came from another node).',
    labelNames: ['peer', 'reason'],
    registers: this.registries,
  });
  readonly receivedBytes = new Counter({
    name: 'pgbidi_received_bytes_total',
    help: 'Replication payload bytes received from the peer.',
    labelNames: ['peer'],
    registers: this.registries,
    collect: this.flush,
  });
  readonly lag = new Gauge({
    name: 'pgbidi_replication_lag_seconds',
    help: 'Now minus the commit time of the oldest received but not yet applied peer transaction; 0 when caught up.',
    labelNames: ['peer'],
    registers: this.registries,
  });
  readonly lastAppliedCommit = new Gauge({
    name: 'pgbidi_last_applied_commit_timestamp_seconds',
    help: 'Peer commit time of the last applied transaction (Unix seconds).',
    labelNames: ['peer'],
    registers: this.registries,
    collect: this.flush,
  });
  readonly heartbeat = new Gauge({
    name: 'pgbidi_heartbeat_timestamp_seconds',
    help: 'Peer clock time carried by the last heartbeat message applied from the peer (Unix seconds).',
    labelNames: ['peer'],
    registers: this.registries,
  });
  readonly replicationDelay = new PeerHistogram(
    'pgbidi_transaction_replication_delay_seconds',
    'Per transaction: local commit time minus peer commit time.',
    DELAY_BUCKETS,
    { text: this.registry, openMetrics: this.openMetrics, exemplars: true },
  );
  readonly applyDuration = new PeerHistogram(
    'pgbidi_transaction_apply_duration_seconds',
    'Per transaction: time from local BEGIN to COMMIT.',
    DURATION_BUCKETS,
    { text: this.registry, openMetrics: this.openMetrics, exemplars: true },
  );
  readonly transactionChanges = new PeerHistogram('pgbidi_transaction_changes', 'Row changes per applied transaction.', SIZE_BUCKETS, {
    text: this.registry,
    openMetrics: this.openMetrics,
    exemplars: false,
  });
  readonly conflicts = new Counter({
    name: 'pgbidi_conflicts_total',
    help: 'Conflicts detected while applying peer changes, by type and resolution.',
    labelNames: ['peer', 'table', 'type', 'resolution'],
    registers: this.registries,
    collect: this.flush,
  });
  readonly applyErrors = new Counter({
    name: 'pgbidi_apply_errors_total',
    help: 'Failed apply attempts, by kind.',
    labelNames: ['peer', 'kind'],
    registers: this.registries,
  });
  readonly deadLetters = new Counter({
    name: 'pgbidi_dead_letters_total',
    help: 'Remote changes diverted to pgbidi.dead_letters, by table and reason (the conflict type).',
    labelNames: ['peer', 'table', 'reason'],
    registers: this.registries,
    collect: this.flush,
  });
  readonly deadLettersPending = new Gauge({
    name: 'pgbidi_dead_letters_pending',
    help: 'Dead letters (changes that violated a secondary unique constraint) waiting for an operator on this node.',
    registers: this.registries,
  });
  readonly conflictsUnresolved = new Gauge({
    name: 'pgbidi_conflicts_unresolved',
    help: 'Whether the link is halted by a conflict under the error policy and waits for `pgbidi resolve` (1) or not (0).',
    labelNames: ['peer'],
    registers: this.registries,
  });
  readonly tombstones = new Gauge({
    name: 'pgbidi_tombstones',
    help: 'Tombstones (deleted keys kept for conflict resolution) on this node.',
    registers: this.registries,
  });
  readonly tombstoneWatermark = new Gauge({
    name: 'pgbidi_tombstone_purge_watermark_timestamp_seconds',
    help: 'Tombstones deleted before this time (Unix seconds) have been purged; 0 until every link has applied a transaction.',
    registers: this.registries,
  });
  readonly clockSkew = new Gauge({
    name: 'pgbidi_clock_skew_seconds',
    help: 'How far the last peer commit time was ahead of the local clock (0 when behind); apply waits it out before committing.',
    labelNames: ['peer'],
    registers: this.registries,
  });
  readonly clockSkewExceeded = new Counter({
    name: 'pgbidi_clock_skew_exceeded_total',
    help: 'Peer transactions whose commit time was ahead of the local clock by more than replication.max_clock_skew_ms.',
    labelNames: ['peer'],
    registers: this.registries,
  });
  readonly queueChanges = new Gauge({
    name: 'pgbidi_queue_changes',
    help: 'Changes received and waiting to be applied.',
    labelNames: ['peer'],
    registers: this.registries,
    collect: this.flush,
  });
  readonly queueCapacity = new Gauge({
    name: 'pgbidi_queue_capacity_changes',
    help: 'Queue size at which the link stops reading from the peer (backpressure).',
    labelNames: ['peer'],
    registers: this.registries,
    collect: this.flush,
  });

  constructor(readonly options: MetricsOptions) {
    this.buildInfo.set({ version: options.version, node: options.node, nodejs: process.version }, 1);
    if (options.defaultMetrics !== false) {
      for (const register of this.registries) {
        collectDefaultMetrics({ register });
        for (const name of GAUGES_NAMED_AS_COUNTERS) register.removeSingleMetric(name);
      }
    }
    for (const peer of options.peers) this.link(peer);
    this.tombstones.set(0);
    this.deadLettersPending.set(0);
    this.tombstoneWatermark.set(0);
  }

  /** The handle for one link; every label combination it can produce starts at 0. */
  link(peer: string): LinkMetrics {
    let h = this.handles.get(peer);
    if (!h) {
      h = new LinkMetrics(this, peer);
      this.handles.set(peer, h);
    }
    return h;
  }
}

export class LinkMetrics {
  private readonly knownTables = new Set<string>();
  private readonly labels: { readonly peer: string };
  // Counted here between scrapes (see Metrics.flush).
  private readonly receivedPending = new Map<ChangeOp, number>();
  private readonly appliedPending = new Map<ChangeOp, number>();
  private receivedBytesPending = 0;
  private transactionsPending = 0;
  private readonly conflictsPending = new Map<string, { table: string; type: ConflictType; resolution: Resolution; n: number }>();
  private readonly lsn = { received: -1, applied: -1, confirmed: -1 };
  private lastCommit = -1;
  private queueDepth = -1;
  private queueMax = -1;

  constructor(
    private readonly m: Metrics,
    readonly peer: string,
  ) {
    const p = { peer };
    this.labels = p;
    for (const state of LINK_STATES) m.linkState.set({ peer, state }, 0);
    m.linkConnected.set(p, 0);
    m.conflictsUnresolved.set(p, 0);
    m.reconnects.inc(p, 0);
    m.transactionRestarts.inc(p, 0);
    m.receivedLsn.set(p, 0);
    m.appliedLsn.set(p, 0);
    m.confirmedLsn.set(p, 0);
    for (const op of CHANGE_OPS) {
      m.changesReceived.inc({ peer, op }, 0);
      m.changesApplied.inc({ peer, op }, 0);
      for (const reason of FILTER_REASONS) m.changesFiltered.inc({ peer, op, reason }, 0);
    }
    m.transactionsApplied.inc(p, 0);
    for (const reason of FILTER_REASONS) m.transactionsFiltered.inc({ peer, reason }, 0);
    m.receivedBytes.inc(p, 0);
    m.lag.set(p, 0);
    m.lastAppliedCommit.set(p, 0);
    m.heartbeat.set(p, 0);
    m.replicationDelay.zero(peer);
    m.applyDuration.zero(peer);
    m.transactionChanges.zero(peer);
    for (const kind of APPLY_ERROR_KINDS) m.applyErrors.inc({ peer, kind }, 0);
    m.clockSkew.set(p, 0);
    m.clockSkewExceeded.inc(p, 0);
    m.queueChanges.set(p, 0);
    m.queueCapacity.set(p, 0);
  }

  /** Hands what was counted since the last scrape to prom-client. */
  flush(): void {
    const m = this.m;
    const peer = this.peer;
    for (const [op, n] of this.receivedPending) if (n > 0) m.changesReceived.inc({ peer, op }, n);
    this.receivedPending.clear();
    for (const [op, n] of this.appliedPending) if (n > 0) m.changesApplied.inc({ peer, op }, n);
    this.appliedPending.clear();
    if (this.receivedBytesPending > 0) m.receivedBytes.inc(this.labels, this.receivedBytesPending);
    this.receivedBytesPending = 0;
    if (this.transactionsPending > 0) m.transactionsApplied.inc(this.labels, this.transactionsPending);
    this.transactionsPending = 0;
    for (const c of this.conflictsPending.values()) {
      m.conflicts.inc({ peer, table: c.table, type: c.type, resolution: c.resolution }, c.n);
      if (c.resolution === 'dead_letter') m.deadLetters.inc({ peer, table: c.table, reason: c.type }, c.n);
    }
    this.conflictsPending.clear();
    if (this.lsn.received >= 0) m.receivedLsn.set(this.labels, this.lsn.received);
    if (this.lsn.applied >= 0) m.appliedLsn.set(this.labels, this.lsn.applied);
    if (this.lsn.confirmed >= 0) m.confirmedLsn.set(this.labels, this.lsn.confirmed);
    this.lsn.received = this.lsn.applied = this.lsn.confirmed = -1;
    if (this.lastCommit >= 0) m.lastAppliedCommit.set(this.labels, this.lastCommit);
    this.lastCommit = -1;
    if (this.queueDepth >= 0) {
      m.queueChanges.set(this.labels, this.queueDepth);
      m.queueCapacity.set(this.labels, this.queueMax);
    }
    this.queueDepth = -1;
  }

  state(state: LinkState): void {
    for (const s of LINK_STATES) this.m.linkState.set({ peer: this.peer, state: s }, s === state ? 1 : 0);
    this.m.linkConnected.set(this.labels, state === 'streaming' || state === 'paused' ? 1 : 0);
    this.m.conflictsUnresolved.set(this.labels, state === 'error' ? 1 : 0);
  }

  reconnect(): void {
    this.m.reconnects.inc(this.labels);
  }

  transactionRestart(): void {
    this.m.transactionRestarts.inc(this.labels);
  }

  positions(p: { received?: bigint; applied?: bigint; confirmed?: bigint }): void {
    if (p.received !== undefined) this.lsn.received = Number(p.received);
    if (p.applied !== undefined) this.lsn.applied = Number(p.applied);
    if (p.confirmed !== undefined) this.lsn.confirmed = Number(p.confirmed);
  }

  appliedPosition(lsn: bigint): void {
    this.lsn.applied = Number(lsn);
  }

  received(op: ChangeOp, count = 1): void {
    this.receivedPending.set(op, (this.receivedPending.get(op) ?? 0) + count);
  }

  receivedBytes(bytes: number): void {
    this.receivedBytesPending += bytes;
  }

  applied(op: ChangeOp, count: number): void {
    if (count > 0) this.appliedPending.set(op, (this.appliedPending.get(op) ?? 0) + count);
  }

  filtered(op: ChangeOp, reason: FilterReason): void {
    this.m.changesFiltered.inc({ peer: this.peer, op, reason });
  }

  transactionFiltered(reason: FilterReason): void {
    this.m.transactionsFiltered.inc({ peer: this.peer, reason });
  }

  transactionApplied(t: { commitUnixSeconds: number; delaySeconds: number; durationSeconds: number; changes: number; traceId?: string }): void {
    this.transactionsPending++;
    this.lastCommit = t.commitUnixSeconds;
    this.m.replicationDelay.observe(this.peer, Math.max(0, t.delaySeconds), t.traceId);
    this.m.applyDuration.observe(this.peer, t.durationSeconds, t.traceId);
    this.m.transactionChanges.observe(this.peer, t.changes);
  }

  lag(seconds: number): void {
    this.m.lag.set(this.labels, Math.max(0, seconds));
  }

  heartbeat(unixSeconds: number): void {
    this.m.heartbeat.set(this.labels, unixSeconds);
  }

  table(table: string): void {
    if (this.knownTables.has(table)) return;
    this.knownTables.add(table);
    for (const type of CONFLICT_TYPES) {
      for (const resolution of RESOLUTIONS) this.m.conflicts.inc({ peer: this.peer, table, type, resolution }, 0);
    }
    for (const reason of UNIQUE_CONFLICT_TYPES) this.m.deadLetters.inc({ peer: this.peer, table, reason }, 0);
  }

  conflict(table: string, type: ConflictType, resolution: Resolution, count = 1): void {
    this.table(table);
    const key = `${table}\u0000${type}\u0000${resolution}`;
    const c = this.conflictsPending.get(key);
    if (c) c.n += count;
    else this.conflictsPending.set(key, { table, type, resolution, n: count });
  }

  /** A remote row this node's schema refused, set aside as a dead letter (apply/rejected-row.ts). */
  rowRejected(table: string, reason: string): void {
    this.m.deadLetters.inc({ peer: this.peer, table, reason });
  }

  clockSkew(seconds: number, exceeded: boolean): void {
    this.m.clockSkew.set(this.labels, Math.max(0, seconds));
    if (exceeded) this.m.clockSkewExceeded.inc(this.labels);
  }

  applyError(kind: ApplyErrorKind): void {
    this.m.applyErrors.inc({ peer: this.peer, kind });
  }

  queue(depth: number, capacity: number): void {
    this.queueDepth = depth;
    this.queueMax = capacity;
  }
}

function openMetricsRegistry(): Registry {
  const r = new OpenMetricsRegistry();
  r.setContentType(Registry.OPENMETRICS_CONTENT_TYPE);
  return r as unknown as Registry;
}

/**
 * prom-client's Registry.metrics() renames counters for OpenMetrics ('x_total' becomes 'x'; samples
 * get '_total' back) by assigning `name` on the metric object itself. The counters are shared with
 * the text registry, so after one OpenMetrics scrape the text format printed them without _total.
 * This registry holds a view of each counter instead: its own name to rename, the counter's values.
 */
class OpenMetricsRegistry extends Registry<OpenMetricsContentType> {
  override registerMetric<T extends string>(metric: Metric<T>): void {
    super.registerMetric(metric instanceof Counter ? counterView<T>(metric) : metric);
  }
}

function counterView<T extends string>(counter: Counter<T>): Metric<T> {
  const fields = counter as unknown as { name: string; help: string };
  const view = {
    name: fields.name,
    help: fields.help,
    type: 'counter',
    get: async () => ({ ...(await counter.get()), name: view.name }),
    reset: () => counter.reset(),
  };
  return view as unknown as Metric<T>;
}
