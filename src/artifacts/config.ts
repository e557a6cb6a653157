/**
 * Every threshold, duration and selector of the shipped dashboards, rules, Kubernetes objects and
 * Alertmanager example, in one place (the `_config` of a monitoring mixin). Change a default here,
 * run `node dist/artifacts/generate.js`, commit the regenerated files; the stale-check test fails
 * until you do.
 *
 * Thresholds are starting points: tune them to your baseline (a link that crosses an ocean has a
 * different normal lag from one inside a rack).
 */

/** A Prometheus duration as used by `for:`, `keep_firing_for:` and range selectors. */
export type Duration = `${number}${'ms' | 's' | 'm' | 'h' | 'd'}`;

export type Severity = 'critical' | 'warning' | 'info';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

export interface AlertThresholds {
  /** up == 0. A rolling restart takes well under a minute; two minutes is a real outage. */
  readonly agentDown: { readonly for: Duration };
  /** No `up` series for the job at all: the agent was removed or the scrape config lost it. */
  readonly agentAbsent: { readonly for: Duration };
  /** pgbidi_link_connected == 0. Backoff caps at 30 s, so 5 min is about ten failed attempts. */
  readonly linkDisconnected: { readonly for: Duration };
  /** Commit-timestamp lag. Warning keeps firing a little after recovery so that a wobbling link does not page twice. */
  readonly replicationLag: {
    readonly warningSeconds: number;
    readonly warningFor: Duration;
    readonly criticalSeconds: number;
    readonly criticalFor: Duration;
    readonly keepFiringFor: Duration;
  };
  /** Age of the last applied heartbeat (sent every second): end-to-end freshness, honest when the peer is idle. */
  readonly heartbeatStale: {
    readonly warningSeconds: number;
    readonly warningFor: Duration;
    readonly criticalSeconds: number;
    readonly criticalFor: Duration;
  };
  /** Changes are waiting (queue, or unconfirmed peer WAL) and the confirmed position has not moved in `window`. */
  readonly applyStalled: { readonly window: Duration; readonly backlogBytes: number; readonly for: Duration };
  /** The peer keeps WAL for a slot nobody streams. */
  readonly slotInactive: { readonly for: Duration };
  /** WAL pinned on the peer by our slot. */
  readonly slotWalRetention: { readonly warningBytes: number; readonly for: Duration };
  /** safe_wal_size: bytes the peer may still write before max_slot_wal_keep_size invalidates the slot. */
  readonly slotInvalidationRisk: { readonly safeWalBytes: number; readonly for: Duration };
  /** wal_status = lost is a fact, not a trend: no `for`. */
  readonly slotLost: { readonly for: Duration };
  /** Conflicts per second, per link and conflict type, sustained. */
  readonly conflictRate: { readonly perSecond: number; readonly for: Duration };
  /** Conflicts under the error policy hold the link until someone decides. */
  readonly conflictsUnresolved: { readonly for: Duration };
  /** Any new dead letter in `window` means the nodes now differ; the window itself debounces. */
  readonly deadLetters: { readonly window: Duration; readonly for: Duration };
  /** Apply errors in every `window` for `for`: persistent, not one transient failure. */
  readonly applyErrors: { readonly window: Duration; readonly for: Duration };
  /** More than `count` reconnects in `window`, still reconnecting in `recentWindow`, and connected in between. */
  readonly reconnectFlapping: { readonly window: Duration; readonly recentWindow: Duration; readonly count: number; readonly for: Duration };
  /** Last-update-wins resolution compares commit timestamps of different nodes. */
  readonly clockSkew: { readonly seconds: number; readonly for: Duration };
  readonly schemaDiffers: { readonly for: Duration };
}

export interface ArtifactConfig {
  /** Label matchers every rule selects on, like a mixin's `selector`. */
  readonly ruleSelector: string;
  /** Labels that name one agent. Every pgbidi alert keeps them, and `peer` for per-link alerts. */
  readonly agentLabels: readonly string[];
  /** runbook_url = `${runbookBaseUrl}/${alertName}.md`. */
  readonly runbookBaseUrl: string;
  /** Window of the recording rules (rates and quantiles). */
  readonly recordingWindow: Duration;
  readonly alerts: AlertThresholds;
  readonly dashboards: {
    readonly uidPrefix: string;
    readonly titlePrefix: string;
    readonly tags: readonly string[];
    readonly refresh: Duration;
    readonly timeFrom: string;
    /** Series whose labels fill the job and instance variables. */
    readonly variableMetric: 'pgbidi_build_info';
  };
  readonly grafana: {
    readonly folder: string;
    readonly folderUid: string;
    /** Where the provisioning file tells Grafana to read dashboards/*.json. */
    readonly dashboardsPath: string;
    readonly datasourceName: string;
    readonly datasourceUid: string;
    readonly prometheusUrl: string;
    /** Grafana datasource (Tempo, Jaeger) that exemplar trace_id links open; null for none. */
    readonly traceDatasourceUid: string | null;
  };
  readonly kubernetes: {
    readonly namespace: string;
    /** kube-prometheus-stack selects PrometheusRule/ServiceMonitor objects by `release: <helm release>`. */
    readonly releaseLabel: string;
    /** app.kubernetes.io/name of the agent's Service; it also becomes the `job` label. */
    readonly appName: string;
    readonly metricsPortName: string;
    readonly scrapeInterval: Duration;
    readonly scrapeTimeout: Duration;
  };
  readonly alertmanager: {
    readonly groupBy: readonly string[];
    readonly groupWait: Duration;
    readonly groupInterval: Duration;
    readonly repeatInterval: Duration;
    /** Receivers of the example; point their webhooks at your pager and chat integrations. */
    readonly receivers: { readonly pager: string; readonly chat: string; readonly none: string };
    readonly webhookBaseUrl: string;
  };
}

