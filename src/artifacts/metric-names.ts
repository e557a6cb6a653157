/**
 * The catalogue the shipped artifacts are checked against: every metric that a dashboard panel, a
 * recording rule or an alert may name. One entry per metric family, as it appears in a scrape.
 *
 * `status` says whether the agent exports it today:
 *   exported     registered by src/observability/ (metrics.ts, peer-collectors.ts); a test compares this
 *                list with the agent's registry
 *   in-progress  being added now
 *   planned      designed, not written yet (dead letters counted by table and reason)
 * A rule or panel that names an in-progress or planned metric is allowed, and the tests list it, so
 * that nobody mistakes a silent panel or an alert that can never fire for a healthy system.
 *
 * `labels` are the labels the program sets; Prometheus adds `job` and `instance` to every series.
 */
import { CONFLICT_TYPES, RESOLUTIONS } from '../conflict/conflict-types.js';
import { CHANGE_OPS, LINK_STATES } from '../observability/metrics.js';

export type MetricType = 'counter' | 'gauge' | 'histogram';
export type MetricStatus = 'exported' | 'in-progress' | 'planned';
/** Who produces the series: the agent, prom-client's default collectors, or Prometheus itself. */
export type MetricSource = 'pgbidi' | 'prom-client' | 'prometheus';

export interface MetricSpec {
  readonly name: string;
  readonly type: MetricType;
  readonly labels: readonly string[];
  readonly status: MetricStatus;
  readonly source: MetricSource;
  readonly help: string;
  /** Series that carry arbitrary labels (Prometheus' ALERTS copies the alert's labels). */
  readonly openLabels?: boolean;
}

/** Values of bounded labels, for dashboards that map states to colours and for test fixtures. */
export const LABEL_VALUES = {
  /** pgbidi_link_state{state}; the order is the value-mapping order in the dashboards. */
  linkState: LINK_STATES,
  op: CHANGE_OPS,
  conflictType: CONFLICT_TYPES,
  resolution: RESOLUTIONS,
  /** pg_replication_slots.wal_status (PostgreSQL 13+), as pgbidi_slot_wal_status{wal_status} sets it. */
  walStatus: ['reserved', 'extended', 'unreserved', 'lost'],
} as const;

