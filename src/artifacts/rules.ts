/**
 * Prometheus recording and alerting rules, generated from config.ts.
 *
 * Every alert: a `Pgbidi` CamelCase name, a severity (critical pages, warning goes to a ticket or
 * chat), summary, description and runbook_url annotations, and a `for:` chosen for what the alert
 * watches (see AlertThresholds). An alert that has a warning and a critical level keeps one name and
 * two severities, so that Alertmanager's "critical inhibits warning of the same alert" rule applies.
 *
 * `rules({ forOverride: '5s' })` makes the variant an end-to-end test runs against live servers:
 * every non-zero `for:` and `keep_firing_for:` becomes the override; thresholds and windows stay.
 */
import { defaultConfig } from './config.js';
import type { ArtifactConfig, Duration, Severity } from './config.js';
import { by, bytesText, num, on, selectors } from './promql.js';

export interface AlertingRule {
  readonly alert: string;
  readonly expr: string;
  readonly for: Duration;
  readonly keep_firing_for?: Duration;
  readonly labels: { readonly severity: Severity };
  readonly annotations: { readonly summary: string; readonly description: string; readonly runbook_url: string };
}

export interface RecordingRule {
  readonly record: string;
  readonly expr: string;
  readonly labels?: Readonly<Record<string, string>>;
}

export interface RuleGroup {
  readonly name: string;
  readonly rules: readonly (AlertingRule | RecordingRule)[];
}

export interface RuleFile {
  readonly groups: readonly RuleGroup[];
}

/** Alerts that explain other alerts away; alertmanager.ts turns these into inhibit rules. */
export type Inhibitor = 'agent-down' | 'link-disconnected';

/** One alerting rule plus what the generated artifacts need to know about it. */
export interface AlertSpec {
  readonly rule: AlertingRule;
  /** Alerts whose firing makes this one redundant (same job/instance, and same peer for link alerts). */
  readonly inhibitedBy: readonly Inhibitor[];
}

export const ALERT_PREFIX = 'Pgbidi';
export const INHIBITOR_ALERTS: Readonly<Record<Inhibitor, string>> = {
  'agent-down': 'PgbidiAgentDown',
  'link-disconnected': 'PgbidiLinkDisconnected',
};

export interface RulesOptions {
  readonly config?: ArtifactConfig;
  /** Replaces every non-zero `for:` and every `keep_firing_for:` (end-to-end tests). */
  readonly forOverride?: Duration;
}

/** Names of the recording rules, shared by their definition and the alerts that read them. */
export function recordingNames(config: ArtifactConfig = defaultConfig): {
  readonly changesApplied: string;
  readonly transactionsApplied: string;
  readonly conflictsByType: string;
  readonly conflictsByResolution: string;
  readonly replicationDelayQuantile: string;
  readonly applyDurationQuantile: string;
} {
  const w = `rate${config.recordingWindow}`;
  return {
    changesApplied: `peer:pgbidi_changes_applied:${w}`,
    transactionsApplied: `peer:pgbidi_transactions_applied:${w}`,
    conflictsByType: `peer_type:pgbidi_conflicts:${w}`,
    conflictsByResolution: `peer_resolution:pgbidi_conflicts:${w}`,
    replicationDelayQuantile: `peer_quantile:pgbidi_transaction_replication_delay_seconds:histogram_quantile_${w}`,
    applyDurationQuantile: `peer_quantile:pgbidi_transaction_apply_duration_seconds:histogram_quantile_${w}`,
  };
}

