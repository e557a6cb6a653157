/**
 * The two Grafana dashboards:
 *   <prefix>-overview  the whole group: agents, links, lag three ways (commit time, heartbeat age,
 *                      unconfirmed peer WAL), throughput, conflicts by type and resolution, errors,
 *                      dead letters, slot WAL retention, agent runtime
 *   <prefix>-link      one link (peer → node): delay and apply-duration heatmaps with exemplars,
 *                      queue and backpressure, reconnects, conflicts per table, the slot on the peer
 *
 * Every query selects `job=~"$job",instance=~"$instance"` (and `peer=~"$peer"` on per-link metrics),
 * rates use `$__rate_interval`, and counters appear only inside rate()/increase().
 */
import { defaultConfig } from './config.js';
import type { ArtifactConfig } from './config.js';
import { buildDashboard } from './dashboard-model.js';
import type { DashboardSpec, JsonObject, PanelSpec, QueryVariableSpec, ThresholdStep, ValueMapping } from './dashboard-model.js';
import { LABEL_VALUES } from './metric-names.js';
import type { HistogramName } from './metric-names.js';
import { by, selectors } from './promql.js';

const AGENT = ['job', 'instance'] as const;
const LINK = [...AGENT, 'peer'] as const;
const RATE = '[$__rate_interval]';
const J = ['job=~"$job"', 'instance=~"$instance"'];
const q = selectors(J, ['peer=~"$peer"']);

/** Adds the node name of the agent (from pgbidi_build_info) so legends read "peer → node". */
function withNode(expr: string): string {
  return `(${expr}) * on (job, instance) group_left (node) max by (job, instance, node) (${q.m('pgbidi_build_info')})`;
}

const LINK_LEGEND = '{{peer}} → {{node}}';

/** State-set gauge → one number per series (its position in `states`, 1-based), for state timelines. */
function stateIndex(metric: 'pgbidi_link_state' | 'pgbidi_slot_wal_status', label: string, states: readonly string[], keep: readonly string[]): string {
  const parts = states.map((s, i) => `${q.m(metric, `${label}="${s}"`)} * ${i + 1}`);
  return `max ${by(keep)} (${parts.join(' or ')})`;
}

const STATE_COLOURS: Readonly<Record<string, string>> = {
  connecting: 'blue',
  streaming: 'green',
  backoff: 'orange',
  paused: 'yellow',
  error: 'red',
  stopped: 'text',
  reserved: 'green',
  extended: 'yellow',
  unreserved: 'orange',
  lost: 'red',
};

function stateMappings(states: readonly string[]): ValueMapping[] {
  return [{ value: 0, text: 'unknown', color: 'text' }, ...states.map((s, i) => ({ value: i + 1, text: s, color: STATE_COLOURS[s] ?? 'text' }))];
}

function quantiles(h: HistogramName, qs: readonly number[], exemplar: boolean): PanelSpec['targets'] {
  return qs.map((quantile) => ({
    expr: withNode(`histogram_quantile(${quantile}, sum ${by([...LINK, 'le'])} (rate(${q.bucket(h)}${RATE})))`),
    legend: `p${Math.round(quantile * 100)} ${LINK_LEGEND}`,
    exemplar,
  }));
}

function variables(peerMulti: boolean, config: ArtifactConfig): QueryVariableSpec[] {
  const metric = config.dashboards.variableMetric;
  return [
    { name: 'job', label: 'job', query: `label_values(${metric}, job)`, multi: true, includeAll: true },
    { name: 'instance', label: 'instance', query: `label_values(${metric}{job=~"$job"}, instance)`, multi: true, includeAll: true },
    {
      name: 'peer',
      label: 'peer',
      query: 'label_values(pgbidi_link_state{job=~"$job",instance=~"$instance"}, peer)',
      multi: peerMulti,
      includeAll: peerMulti,
    },
  ];
}

function lagSteps(warning: number, critical: number): ThresholdStep[] {
  return [
    { value: warning, color: 'orange' },
    { value: critical, color: 'red' },
  ];
}