export const METRICS = [
  // Identity and link state
  {
    name: 'pgbidi_build_info',
    type: 'gauge',
    labels: ['version', 'node', 'nodejs'],
    status: 'exported',
    source: 'pgbidi',
    help: 'Agent build information (always 1).',
  },
  {
    name: 'pgbidi_link_state',
    type: 'gauge',
    labels: ['peer', 'state'],
    status: 'exported',
    source: 'pgbidi',
    help: 'State set of the link from a peer: 1 for the current state.',
  },
  {
    name: 'pgbidi_link_connected',
    type: 'gauge',
    labels: ['peer'],
    status: 'exported',
    source: 'pgbidi',
    help: 'Replication connection from the peer is streaming (1) or not (0).',
  },
  {
    name: 'pgbidi_link_reconnects_total',
    type: 'counter',
    labels: ['peer'],
    status: 'exported',
    source: 'pgbidi',
    help: 'Reconnect attempts after a link failure.',
  },
  {
    name: 'pgbidi_transaction_restarts_total',
    type: 'counter',
    labels: ['peer'],
    status: 'exported',
    source: 'pgbidi',
    help: 'Remote transactions applied again from their start without the insert fast path (a plain INSERT met an existing key or a tombstone).',
  },
  // Positions and lag
  {
    name: 'pgbidi_received_lsn_bytes',
    type: 'gauge',
    labels: ['peer'],
    status: 'exported',
    source: 'pgbidi',
    help: 'Last WAL position received from the peer.',
  },
  {
    name: 'pgbidi_applied_lsn_bytes',
    type: 'gauge',
    labels: ['peer'],
    status: 'exported',
    source: 'pgbidi',
    help: 'Commit end position of the last applied peer transaction.',
  },
  {
    name: 'pgbidi_confirmed_flush_lsn_bytes',
    type: 'gauge',
    labels: ['peer'],
    status: 'exported',
    source: 'pgbidi',
    help: 'Position last confirmed to the peer as durably applied.',
  },
  {
    name: 'pgbidi_replication_lag_seconds',
    type: 'gauge',
    labels: ['peer'],
    status: 'exported',
    source: 'pgbidi',
    help: 'Now minus the commit time of the oldest received, unapplied transaction; 0 when caught up.',
  },
  {
    name: 'pgbidi_last_applied_commit_timestamp_seconds',
    type: 'gauge',
    labels: ['peer'],
    status: 'exported',
    source: 'pgbidi',
    help: 'Peer commit time of the last applied transaction.',
  },
  {
    name: 'pgbidi_heartbeat_timestamp_seconds',
    type: 'gauge',
    labels: ['peer'],
    status: 'exported',
    source: 'pgbidi',
    help: 'Peer clock time of the last applied heartbeat (emitted every second); 0 until the first one.',
  },
  {
    name: 'pgbidi_apply_lag_bytes',
    type: 'gauge',
    labels: ['peer'],
    status: 'exported',
    source: 'pgbidi',
    help: "Peer's current WAL position minus the position confirmed on our slot there.",
  },
  // Throughput
  {
    name: 'pgbidi_changes_received_total',
    type: 'counter',
    labels: ['peer', 'op'],
    status: 'exported',
    source: 'pgbidi',
    help: 'Row changes decoded from the peer stream.',
  },
  {
    name: 'pgbidi_changes_applied_total',
    type: 'counter',
    labels: ['peer', 'op'],
    status: 'exported',
    source: 'pgbidi',
    help: 'Row changes written on this node.',
  },
  {
    name: 'pgbidi_changes_filtered_total',
    type: 'counter',
    labels: ['peer', 'op', 'reason'],
    status: 'exported',
    source: 'pgbidi',
    help: 'Row changes not applied, by reason (origin = loop prevention).',
  },
  {
    name: 'pgbidi_transactions_applied_total',
    type: 'counter',
    labels: ['peer'],
    status: 'exported',
    source: 'pgbidi',
    help: 'Peer transactions committed on this node.',
  },
  {
    name: 'pgbidi_transactions_filtered_total',
    type: 'counter',
    labels: ['peer', 'reason'],
    status: 'exported',
    source: 'pgbidi',
    help: 'Peer transactions skipped, by reason.',
  },
  {
    name: 'pgbidi_received_bytes_total',
    type: 'counter',
    labels: ['peer'],
    status: 'exported',
    source: 'pgbidi',
    help: 'Replication payload bytes received from the peer.',
  },
  // Per-transaction histograms (exemplars carry trace_id)
  {
    name: 'pgbidi_transaction_replication_delay_seconds',
    type: 'histogram',
    labels: ['peer'],
    status: 'exported',
    source: 'pgbidi',
    help: 'Per transaction: local commit time minus peer commit time.',
  },
  {
    name: 'pgbidi_transaction_apply_duration_seconds',
    type: 'histogram',
    labels: ['peer'],
    status: 'exported',
    source: 'pgbidi',
    help: 'Per transaction: local BEGIN to COMMIT.',
  },
  {
    name: 'pgbidi_transaction_changes',
    type: 'histogram',
    labels: ['peer'],
    status: 'exported',
    source: 'pgbidi',
    help: 'Row changes per applied transaction.',
  },
  // Conflicts, errors, dead letters
  {
    name: 'pgbidi_conflicts_total',
    type: 'counter',
    labels: ['peer', 'table', 'type', 'resolution'],
    status: 'exported',
    source: 'pgbidi',
    help: 'Conflicts detected while applying, by table, type and resolution.',
  },
  {
    name: 'pgbidi_conflicts_unresolved',
    type: 'gauge',
    labels: ['peer'],
    status: 'exported',
    source: 'pgbidi',
    help: 'The link is halted by a conflict under the error policy and waits for `pgbidi resolve` (1) or not (0).',
  },
  {
    name: 'pgbidi_apply_errors_total',
    type: 'counter',
    labels: ['peer', 'kind'],
    status: 'exported',
    source: 'pgbidi',
    help: 'Failed apply attempts, by kind.',
  },
  {
    name: 'pgbidi_dead_letters_total',
    type: 'counter',
    labels: ['peer', 'table', 'reason'],
    status: 'exported',
    source: 'pgbidi',
    help: 'Changes diverted to the dead-letter table.',
  },
  {
    name: 'pgbidi_dead_letters_pending',
    type: 'gauge',
    labels: [],
    status: 'exported',
    source: 'pgbidi',
    help: 'Dead letters waiting for an operator on this node.',
  },
  // Schema
  {
    name: 'pgbidi_schema_differences',
    type: 'gauge',
    labels: ['peer'],
    status: 'exported',
    source: 'pgbidi',
    help: "Differences between this node's and the peer's definitions of the replicated tables (columns, types, nullability, keys).",
  },
  // Clocks and tombstones
  {
    name: 'pgbidi_clock_skew_seconds',
    type: 'gauge',
    labels: ['peer'],
    status: 'exported',
    source: 'pgbidi',
    help: 'How far the last peer commit time was ahead of the local clock (0 when behind); apply waits it out.',
  },
  {
    name: 'pgbidi_clock_skew_exceeded_total',
    type: 'counter',
    labels: ['peer'],
    status: 'exported',
    source: 'pgbidi',
    help: 'Peer transactions committed further ahead of the local clock than replication.max_clock_skew_ms.',
  },
  {
    name: 'pgbidi_tombstones',
    type: 'gauge',
    labels: [],
    status: 'exported',
    source: 'pgbidi',
    help: 'Deleted keys kept for conflict resolution on this node.',
  },
  {
    name: 'pgbidi_tombstone_purge_watermark_timestamp_seconds',
    type: 'gauge',
    labels: [],
    status: 'exported',
    source: 'pgbidi',
    help: 'Tombstones deleted before this time have been purged; 0 until every link has applied a transaction.',
  },
  // Backpressure
  { name: 'pgbidi_queue_changes', type: 'gauge', labels: ['peer'], status: 'exported', source: 'pgbidi', help: 'Changes received and waiting to be applied.' },
  {
    name: 'pgbidi_queue_capacity_changes',
    type: 'gauge',
    labels: ['peer'],
    status: 'exported',
    source: 'pgbidi',
    help: 'Queue size at which the link stops reading (backpressure).',
  },
  // Replication slot on the peer (read at scrape time)
  {
    name: 'pgbidi_slot_active',
    type: 'gauge',
    labels: ['peer', 'slot'],
    status: 'exported',
    source: 'pgbidi',
    help: 'Our slot on the peer is being streamed (1) or not (0).',
  },
  {
    name: 'pgbidi_slot_retained_wal_bytes',
    type: 'gauge',
    labels: ['peer', 'slot'],
    status: 'exported',
    source: 'pgbidi',
    help: 'WAL the peer keeps for our slot.',
  },
  {
    name: 'pgbidi_slot_safe_wal_size_bytes',
    type: 'gauge',
    labels: ['peer', 'slot'],
    status: 'exported',
    source: 'pgbidi',
    help: 'WAL the peer can write before our slot is invalidated; absent when unlimited.',
  },
  {
    name: 'pgbidi_slot_wal_status',
    type: 'gauge',
    labels: ['peer', 'slot', 'wal_status'],
    status: 'exported',
    source: 'pgbidi',
    help: 'State set of pg_replication_slots.wal_status for our slot.',
  },
  {
    name: 'pgbidi_scrape_errors_total',
    type: 'counter',
    labels: ['peer'],
    status: 'exported',
    source: 'pgbidi',
    help: 'Failed reads of the peer slot state at scrape time.',
  },
  // Replication slots on this node that the peers consume (read at scrape time)
  {
    name: 'pgbidi_local_slot_active',
    type: 'gauge',
    labels: ['peer', 'slot'],
    status: 'exported',
    source: 'pgbidi',
    help: 'The peer streams its slot on this node (1) or not (0).',
  },
  {
    name: 'pgbidi_local_slot_retained_wal_bytes',
    type: 'gauge',
    labels: ['peer', 'slot'],
    status: 'exported',
    source: 'pgbidi',
    help: "WAL this node keeps for the peer's slot, also while the peer's agent is down.",
  },
  {
    name: 'pgbidi_local_slot_wal_status',
    type: 'gauge',
    labels: ['peer', 'slot', 'wal_status'],
    status: 'exported',
    source: 'pgbidi',
    help: "State set of pg_replication_slots.wal_status for the peer's slot on this node.",
  },
  // prom-client default collectors (no prefix)
  { name: 'process_cpu_seconds_total', type: 'counter', labels: [], status: 'exported', source: 'prom-client', help: 'User and system CPU time spent.' },
  { name: 'process_resident_memory_bytes', type: 'gauge', labels: [], status: 'exported', source: 'prom-client', help: 'Resident memory size.' },
  {
    name: 'process_start_time_seconds',
    type: 'gauge',
    labels: [],
    status: 'exported',
    source: 'prom-client',
    help: 'Start time of the process since the Unix epoch.',
  },
  { name: 'process_open_fds', type: 'gauge', labels: [], status: 'exported', source: 'prom-client', help: 'Open file descriptors.' },
  { name: 'nodejs_heap_size_used_bytes', type: 'gauge', labels: [], status: 'exported', source: 'prom-client', help: 'V8 heap used.' },
  { name: 'nodejs_heap_size_total_bytes', type: 'gauge', labels: [], status: 'exported', source: 'prom-client', help: 'V8 heap size.' },
  { name: 'nodejs_eventloop_lag_p99_seconds', type: 'gauge', labels: [], status: 'exported', source: 'prom-client', help: 'Event loop lag, 99th percentile.' },
  {
    name: 'nodejs_gc_duration_seconds',
    type: 'histogram',
    labels: ['kind'],
    status: 'exported',
    source: 'prom-client',
    help: 'Garbage collection duration by kind.',
  },
  // Made by Prometheus
  { name: 'up', type: 'gauge', labels: [], status: 'exported', source: 'prometheus', help: 'Whether the last scrape of the target succeeded.' },
  {
    name: 'ALERTS',
    type: 'gauge',
    labels: ['alertname', 'alertstate', 'severity'],
    status: 'exported',
    source: 'prometheus',
    help: 'Pending and firing alerts.',
    openLabels: true,
  },
] as const satisfies readonly MetricSpec[];