export function recordingRules(config: ArtifactConfig = defaultConfig): RecordingRule[] {
  const s = selectors([config.ruleSelector]);
  const w = config.recordingWindow;
  const n = recordingNames(config);
  return [
    { record: n.changesApplied, expr: `sum without (op) (rate(${s.m('pgbidi_changes_applied_total')}[${w}]))` },
    { record: n.transactionsApplied, expr: `rate(${s.m('pgbidi_transactions_applied_total')}[${w}])` },
    { record: n.conflictsByType, expr: `sum without (table, resolution) (rate(${s.m('pgbidi_conflicts_total')}[${w}]))` },
    { record: n.conflictsByResolution, expr: `sum without (table, type) (rate(${s.m('pgbidi_conflicts_total')}[${w}]))` },
    {
      record: n.replicationDelayQuantile,
      expr: `histogram_quantile(0.99, rate(${s.bucket('pgbidi_transaction_replication_delay_seconds')}[${w}]))`,
      labels: { quantile: '0.99' },
    },
    {
      record: n.applyDurationQuantile,
      expr: `histogram_quantile(0.99, rate(${s.bucket('pgbidi_transaction_apply_duration_seconds')}[${w}]))`,
      labels: { quantile: '0.99' },
    },
  ];
}

/** The alerting rules with their metadata, in the order of the generated file. */
export function alertSpecs(options: RulesOptions = {}): AlertSpec[] {
  const config = options.config ?? defaultConfig;
  const a = config.alerts;
  const s = selectors([config.ruleSelector]);
  const agent = config.agentLabels;
  const link = [...agent, 'peer'];
  const rec = recordingNames(config);
  const forOf = (d: Duration): Duration => (options.forOverride && !isZero(d) ? options.forOverride : d);
  const keepOf = (d: Duration): Duration => options.forOverride ?? d;

  const specs: AlertSpec[] = [];
  const alert = (
    name: string,
    severity: Severity,
    expr: string,
    forDuration: Duration,
    text: { summary: string; description: (forText: string) => string },
    inhibitedBy: readonly Inhibitor[],
    keepFiringFor?: Duration,
  ): void => {
    const f = forOf(forDuration);
    const rule: AlertingRule = {
      alert: name,
      expr,
      for: f,
      ...(keepFiringFor ? { keep_firing_for: keepOf(keepFiringFor) } : {}),
      labels: { severity },
      annotations: {
        summary: text.summary,
        description: text.description(isZero(f) ? '' : ` for ${f}`),
        runbook_url: `${config.runbookBaseUrl}/${name}.md`,
      },
    };
    specs.push({ rule, inhibitedBy });
  };
  const linkName = 'from {{ $labels.peer }} to {{ $labels.instance }}';

  // Agent
  alert(
    'PgbidiAgentDown',
    'critical',
    `up{${config.ruleSelector}} == 0`,
    a.agentDown.for,
    {
      summary: 'pgbidi agent {{ $labels.instance }} is down.',
      description: (f) =>
        `Prometheus has not been able to scrape the pgbidi agent {{ $labels.instance }} (job {{ $labels.job }})${f}. ` +
        'While it is down no peer changes are applied on its node, and every peer keeps WAL for its slot.',
    },
    [],
  );
  alert(
    'PgbidiAgentAbsent',
    'critical',
    `absent(up{${config.ruleSelector}})`,
    a.agentAbsent.for,
    {
      summary: 'No pgbidi agent is being scraped.',
      description: (f) =>
        `Prometheus has had no scrape target matching ${config.ruleSelector}${f}: the agents were removed, ` +
        'or the scrape configuration (ServiceMonitor, static_configs) no longer finds them. Nothing about replication is being watched.',
    },
    [],
  );

  // Link
  alert(
    'PgbidiLinkDisconnected',
    'critical',
    `${s.m('pgbidi_link_connected')} == 0`,
    a.linkDisconnected.for,
    {
      summary: `The link ${linkName} is not streaming.`,
      description: (f) =>
        `The agent {{ $labels.instance }} has not streamed changes from peer {{ $labels.peer }}${f} ` +
        '(it is connecting, backing off after a failure, or stopped). Changes made on {{ $labels.peer }} do not reach this node meanwhile, ' +
        'and {{ $labels.peer }} keeps WAL for the slot.',
    },
    ['agent-down'],
  );

  for (const [severity, threshold, forDuration] of [
    ['warning', a.replicationLag.warningSeconds, a.replicationLag.warningFor],
    ['critical', a.replicationLag.criticalSeconds, a.replicationLag.criticalFor],
  ] as const) {
    alert(
      'PgbidiReplicationLagHigh',
      severity,
      `${s.m('pgbidi_replication_lag_seconds')} > ${num(threshold)}`,
      forDuration,
      {
        summary: `Replication ${linkName} is behind.`,
        description: (f) =>
          'The oldest change from {{ $labels.peer }} that {{ $labels.instance }} has received but not applied was committed ' +
          `{{ $value | humanizeDuration }} ago (threshold ${num(threshold)} s${f}). Writes on the two nodes can conflict for that long.`,
      },
      ['agent-down', 'link-disconnected'],
      a.replicationLag.keepFiringFor,
    );
  }

  for (const [severity, threshold, forDuration] of [
    ['warning', a.heartbeatStale.warningSeconds, a.heartbeatStale.warningFor],
    ['critical', a.heartbeatStale.criticalSeconds, a.heartbeatStale.criticalFor],
  ] as const) {
    alert(
      'PgbidiHeartbeatStale',
      severity,
      `time() - (${s.m('pgbidi_heartbeat_timestamp_seconds')} > 0) > ${num(threshold)}`,
      forDuration,
      {
        summary: `Heartbeats ${linkName} are stale.`,
        description: (f) =>
          'The last heartbeat from {{ $labels.peer }} applied on {{ $labels.instance }} was sent {{ $value | humanizeDuration }} ago ' +
          `(threshold ${num(threshold)} s${f}; {{ $labels.peer }} sends one every second). Changes from {{ $labels.peer }} are not arriving ` +
          'even if the commit-time lag reads 0. Clock skew between {{ $labels.peer }} and Prometheus adds to this age.',
      },
      ['agent-down', 'link-disconnected'],
    );
  }

  alert(
    'PgbidiApplyStalled',
    'critical',
    [
      '(',
      `  max ${by(link)} (${s.m('pgbidi_queue_changes')}) > 0`,
      'or',
      `  max ${by(link)} (${s.m('pgbidi_apply_lag_bytes')}) > ${num(a.applyStalled.backlogBytes)}`,
      ')',
      `and ${on(link)}`,
      `max ${by(link)} (changes(${s.m('pgbidi_confirmed_flush_lsn_bytes')}[${a.applyStalled.window}])) == 0`,
    ].join('\n'),
    a.applyStalled.for,
    {
      summary: `Apply ${linkName} is stalled with a backlog.`,
      description: (f) =>
        `Changes from {{ $labels.peer }} are waiting (queued in the agent, or more than ${bytesText(a.applyStalled.backlogBytes)} of ` +
        `{{ $labels.peer }}'s WAL unconfirmed), but {{ $labels.instance }} has confirmed no progress in any ${a.applyStalled.window} window${f}. ` +
        'A lock, a long transaction or a failing statement is holding the apply.',
    },
    ['agent-down', 'link-disconnected'],
  );

  // Slots on the peers
  alert(
    'PgbidiSlotInactive',
    'warning',
    `${s.m('pgbidi_slot_active')} == 0`,
    a.slotInactive.for,
    {
      summary: 'Replication slot {{ $labels.slot }} on {{ $labels.peer }} is inactive.',
      description: (f) =>
        `No walsender has streamed slot {{ $labels.slot }} on {{ $labels.peer }}${f}. ` +
        '{{ $labels.peer }} keeps all WAL from the slot restart_lsn on; its disk fills until the link from it resumes.',
    },
    ['agent-down', 'link-disconnected'],
  );
  alert(
    'PgbidiSlotWalRetentionHigh',
    'warning',
    `${s.m('pgbidi_slot_retained_wal_bytes')} > ${num(a.slotWalRetention.warningBytes)}`,
    a.slotWalRetention.for,
    {
      summary: 'Slot {{ $labels.slot }} on {{ $labels.peer }} retains a lot of WAL.',
      description: (f) =>
        'Slot {{ $labels.slot }} holds {{ $value | humanize1024 }}B of WAL on {{ $labels.peer }} for {{ $labels.instance }} ' +
        `(threshold ${bytesText(a.slotWalRetention.warningBytes)}${f}). The peer cannot recycle that WAL until the link catches up.`,
    },
    [],
  );
  alert(
    'PgbidiSlotInvalidationRisk',
    'critical',
    `${s.m('pgbidi_slot_safe_wal_size_bytes')} < ${num(a.slotInvalidationRisk.safeWalBytes)}`,
    a.slotInvalidationRisk.for,
    {
      summary: 'Slot {{ $labels.slot }} on {{ $labels.peer }} is close to being invalidated.',
      description: (f) =>
        '{{ $labels.peer }} can write only {{ $value | humanize1024 }}B more WAL before max_slot_wal_keep_size invalidates slot ' +
        `{{ $labels.slot }} (threshold ${bytesText(a.slotInvalidationRisk.safeWalBytes)}${f}). ` +
        'Once the slot is lost the link to {{ $labels.instance }} cannot resume without resynchronising the node.',
    },
    [],
  );
  // Slots on this node: still reported when the peer's agent, which reports them as its own, is down.
  alert(
    'PgbidiLocalSlotWalRetentionHigh',
    'warning',
    `${s.m('pgbidi_local_slot_retained_wal_bytes')} > ${num(a.slotWalRetention.warningBytes)}`,
    a.slotWalRetention.for,
    {
      summary: 'This node keeps a lot of WAL for {{ $labels.peer }}.',
      description: (f) =>
        '{{ $labels.instance }} keeps {{ $value | humanize1024 }}B of WAL for slot {{ $labels.slot }}, which {{ $labels.peer }} consumes ' +
        `(threshold ${bytesText(a.slotWalRetention.warningBytes)}${f}). It cannot recycle that WAL until {{ $labels.peer }} catches up.`,
    },
    [],
  );
  alert(
    'PgbidiSlotLost',
    'critical',
    `${s.m('pgbidi_slot_wal_status', 'wal_status="lost"')} == 1`,
    a.slotLost.for,
    {
      summary: 'Slot {{ $labels.slot }} on {{ $labels.peer }} is lost.',
      description: (f) =>
        `The WAL that slot {{ $labels.slot }} on {{ $labels.peer }} needs has been removed${f}. ` +
        'The link from {{ $labels.peer }} to {{ $labels.instance }} cannot continue; changes made on {{ $labels.peer }} since the slot fell behind are missing here.',
    },
    [],
  );

  // Conflicts, dead letters, errors
  alert(
    'PgbidiConflictRateHigh',
    'warning',
    `${rec.conflictsByType}{${config.ruleSelector}} > ${num(a.conflictRate.perSecond)}`,
    a.conflictRate.for,
    {
      summary: `Many {{ $labels.type }} conflicts ${linkName}.`,
      description: (f) =>
        `{{ $labels.type }} conflicts on changes ${linkName} run at {{ $value | printf "%.2f" }}/s ` +
        `(threshold ${num(a.conflictRate.perSecond)}/s${f}). The same rows are being written on both nodes, ` +
        'or a node was restored or resynchronised without its peers.',
    },
    [],
  );
  alert(
    'PgbidiConflictsUnresolved',
    'critical',
    `${s.m('pgbidi_conflicts_unresolved')} > 0`,
    a.conflictsUnresolved.for,
    {
      summary: `An unresolved conflict halts the link ${linkName}.`,
      description: (f) =>
        `The link ${linkName} stopped at a conflict under the error policy and has waited for a decision${f}. ` +
        'It applies nothing more from {{ $labels.peer }} until an operator runs `pgbidi resolve --peer {{ $labels.peer }}` with --retry or --skip.',
    },
    ['agent-down'],
  );
  alert(
    'PgbidiDeadLettersGrowing',
    'warning',
    `sum ${by(link)} (increase(${s.m('pgbidi_dead_letters_total')}[${a.deadLetters.window}])) > 0`,
    a.deadLetters.for,
    {
      summary: `Changes ${linkName} are going to the dead-letter table.`,
      description: (f) =>
        `About {{ $value | humanize }} changes from {{ $labels.peer }} were written to the dead-letter table on {{ $labels.instance }} ` +
        `in the last ${a.deadLetters.window}${f} instead of being applied. The nodes now differ for those rows until someone replays or discards them.`,
    },
    [],
  );
  alert(
    'PgbidiApplyErrors',
    'warning',
    `sum ${by([...link, 'kind'])} (rate(${s.m('pgbidi_apply_errors_total')}[${a.applyErrors.window}])) > 0`,
    a.applyErrors.for,
    {
      summary: `Apply errors ({{ $labels.kind }}) ${linkName}.`,
      description: (f) =>
        `The link ${linkName} keeps failing with {{ $labels.kind }} errors ({{ $value | printf "%.2f" }}/s${f}). ` +
        'Each failure rolls back the transaction and reconnects, so the link makes little or no progress.',
    },
    ['agent-down', 'link-disconnected'],
  );
  const flap = a.reconnectFlapping;
  alert(
    'PgbidiReconnectFlapping',
    'warning',
    [
      `sum ${by(link)} (increase(${s.m('pgbidi_link_reconnects_total')}[${flap.window}])) > ${num(flap.count)}`,
      `and ${on(link)}`,
      `sum ${by(link)} (increase(${s.m('pgbidi_link_reconnects_total')}[${flap.recentWindow}])) > 0`,
      `and ${on(link)}`,
      `max ${by(link)} (max_over_time(${s.m('pgbidi_link_connected')}[${flap.recentWindow}])) == 1`,
    ].join('\n'),
    flap.for,
    {
      summary: `The link ${linkName} keeps reconnecting.`,
      description: (f) =>
        `The link ${linkName} reconnected about {{ $value | humanize }} times in ${flap.window}, streaming in between, ` +
        `and has kept doing so in every ${flap.recentWindow}${f}. Something breaks the replication connection repeatedly ` +
        '(network, timeouts, a peer restarting, a failing change).',
    },
    ['agent-down', 'link-disconnected'],
  );
  alert(
    'PgbidiClockSkew',
    'warning',
    `abs(${s.m('pgbidi_clock_skew_seconds')}) > ${num(a.clockSkew.seconds)}`,
    a.clockSkew.for,
    {
      summary: 'The clock of {{ $labels.peer }} runs ahead of {{ $labels.instance }}.',
      description: (f) =>
        `Transactions from {{ $labels.peer }} carry commit times {{ $value | humanizeDuration }} ahead of the clock of {{ $labels.instance }}'s node ` +
        `(threshold ${num(a.clockSkew.seconds)} s${f}). Apply waits the skew out before committing, which slows the link, ` +
        'and last-update-wins conflict resolution compares timestamps of different nodes.',
    },
    [],
  );
  alert(
    'PgbidiSchemaDiffers',
    'warning',
    `max ${by(link)} (${s.m('pgbidi_schema_differences')}) > 0`,
    a.schemaDiffers.for,
    {
      summary: 'The replicated tables of {{ $labels.instance }} and {{ $labels.peer }} are defined differently.',
      description: (f) =>
        `{{ $value }} differences between the replicated tables of {{ $labels.instance }} and {{ $labels.peer }}${f} ` +
        '(a column on one node only, another type, nullability or primary key). A change that carries a column the other node lacks ' +
        "stops that link until the schemas match; the agent's /status names each table and column.",
    },
    ['agent-down'],
  );

  return specs;
}

/** The whole rule file: recording rules first (alerts read them), then alerts. */
export function rules(options: RulesOptions = {}): RuleFile {
  const config = options.config ?? defaultConfig;
  return {
    groups: [
      { name: 'pgbidi.rules', rules: recordingRules(config) },
      { name: 'pgbidi.alerts', rules: alertSpecs(options).map((s) => s.rule) },
    ],
  };
}

/** Distinct alert names, in file order. */
export function alertNames(options: RulesOptions = {}): string[] {
  return [...new Set(alertSpecs(options).map((s) => s.rule.alert))];
}

export function isAlertingRule(r: AlertingRule | RecordingRule): r is AlertingRule {
  return 'alert' in r;
}

function isZero(d: Duration): boolean {
  return /^0+(\.0+)?(ms|s|m|h|d)$/.test(d);
}