function linkDetailUrl(config: ArtifactConfig): string {
  const uid = `${config.dashboards.uidPrefix}-link`;
  return (
    `/d/${uid}/${uid}?\${__url_time_range}&var-datasource=\${datasource}` +
    '&var-job=${__field.labels.job}&var-instance=${__field.labels.instance}&var-peer=${__field.labels.peer}'
  );
}

export function overviewDashboard(config: ArtifactConfig = defaultConfig): JsonObject {
  const a = config.alerts;
  const toLink = [{ title: 'Link detail', url: linkDetailUrl(config) }];
  const spec: DashboardSpec = {
    uid: `${config.dashboards.uidPrefix}-overview`,
    title: `${config.dashboards.titlePrefix} / Overview`,
    description: 'Health, lag, throughput, conflicts and replication slots of every pgbidi link in the group.',
    tags: config.dashboards.tags,
    refresh: config.dashboards.refresh,
    timeFrom: config.dashboards.timeFrom,
    linkTags: [config.dashboards.tags[0] ?? 'pgbidi'],
    variables: variables(true, config),
    rows: [
      {
        title: 'Health',
        panels: [
          {
            kind: 'stat',
            title: 'Agents up',
            description: 'Agents whose last scrape succeeded, out of all agent targets. Fewer up than scraped: see the PgbidiAgentDown runbook.',
            unit: 'none',
            width: 6,
            height: 4,
            targets: [
              { expr: `sum(${q.m('up')})`, legend: 'up' },
              { expr: `count(${q.m('up')})`, legend: 'scraped' },
            ],
          },
          {
            kind: 'stat',
            title: 'Links streaming',
            description: 'Links (peer → node) whose replication connection is streaming, out of all links.',
            unit: 'none',
            width: 6,
            height: 4,
            targets: [
              { expr: `sum(${q.m('pgbidi_link_connected')})`, legend: 'streaming' },
              { expr: `count(${q.m('pgbidi_link_connected')})`, legend: 'links' },
            ],
          },
          {
            kind: 'stat',
            title: 'Worst commit-time lag',
            description: 'The largest commit-time lag over all selected links, with the warning and critical alert thresholds as colours.',
            unit: 's',
            width: 6,
            height: 4,
            thresholds: lagSteps(a.replicationLag.warningSeconds, a.replicationLag.criticalSeconds),
            targets: [{ expr: `max(${q.m('pgbidi_replication_lag_seconds')})`, legend: 'lag' }],
          },
          {
            kind: 'stat',
            title: 'Firing pgbidi alerts',
            description: 'pgbidi alerts firing now for the selected agents (alerts about a missing agent carry no instance and are always counted).',
            unit: 'none',
            width: 6,
            height: 4,
            thresholds: [{ value: 1, color: 'red' }],
            targets: [{ expr: `count(${firingAlerts()}) or vector(0)`, legend: 'firing' }],
          },
          {
            kind: 'state-timeline',
            title: 'Link state',
            description:
              'State of every link over time: streaming (green), paused by backpressure (yellow), connecting (blue), backoff after a failure (orange), error (red), stopped.',
            unit: 'none',
            width: 24,
            height: 7,
            mappings: stateMappings(LABEL_VALUES.linkState),
            links: toLink,
            targets: [{ expr: withNode(stateIndex('pgbidi_link_state', 'state', LABEL_VALUES.linkState, LINK)), legend: LINK_LEGEND }],
          },
          {
            kind: 'table',
            title: 'Firing pgbidi alerts',
            description: 'The pgbidi alerts firing now, with their labels; each alert has a runbook under docs/runbooks/.',
            unit: 'none',
            width: 12,
            height: 6,
            hide: ['Time', 'Value', '__name__', 'alertstate'],
            targets: [{ expr: firingAlerts(), instant: true }],
          },
          {
            kind: 'table',
            title: 'Agents',
            description: 'Each agent: its node name, pgbidi version and Node.js version. Different versions in one group are expected only during an upgrade.',
            unit: 'none',
            width: 12,
            height: 6,
            hide: ['Time', 'Value', '__name__'],
            targets: [{ expr: q.m('pgbidi_build_info'), instant: true }],
          },
        ],
      },
      {
        title: 'Lag',
        panels: [
          {
            kind: 'timeseries',
            title: 'Commit-time lag',
            description:
              'Now minus the peer commit time of the oldest change received but not yet applied; 0 when caught up, so it says nothing while the peer is idle or the link is down (see heartbeat age). Dashed lines: alert thresholds.',
            unit: 's',
            width: 8,
            thresholds: lagSteps(a.replicationLag.warningSeconds, a.replicationLag.criticalSeconds),
            links: toLink,
            targets: [{ expr: withNode(q.m('pgbidi_replication_lag_seconds')), legend: LINK_LEGEND }],
          },
          {
            kind: 'timeseries',
            title: 'Heartbeat age',
            description:
              'Time since the peer sent the last heartbeat that this node applied (one per second): end-to-end freshness that stays honest when the peer is idle. Includes clock skew between the peer and Prometheus.',
            unit: 's',
            width: 8,
            thresholds: lagSteps(a.heartbeatStale.warningSeconds, a.heartbeatStale.criticalSeconds),
            links: toLink,
            targets: [{ expr: withNode(`time() - (${q.m('pgbidi_heartbeat_timestamp_seconds')} > 0)`), legend: LINK_LEGEND }],
          },
          {
            kind: 'timeseries',
            title: 'Unconfirmed peer WAL',
            description:
              "Bytes of the peer's WAL written after the position this node last confirmed on its slot: the byte lag. It also counts WAL that is never replicated (other databases, filtered changes).",
            unit: 'bytes',
            width: 8,
            links: toLink,
            targets: [{ expr: withNode(q.m('pgbidi_apply_lag_bytes')), legend: LINK_LEGEND }],
          },
          {
            kind: 'timeseries',
            title: 'End-to-end delay p50 / p99',
            description: 'Per applied transaction: local commit time minus peer commit time. Exemplars (dots) link to the trace of a transaction.',
            unit: 's',
            links: toLink,
            targets: quantiles('pgbidi_transaction_replication_delay_seconds', [0.5, 0.99], true),
          },
          {
            kind: 'timeseries',
            title: 'Apply queue fill',
            description: 'Changes waiting to be applied as a fraction of the queue capacity; at 100% the link stops reading from the peer (backpressure).',
            unit: 'percentunit',
            max: 1,
            links: toLink,
            targets: [{ expr: withNode(`${q.m('pgbidi_queue_changes')} / (${q.m('pgbidi_queue_capacity_changes')} > 0)`), legend: LINK_LEGEND }],
          },
        ],
      },
      {
        title: 'Throughput',
        panels: [
          {
            kind: 'timeseries',
            title: 'Changes applied by operation',
            description: 'Row changes written on each node per second, by link and operation (stacked).',
            unit: 'ops',
            stack: true,
            links: toLink,
            targets: [{ expr: withNode(`sum ${by([...LINK, 'op'])} (rate(${q.m('pgbidi_changes_applied_total')}${RATE}))`), legend: `${LINK_LEGEND} {{op}}` }],
          },
          {
            kind: 'timeseries',
            title: 'Transactions applied and filtered',
            description: 'Peer transactions committed on each node per second, and those skipped because they came from another node (loop prevention).',
            unit: 'ops',
            links: toLink,
            targets: [
              { expr: withNode(`sum ${by(LINK)} (rate(${q.m('pgbidi_transactions_applied_total')}${RATE}))`), legend: `applied ${LINK_LEGEND}` },
              {
                expr: withNode(`sum ${by([...LINK, 'reason'])} (rate(${q.m('pgbidi_transactions_filtered_total')}${RATE}))`),
                legend: `filtered ({{reason}}) ${LINK_LEGEND}`,
              },
            ],
          },
          {
            kind: 'timeseries',
            title: 'Changes filtered by reason',
            description:
              'Row changes received but not applied, per second; reason "origin" means the change came back from the node that made it (loop prevention).',
            unit: 'ops',
            links: toLink,
            targets: [
              { expr: withNode(`sum ${by([...LINK, 'reason'])} (rate(${q.m('pgbidi_changes_filtered_total')}${RATE}))`), legend: `${LINK_LEGEND} {{reason}}` },
            ],
          },
          {
            kind: 'timeseries',
            title: 'Replication bytes received',
            description: 'Logical-replication payload received from each peer per second.',
            unit: 'Bps',
            links: toLink,
            targets: [{ expr: withNode(`sum ${by(LINK)} (rate(${q.m('pgbidi_received_bytes_total')}${RATE}))`), legend: LINK_LEGEND }],
          },
        ],
      },
      {
        title: 'Conflicts and errors',
        panels: [
          {
            kind: 'timeseries',
            title: 'Conflicts by type',
            description: 'Conflicts detected while applying, per second, by PostgreSQL conflict type (stacked).',
            unit: 'cps',
            stack: true,
            targets: [{ expr: `sum by (type) (rate(${q.m('pgbidi_conflicts_total')}${RATE}))`, legend: '{{type}}' }],
          },
          {
            kind: 'timeseries',
            title: 'Conflicts by resolution',
            description: 'How detected conflicts were resolved, per second (stacked): apply_remote, keep_local, skip, error (blocks the link), dead_letter.',
            unit: 'cps',
            stack: true,
            targets: [{ expr: `sum by (resolution) (rate(${q.m('pgbidi_conflicts_total')}${RATE}))`, legend: '{{resolution}}' }],
          },
          {
            kind: 'timeseries',
            title: 'Unresolved conflicts',
            description: '1 while the link is halted by a conflict under the error policy and waits for `pgbidi resolve`; it applies nothing more meanwhile.',
            unit: 'none',
            width: 8,
            links: toLink,
            targets: [{ expr: withNode(q.m('pgbidi_conflicts_unresolved')), legend: LINK_LEGEND }],
          },
          {
            kind: 'timeseries',
            title: 'Apply errors by kind',
            description:
              'Failed apply attempts per second, by kind (connection, unique_violation, schema, timeout, serialization, other). Each one rolls back and reconnects.',
            unit: 'cps',
            width: 8,
            targets: [{ expr: `sum by (kind) (rate(${q.m('pgbidi_apply_errors_total')}${RATE}))`, legend: '{{kind}}' }],
          },
          {
            kind: 'timeseries',
            title: 'Dead letters',
            description:
              'Changes diverted to the dead-letter table per second, by reason (the nodes differ for those rows), and rows still pending on each node.',
            unit: 'short',
            width: 8,
            targets: [
              { expr: `sum by (reason) (rate(${q.m('pgbidi_dead_letters_total')}${RATE}))`, legend: 'new/s {{reason}}' },
              { expr: withNode(`sum ${by(AGENT)} (${q.m('pgbidi_dead_letters_pending')})`), legend: 'pending on {{node}}' },
            ],
          },
        ],
      },
      {
        title: 'Replication slots and WAL',
        panels: [
          {
            kind: 'timeseries',
            title: 'WAL retained by our slots',
            description:
              "WAL each peer keeps for this node's slot (peer's current WAL position minus the slot's restart_lsn). Dashed line: the alert threshold.",
            unit: 'bytes',
            width: 8,
            thresholds: [{ value: a.slotWalRetention.warningBytes, color: 'orange' }],
            links: toLink,
            targets: [{ expr: withNode(q.m('pgbidi_slot_retained_wal_bytes')), legend: `{{slot}} on {{peer}}` }],
          },
          {
            kind: 'timeseries',
            title: 'Safe WAL size',
            description:
              'WAL each peer can still write before max_slot_wal_keep_size invalidates our slot; no series when the limit is unlimited. Dashed line: the alert threshold.',
            unit: 'bytes',
            width: 8,
            thresholds: [{ value: a.slotInvalidationRisk.safeWalBytes, color: 'red' }],
            links: toLink,
            targets: [{ expr: withNode(q.m('pgbidi_slot_safe_wal_size_bytes')), legend: `{{slot}} on {{peer}}` }],
          },
          {
            kind: 'state-timeline',
            title: 'Slot WAL status',
            description:
              'pg_replication_slots.wal_status of each of our slots: reserved, extended (beyond max_wal_size), unreserved (about to lose WAL), lost.',
            unit: 'none',
            width: 8,
            mappings: stateMappings(LABEL_VALUES.walStatus),
            targets: [
              { expr: withNode(stateIndex('pgbidi_slot_wal_status', 'wal_status', LABEL_VALUES.walStatus, [...LINK, 'slot'])), legend: '{{slot}} on {{peer}}' },
            ],
          },
          {
            kind: 'state-timeline',
            title: 'Slot active',
            description: 'Whether a walsender streams each of our slots on the peers. An inactive slot keeps WAL on the peer.',
            unit: 'none',
            mappings: [
              { value: 0, text: 'inactive', color: 'red' },
              { value: 1, text: 'active', color: 'green' },
            ],
            targets: [{ expr: withNode(q.m('pgbidi_slot_active')), legend: '{{slot}} on {{peer}}' }],
          },
          {
            kind: 'timeseries',
            title: 'WAL this node keeps for its peers',
            description:
              "WAL this node keeps for each peer's slot on it (current WAL position minus the slot's restart_lsn). Reported by this node's agent, so it stays visible while the peer's agent is down. Dashed line: the alert threshold.",
            unit: 'bytes',
            thresholds: [{ value: a.slotWalRetention.warningBytes, color: 'orange' }],
            targets: [{ expr: withNode(q.m('pgbidi_local_slot_retained_wal_bytes')), legend: '{{slot}} for {{peer}}' }],
          },
          {
            kind: 'timeseries',
            title: 'Failed reads of peer slot state',
            description:
              'Failed reads, per second, of a peer WAL position and slot state at scrape time; while failing, the slot panels show the last values read.',
            unit: 'cps',
            targets: [{ expr: withNode(`sum ${by(LINK)} (rate(${q.m('pgbidi_scrape_errors_total')}${RATE}))`), legend: '{{peer}} read by {{node}}' }],
          },
        ],
      },
      {
        title: 'Clocks and tombstones',
        panels: [
          {
            kind: 'timeseries',
            title: 'Peer clock ahead',
            description:
              "How far the last commit time from each peer was ahead of this node's clock (0 when behind); apply waits that long before committing. Dashed line: the PgbidiClockSkew threshold.",
            unit: 's',
            width: 8,
            thresholds: [{ value: a.clockSkew.seconds, color: 'orange' }],
            links: toLink,
            targets: [{ expr: withNode(q.m('pgbidi_clock_skew_seconds')), legend: LINK_LEGEND }],
          },
          {
            kind: 'timeseries',
            title: 'Transactions beyond the maximum clock skew',
            description: 'Peer transactions per second whose commit time was further ahead of the local clock than replication.max_clock_skew_ms.',
            unit: 'ops',
            width: 8,
            links: toLink,
            targets: [{ expr: withNode(`sum ${by(LINK)} (rate(${q.m('pgbidi_clock_skew_exceeded_total')}${RATE}))`), legend: LINK_LEGEND }],
          },
          {
            kind: 'timeseries',
            title: 'Tombstones',
            description:
              'Deleted keys each node keeps for conflict resolution; they are purged once every link has applied past them, so steady growth means a link is not advancing.',
            unit: 'short',
            width: 8,
            targets: [{ expr: withNode(q.m('pgbidi_tombstones')), legend: '{{node}}' }],
          },
        ],
      },
      {
        title: 'Agent runtime',
        panels: [
          {
            kind: 'timeseries',
            title: 'Uptime',
            description: 'Time since each agent process started; a drop to 0 is a restart.',
            unit: 's',
            width: 8,
            targets: [{ expr: withNode(`time() - ${q.m('process_start_time_seconds')}`), legend: '{{node}}' }],
          },
          {
            kind: 'timeseries',
            title: 'CPU',
            description: 'CPU time used by each agent process per second (1 = one core).',
            unit: 'percentunit',
            width: 8,
            targets: [{ expr: withNode(`rate(${q.m('process_cpu_seconds_total')}${RATE})`), legend: '{{node}}' }],
          },
          {
            kind: 'timeseries',
            title: 'Memory',
            description: 'Resident memory and V8 heap used by each agent process.',
            unit: 'bytes',
            width: 8,
            targets: [
              { expr: withNode(q.m('process_resident_memory_bytes')), legend: 'RSS {{node}}' },
              { expr: withNode(q.m('nodejs_heap_size_used_bytes')), legend: 'heap {{node}}' },
            ],
          },
          {
            kind: 'timeseries',
            title: 'Event loop lag p99',
            description: 'How late the Node.js event loop runs timers (99th percentile); high values delay feedback and heartbeats.',
            unit: 's',
            targets: [{ expr: withNode(q.m('nodejs_eventloop_lag_p99_seconds')), legend: '{{node}}' }],
          },
          {
            kind: 'timeseries',
            title: 'Garbage collection time',
            description: 'Fraction of time spent in garbage collection, by kind.',
            unit: 'percentunit',
            targets: [{ expr: withNode(`sum ${by([...AGENT, 'kind'])} (rate(${q.sum('nodejs_gc_duration_seconds')}${RATE}))`), legend: '{{node}} {{kind}}' }],
          },
        ],
      },
    ],
  };
  return buildDashboard(spec);
}