type Entry = (typeof METRICS)[number];
export type MetricName = Entry['name'];
export type CounterName = Extract<Entry, { type: 'counter' }>['name'];
export type GaugeName = Extract<Entry, { type: 'gauge' }>['name'];
export type HistogramName = Extract<Entry, { type: 'histogram' }>['name'];

const byName: ReadonlyMap<string, MetricSpec> = new Map(METRICS.map((m) => [m.name, m]));

export function metricSpec(name: string): MetricSpec | undefined {
  return byName.get(name);
}

export interface SeriesRef {
  readonly spec: MetricSpec;
  /** `bucket`, `sum` or `count` for a histogram's series, `value` for every other series. */
  readonly part: 'value' | 'bucket' | 'sum' | 'count';
}

/**
 * The catalogue entry for a series name as it appears in PromQL: histograms are queried through
 * `<name>_bucket`, `<name>_sum` and `<name>_count`, never by their family name.
 */
export function seriesRef(series: string): SeriesRef | undefined {
  const direct = byName.get(series);
  if (direct) return direct.type === 'histogram' ? undefined : { spec: direct, part: 'value' };
  for (const part of ['bucket', 'sum', 'count'] as const) {
    const suffix = `_${part}`;
    if (!series.endsWith(suffix)) continue;
    const family = byName.get(series.slice(0, -suffix.length));
    if (family?.type === 'histogram') return { spec: family, part };
  }
  return undefined;
}

/** Labels a selector may match on for this series (target labels included). */
export function seriesLabels(ref: SeriesRef): readonly string[] {
  return ['job', 'instance', ...ref.spec.labels, ...(ref.part === 'bucket' ? ['le'] : [])];
}

/** True when the series only makes sense through rate()/increase() (a counter or a histogram part). */
export function isCumulative(ref: SeriesRef): boolean {
  return ref.spec.type === 'counter' || ref.spec.type === 'histogram';
}