export const defaultConfig: ArtifactConfig = deepFreeze({
  ruleSelector: 'job="pgbidi"',
  agentLabels: ['job', 'instance'],
  runbookBaseUrl: 'https://github.com/pgbidi/pgbidi/blob/main/docs/runbooks',
  recordingWindow: '5m',
  alerts: {
    agentDown: { for: '2m' },
    agentAbsent: { for: '10m' },
    linkDisconnected: { for: '5m' },
    replicationLag: { warningSeconds: 60, warningFor: '10m', criticalSeconds: 300, criticalFor: '5m', keepFiringFor: '5m' },
    heartbeatStale: { warningSeconds: 60, warningFor: '5m', criticalSeconds: 300, criticalFor: '5m' },
    applyStalled: { window: '10m', backlogBytes: 16 * MiB, for: '5m' },
    slotInactive: { for: '15m' },
    slotWalRetention: { warningBytes: 10 * GiB, for: '15m' },
    slotInvalidationRisk: { safeWalBytes: 1 * GiB, for: '5m' },
    slotLost: { for: '0m' },
    conflictRate: { perSecond: 1, for: '15m' },
    conflictsUnresolved: { for: '2m' },
    deadLetters: { window: '15m', for: '0m' },
    applyErrors: { window: '5m', for: '10m' },
    reconnectFlapping: { window: '30m', recentWindow: '5m', count: 5, for: '10m' },
    clockSkew: { seconds: 1, for: '15m' },
    schemaDiffers: { for: '5m' },
  },
  dashboards: {
    uidPrefix: 'pgbidi',
    titlePrefix: 'pgbidi',
    tags: ['pgbidi', 'postgresql', 'replication'],
    refresh: '30s',
    timeFrom: 'now-6h',
    variableMetric: 'pgbidi_build_info',
  },
  grafana: {
    folder: 'pgbidi',
    folderUid: 'pgbidi',
    dashboardsPath: '/var/lib/grafana/dashboards/pgbidi',
    datasourceName: 'Prometheus',
    datasourceUid: 'prometheus',
    prometheusUrl: 'http://127.0.0.1:9090',
    traceDatasourceUid: 'tempo',
  },
  kubernetes: {
    namespace: 'pgbidi',
    releaseLabel: 'kube-prometheus-stack',
    appName: 'pgbidi',
    metricsPortName: 'metrics',
    scrapeInterval: '30s',
    scrapeTimeout: '10s',
  },
  alertmanager: {
    groupBy: ['job', 'peer'],
    groupWait: '30s',
    groupInterval: '5m',
    repeatInterval: '4h',
    receivers: { pager: 'pager', chat: 'chat', none: 'null' },
    webhookBaseUrl: 'http://127.0.0.1:9095',
  },
});

export type DeepPartial<T> = { [K in keyof T]?: T[K] extends readonly unknown[] ? T[K] : T[K] extends object ? DeepPartial<T[K]> : T[K] };

/** The defaults with some values replaced (arrays are replaced whole). */
export function artifactConfig(overrides: DeepPartial<ArtifactConfig> = {}): ArtifactConfig {
  return deepFreeze(merge(defaultConfig, overrides) as ArtifactConfig);
}

function merge(base: unknown, over: unknown): unknown {
  if (over === undefined) return base;
  if (!isPlainObject(base) || !isPlainObject(over)) return over;
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(over)) out[k] = merge(base[k], v);
  return out;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function deepFreeze<T>(v: T): T {
  if (typeof v === 'object' && v !== null && !Object.isFrozen(v)) {
    for (const x of Object.values(v)) deepFreeze(x);
    Object.freeze(v);
  }
  return v;
}

/** Seconds in a Prometheus duration (one unit, as this module writes them). */
export function durationSeconds(d: Duration): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(d);
  if (!m) throw new RangeError(`not a single-unit Prometheus duration: ${d}`);
  const n = Number(m[1]);
  const unit = { ms: 0.001, s: 1, m: 60, h: 3600, d: 86400 }[m[2] as 'ms' | 's' | 'm' | 'h' | 'd'];
  return n * unit;
}