export function linkDashboard(config: ArtifactConfig = defaultConfig): JsonObject {
  const a = config.alerts;
  const spec: DashboardSpec = {
    uid: `${config.dashboards.uidPrefix}-link`,
    title: `${config.dashboards.titlePrefix} / Link`,
    description:
      'One link (the changes of the selected peer, applied by the selected agents): latency with exemplars, backpressure, reconnects, conflicts per table, the slot on the peer.',
    tags: config.dashboards.tags,
    refresh: config.dashboards.refresh,
    timeFrom: config.dashboards.timeFrom,
    linkTags: [config.dashboards.tags[0] ?? 'pgbidi'],
    variables: variables(false, config),
    rows: [
      {
        title: 'Status',
        panels: [
          {
            kind: 'state-timeline',
            title: 'Link state',
            description: 'State of the link over time: streaming, paused by backpressure, connecting, backoff after a failure, error, stopped.',
            unit: 'none',
            width: 24,
            height: 5,
            mappings: stateMappings(LABEL_VALUES.linkState),
            targets: [{ expr: withNode(stateIndex('pgbidi_link_state', 'state', LABEL_VALUES.linkState, LINK)), legend: LINK_LEGEND }],
          },
          {
            kind: 'stat',
            title: 'Commit-time lag',
            description: 'Now minus the commit time of the oldest change received but not applied; 0 when caught up.',
            unit: 's',
            width: 6,
            height: 4,
            thresholds: lagSteps(a.replicationLag.warningSeconds, a.replicationLag.criticalSeconds),
            targets: [{ expr: withNode(q.m('pgbidi_replication_lag_seconds')), legend: LINK_LEGEND }],
          },
          {
            kind: 'stat',
            title: 'Heartbeat age',
            description: 'Time since the peer sent the last heartbeat applied here (one per second).',
            unit: 's',
            width: 6,
            height: 4,
            thresholds: lagSteps(a.heartbeatStale.warningSeconds, a.heartbeatStale.criticalSeconds),
            targets: [{ expr: withNode(`time() - (${q.m('pgbidi_heartbeat_timestamp_seconds')} > 0)`), legend: LINK_LEGEND }],
          },
          {
            kind: 'stat',
            title: 'Unconfirmed peer WAL',
            description: "Bytes of the peer's WAL after the position this node last confirmed on its slot.",
            unit: 'bytes',
            width: 6,
            height: 4,
            targets: [{ expr: withNode(q.m('pgbidi_apply_lag_bytes')), legend: LINK_LEGEND }],
          },
          {
            kind: 'stat',
            title: 'Time since last applied commit',
            description:
              'Now minus the peer commit time of the last transaction applied from this peer (grows while the peer is idle; compare with heartbeat age).',
            unit: 's',
            width: 6,
            height: 4,
            targets: [{ expr: withNode(`time() - (${q.m('pgbidi_last_applied_commit_timestamp_seconds')} > 0)`), legend: LINK_LEGEND }],
          },
          {
            kind: 'timeseries',
            title: 'Reconnects',
            description:
              'Reconnect attempts after a failure, per rate interval. Steady attempts with the link down: the peer is unreachable; bursts between streaming periods: the link is flapping. Also the large transactions applied again from their start without the insert fast path (an existing key or a tombstone met; expected, not a failure).',
            unit: 'short',
            targets: [
              { expr: withNode(`sum ${by(LINK)} (increase(${q.m('pgbidi_link_reconnects_total')}${RATE}))`), legend: LINK_LEGEND },
              {
                expr: withNode(`sum ${by(LINK)} (increase(${q.m('pgbidi_transaction_restarts_total')}${RATE}))`),
                legend: `applied again ${LINK_LEGEND}`,
              },
            ],
          },
          {
            kind: 'timeseries',
            title: 'Apply errors by kind',
            description: 'Failed apply attempts per second, by kind; each one rolls back the transaction and reconnects.',
            unit: 'cps',
            targets: [{ expr: withNode(`sum ${by([...LINK, 'kind'])} (rate(${q.m('pgbidi_apply_errors_total')}${RATE}))`), legend: `{{kind}} ${LINK_LEGEND}` }],
          },
        ],
      },
      {
        title: 'Latency (exemplars link to traces)',
        panels: [
          {
            kind: 'heatmap',
            title: 'End-to-end delay',
            description: 'Distribution of local commit time minus peer commit time per transaction. Exemplars (dots) open the trace of one transaction.',
            unit: 's',
            height: 9,
            targets: [{ expr: `sum by (le) (rate(${q.bucket('pgbidi_transaction_replication_delay_seconds')}${RATE}))`, legend: '{{le}}', exemplar: true }],
          },
          {
            kind: 'heatmap',
            title: 'Apply duration',
            description: 'Distribution of local BEGIN to COMMIT time per applied transaction. Exemplars (dots) open the trace of one transaction.',
            unit: 's',
            height: 9,
            targets: [{ expr: `sum by (le) (rate(${q.bucket('pgbidi_transaction_apply_duration_seconds')}${RATE}))`, legend: '{{le}}', exemplar: true }],
          },
          {
            kind: 'timeseries',
            title: 'Apply duration p50 / p95 / p99',
            description: 'Quantiles of local BEGIN to COMMIT time per transaction, with exemplars.',
            unit: 's',
            targets: quantiles('pgbidi_transaction_apply_duration_seconds', [0.5, 0.95, 0.99], true),
          },
          {
            kind: 'timeseries',
            title: 'Transaction size p50 / p99',
            description: 'Row changes per applied transaction; a large p99 explains apply-duration spikes and queue growth.',
            unit: 'short',
            targets: quantiles('pgbidi_transaction_changes', [0.5, 0.99], false),
          },
        ],
      },
      {
        title: 'Queue and backpressure',
        panels: [
          {
            kind: 'timeseries',
            title: 'Queued changes and capacity',
            description: 'Changes received and waiting to be applied, and the queue size at which the link stops reading from the peer.',
            unit: 'short',
            width: 8,
            targets: [
              { expr: withNode(q.m('pgbidi_queue_changes')), legend: `queued ${LINK_LEGEND}` },
              { expr: withNode(q.m('pgbidi_queue_capacity_changes')), legend: `capacity ${LINK_LEGEND}` },
            ],
          },
          {
            kind: 'timeseries',
            title: 'Time paused by backpressure',
            description: 'Fraction of time the link spent paused because the apply queue was full: apply cannot keep up with the peer.',
            unit: 'percentunit',
            width: 8,
            max: 1,
            targets: [{ expr: withNode(`avg_over_time(${q.m('pgbidi_link_state', 'state="paused"')}${RATE})`), legend: LINK_LEGEND }],
          },
          {
            kind: 'timeseries',
            title: 'Changes received vs applied',
            description: 'Row changes decoded from the peer and row changes written here, per second. Received above applied for long fills the queue.',
            unit: 'ops',
            width: 8,
            targets: [
              { expr: withNode(`sum ${by(LINK)} (rate(${q.m('pgbidi_changes_received_total')}${RATE}))`), legend: `received ${LINK_LEGEND}` },
              { expr: withNode(`sum ${by(LINK)} (rate(${q.m('pgbidi_changes_applied_total')}${RATE}))`), legend: `applied ${LINK_LEGEND}` },
            ],
          },
        ],
      },
      {
        title: 'Conflicts and dead letters per table',
        panels: [
          {
            kind: 'timeseries',
            title: 'Conflicts by table',
            description: 'Conflicts per second on changes from this peer, by table (stacked).',
            unit: 'cps',
            stack: true,
            targets: [{ expr: `sum by (table) (rate(${q.m('pgbidi_conflicts_total')}${RATE}))`, legend: '{{table}}' }],
          },
          {
            kind: 'timeseries',
            title: 'Conflicts by table, type and resolution',
            description: 'Conflicts per second on changes from this peer, by table, conflict type and how they were resolved.',
            unit: 'cps',
            targets: [
              { expr: `sum by (table, type, resolution) (rate(${q.m('pgbidi_conflicts_total')}${RATE}))`, legend: '{{table}} {{type}} → {{resolution}}' },
            ],
          },
          {
            kind: 'table',
            title: 'Conflict rate now, per table',
            description: 'Tables with conflicts in the last rate interval, by type and resolution, highest rate first.',
            unit: 'cps',
            width: 12,
            height: 7,
            hide: ['Time'],
            targets: [{ expr: `sort_desc(sum by (table, type, resolution) (rate(${q.m('pgbidi_conflicts_total')}${RATE})) > 0)`, instant: true }],
          },
          {
            kind: 'timeseries',
            title: 'Dead letters by table',
            description: 'Changes from this peer diverted to the dead-letter table per second, by table and reason.',
            unit: 'cps',
            height: 7,
            targets: [{ expr: `sum by (table, reason) (rate(${q.m('pgbidi_dead_letters_total')}${RATE}))`, legend: '{{table}} {{reason}}' }],
          },
        ],
      },
      {
        title: 'Slot on the peer',
        panels: [
          {
            kind: 'timeseries',
            title: 'WAL retained and safe WAL size',
            description:
              'WAL the peer keeps for our slot, and how much more it can write before max_slot_wal_keep_size invalidates the slot (absent when unlimited).',
            unit: 'bytes',
            targets: [
              { expr: withNode(q.m('pgbidi_slot_retained_wal_bytes')), legend: 'retained {{slot}}' },
              { expr: withNode(q.m('pgbidi_slot_safe_wal_size_bytes')), legend: 'safe size {{slot}}' },
            ],
          },
          {
            kind: 'state-timeline',
            title: 'Slot WAL status',
            description: 'pg_replication_slots.wal_status of our slot on the peer: reserved, extended, unreserved (about to lose WAL), lost.',
            unit: 'none',
            mappings: stateMappings(LABEL_VALUES.walStatus),
            targets: [{ expr: withNode(stateIndex('pgbidi_slot_wal_status', 'wal_status', LABEL_VALUES.walStatus, [...LINK, 'slot'])), legend: '{{slot}}' }],
          },
        ],
      },
    ],
  };
  return buildDashboard(spec);
}

/** ALERTS of pgbidi; alerts about an absent agent have no instance label, hence `|` in the regex. */
function firingAlerts(): string {
  return `ALERTS{alertname=~"Pgbidi.+",alertstate="firing",job=~"$job",instance=~"$instance|"}`;
}

export interface NamedDashboard {
  /** File name stem, also the ConfigMap key. */
  readonly name: string;
  readonly json: JsonObject;
}

export function dashboards(config: ArtifactConfig = defaultConfig): NamedDashboard[] {
  return [
    { name: `${config.dashboards.uidPrefix}-overview`, json: overviewDashboard(config) },
    { name: `${config.dashboards.uidPrefix}-link`, json: linkDashboard(config) },
  ];
}
