/**
 * OpenTelemetry traces: one CONSUMER span per remote transaction applied on this node.
 *
 * When tracing is on (see tracingDecision for the rule) the agent starts `@opentelemetry/sdk-node`'s
 * NodeSDK configured by the standard OTEL_* variables (exporter, endpoint, protocol, headers,
 * sampler, resource, batch processor). When it is off, the SDK is not even imported and the agent
 * installs no observer at all, so a transaction pays nothing.
 *
 * Span shape (messaging semantic conventions, "process" span of a consumer):
 *   name `apply <peer>`, kind CONSUMER, a new trace root, started at the local BEGIN and ended at
 *   the local COMMIT (created after the fact from the link's timestamps);
 *   attributes messaging.system=postgresql, messaging.operation.type=process,
 *   messaging.operation.name=apply, messaging.destination.name=<peer>, pgbidi.peer,
 *   pgbidi.commit_lsn, pgbidi.xid, pgbidi.commit_time, pgbidi.changes, pgbidi.conflicts;
 *   one `conflict` event per conflict (at most MAX_CONFLICT_EVENTS);
 *   a span link to the writer's span when the transaction carried a W3C traceparent in a
 *   transactional logical message with prefix 'traceparent' (pg_logical_emit_message(true, …)).
 * The trace id of a sampled span becomes the exemplar of the apply-duration and delay histograms.
 *
 * The NodeSDK reads process.env itself, so Tracing takes an explicit env object and lays its OTEL_*
 * variables over process.env only for the synchronous construction and start of the SDK (every
 * variable is read there; exporters and the batch processor keep what they read). Two agents in one
 * process (tests) therefore get the configurations they were given, and nothing leaks afterwards.
 * Each Tracing keeps its own tracer provider: the global one registered by the SDK is never used.
 */
import { ProxyTracerProvider, ROOT_CONTEXT, SpanKind, SpanStatusCode, TraceFlags, trace } from '@opentelemetry/api';
import type { Attributes, Link, SpanContext, Tracer } from '@opentelemetry/api';
import type { NodeSDK } from '@opentelemetry/sdk-node';
import type { TransactionObserver } from '../link/link.js';
import { formatLsn } from '../protocol/lsn.js';
import { formatPgTimestamp } from '../protocol/pg-time.js';
import type { Logger } from './logger.js';

/** The environment tracing is configured from (process.env in production, a plain object in tests). */
export type TracingEnv = Readonly<Record<string, string | undefined>>;

/** Above this many conflicts in one transaction the span keeps the count (pgbidi.conflicts) only. */
export const MAX_CONFLICT_EVENTS = 100;

const TRACER_NAME = 'pgbidi';

export type TracingDecision = { readonly enabled: true; readonly reason: string } | { readonly enabled: false; readonly reason: string };

/**
 * Whether tracing starts. The rule, in order:
 *   1. OTEL_SDK_DISABLED=true                              → off (the standard kill switch);
 *   2. OTEL_TRACES_EXPORTER=none                           → off;
 *   3. OTEL_TRACES_EXPORTER names exporters (otlp, console, zipkin) → on;
 *   4. OTEL_TRACES_EXPORTER unset and OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT
 *      set                                                → on, with the OTLP exporter;
 *   5. otherwise                                          → off.
 * Unlike a bare NodeSDK, an agent with no OTEL_* configuration does not push spans to
 * localhost:4318: tracing is opt-in by naming an exporter or an endpoint.
 */
export function tracingDecision(env: TracingEnv): TracingDecision {
  if (value(env, 'OTEL_SDK_DISABLED')?.toLowerCase() === 'true') return { enabled: false, reason: 'OTEL_SDK_DISABLED=true' };
  const exporters = (value(env, 'OTEL_TRACES_EXPORTER') ?? '')
    .split(',')
    .map((s) => s.trim().toLowerCase())
    .filter((s) => s !== '');
  if (exporters.length === 1 && exporters[0] === 'none') return { enabled: false, reason: 'OTEL_TRACES_EXPORTER=none' };
  if (exporters.length > 0) return { enabled: true, reason: `OTEL_TRACES_EXPORTER=${exporters.join(',')}` };
  for (const key of ['OTEL_EXPORTER_OTLP_TRACES_ENDPOINT', 'OTEL_EXPORTER_OTLP_ENDPOINT']) {
    if (value(env, key) !== undefined) return { enabled: true, reason: `${key} is set` };
  }
  return { enabled: false, reason: 'neither OTEL_TRACES_EXPORTER nor an OTLP endpoint is set' };
}

function value(env: TracingEnv, key: string): string | undefined {
  const v = env[key]?.trim();
  return v ? v : undefined;
}

/**
 * Parses a W3C Trace Context `traceparent` header value ("00-<32 hex trace id>-<16 hex span id>-<2 hex
 * flags>"). Returns null for anything invalid: a malformed value from an application must not fail
 * the apply, it only loses the link.
 */
export function parseTraceparent(text: string): SpanContext | null {
  const m = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-[^]*)?$/.exec(text.trim());
  if (!m || m[1] === undefined || m[2] === undefined || m[3] === undefined || m[4] === undefined) return null;
  const [, version, traceId, spanId, flags, rest] = m;
  if (version === 'ff' || (version === '00' && rest !== undefined)) return null;
  if (/^0+$/.test(traceId) || /^0+$/.test(spanId)) return null;
  return { traceId, spanId, traceFlags: Number.parseInt(flags, 16) & TraceFlags.SAMPLED, isRemote: true };
}

type AppliedTransaction = Parameters<TransactionObserver['applied']>[0];

/** What identifies a peer transaction on its apply span, applied or failed. */
function transactionAttributes(peer: string, begin: AppliedTransaction['begin']): Attributes {
  return {
    'messaging.system': 'postgresql',
    'messaging.operation.type': 'process',
    'messaging.operation.name': 'apply',
    'messaging.destination.name': peer,
    'pgbidi.peer': peer,
    'pgbidi.commit_lsn': formatLsn(begin.finalLsn),
    'pgbidi.xid': begin.xid,
    'pgbidi.commit_time': isoTimestamp(begin.commitTime),
  };
}

const NO_LINKS: readonly Link[] = Object.freeze([]);
const NO_EVENTS: readonly { name: string; attributes: Attributes }[] = Object.freeze([]);

/**
 * The span for one applied transaction, as data (pure, unit-testable without an SDK). Built for the
 * common case of tens of thousands a second: one attribute object, no arrays when there are no
 * links or conflicts.
 */
export function transactionSpan(t: AppliedTransaction): {
  name: string;
  attributes: Attributes;
  links: readonly Link[];
  events: readonly { name: string; attributes: Attributes }[];
} {
  const attributes = transactionAttributes(t.peer, t.begin);
  attributes['pgbidi.changes'] = t.changes;
  attributes['pgbidi.conflicts'] = t.conflicts.length;
  const parent = t.traceparent === null ? null : parseTraceparent(t.traceparent);
  const links = parent ? [{ context: parent, attributes: { 'pgbidi.link.source': 'traceparent' } }] : NO_LINKS;
  const events =
    t.conflicts.length === 0
      ? NO_EVENTS
      : t.conflicts.slice(0, MAX_CONFLICT_EVENTS).map((c) => ({
          name: 'conflict',
          attributes: {
            'pgbidi.conflict.type': c.type,
            'pgbidi.conflict.resolution': c.resolution,
            'db.collection.name': `${c.schema}.${c.table}`,
          },
        }));
  return { name: `apply ${t.peer}`, attributes, links, events };
}

/** Child spans per transaction: one per multi-row statement, capped so a huge transaction stays cheap. */
const MAX_BATCH_SPANS = 50;

/**
 * The CLIENT span of one multi-row statement, after the database semantic conventions
 * (db.system.name, db.collection.name, db.operation.name, db.operation.batch.size).
 */
export function batchSpan(b: AppliedTransaction['batches'][number]): { name: string; attributes: Attributes } {
  const operation = b.op.toUpperCase();
  return {
    name: `${operation} ${b.table}`,
    attributes: {
      'db.system.name': 'postgresql',
      'db.collection.name': b.table,
      'db.operation.name': operation,
      'db.operation.batch.size': b.rows,
    },
  };
}

/** ISO 8601 with the microseconds PostgreSQL keeps ("2024-01-02T03:04:05.123456Z"). */
function isoTimestamp(ts: bigint): string {
  const text = formatPgTimestamp(ts); // "2024-01-02 03:04:05.123456+00"
  return `${text.slice(0, 10)}T${text.slice(11, -3)}Z`;
}

/** The part of the SDK's tracer provider that Tracing uses. */
interface OwnTracerProvider {
  getTracer(name: string, version?: string): Tracer;
  forceFlush(): Promise<void>;
  shutdown(): Promise<void>;
}

export interface TracingOptions {
  readonly env: TracingEnv;
  /** This node's name: the resource's service.instance.id unless OTEL_RESOURCE_ATTRIBUTES sets it. */
  readonly node: string;
  readonly version: string;
  readonly log?: Logger;
}

export class Tracing implements TransactionObserver {
  private constructor(
    readonly decision: TracingDecision,
    private readonly sdk: NodeSDK | null,
    private readonly provider: OwnTracerProvider | null,
    private readonly tracer: Tracer | null,
  ) {}

  /** Tracing that does nothing (tracing off). */
  static off(reason = 'disabled'): Tracing {
    return new Tracing({ enabled: false, reason }, null, null, null);
  }

  /** Starts the SDK when the OTEL_* variables in `env` enable tracing; otherwise returns Tracing.off. */
  static async start(options: TracingOptions): Promise<Tracing> {
    const decision = tracingDecision(options.env);
    if (!decision.enabled) {
      options.log?.debug({ component: 'tracing', reason: decision.reason }, 'tracing off');
      return Tracing.off(decision.reason);
    }
    // Loaded only when on: the SDK and its exporters are a large module graph.
    const { NodeSDK, resources } = await import('@opentelemetry/sdk-node');
    const { defaultResource, resourceFromAttributes } = resources;
    const sdk = withOtelEnv(options.env, () => {
      const s = new NodeSDK({
        resource: defaultResource().merge(
          resourceFromAttributes({
            'service.name': 'pgbidi',
            'service.version': options.version,
            'service.instance.id': options.node,
          }),
        ),
        // prom-client serves metrics and pino writes logs: no OTLP metrics or logs, whatever the env
        // says (withOtelEnv also forces OTEL_METRICS_EXPORTER/OTEL_LOGS_EXPORTER=none).
        metricReaders: [],
        instrumentations: [],
        // Spans are created from explicit timestamps with a root context: no global context manager
        // or propagator is needed. NodeSDK documents null as "do not register" (its .d.ts omits it).
        contextManager: null as never,
        textMapPropagator: null,
      });
      s.start();
      return s;
    });
    const provider = ownProvider(sdk);
    if (!provider) {
      await sdk.shutdown().catch(() => undefined);
      const reason = 'the OpenTelemetry SDK configured no span exporter (check OTEL_TRACES_EXPORTER and OTEL_EXPORTER_OTLP_*_PROTOCOL)';
      options.log?.warn({ component: 'tracing' }, reason);
      return Tracing.off(reason);
    }
    options.log?.info({ component: 'tracing', reason: decision.reason }, 'tracing on');
    return new Tracing(decision, sdk, provider, provider.getTracer(TRACER_NAME, options.version));
  }

  get enabled(): boolean {
    return this.tracer !== null;
  }

  /** Records the span of one applied transaction; returns its trace id when sampled. */
  applied(t: AppliedTransaction): string | undefined {
    const tracer = this.tracer;
    if (!tracer) return undefined;
    const shape = transactionSpan(t);
    const span = tracer.startSpan(
      shape.name,
      { kind: SpanKind.CONSUMER, startTime: t.startedAtMs, attributes: shape.attributes, links: shape.links as Link[], root: true },
      ROOT_CONTEXT,
    );
    for (const e of shape.events) span.addEvent(e.name, e.attributes, t.committedAtMs);
    if (t.batches.length > 0) {
      const parent = trace.setSpan(ROOT_CONTEXT, span);
      for (const b of t.batches.slice(0, MAX_BATCH_SPANS)) {
        const child = batchSpan(b);
        tracer.startSpan(child.name, { kind: SpanKind.CLIENT, startTime: b.startedAtMs, attributes: child.attributes }, parent).end(b.endedAtMs);
      }
    }
    span.end(t.committedAtMs);
    const ctx = span.spanContext();
    return (ctx.traceFlags & TraceFlags.SAMPLED) !== 0 ? ctx.traceId : undefined;
  }

  /** A transaction that failed: its span ends with an ERROR status and the SQLSTATE. */
  failed(t: Parameters<NonNullable<TransactionObserver['failed']>>[0]): void {
    const tracer = this.tracer;
    if (!tracer) return;
    const span = tracer.startSpan(
      `apply ${t.peer}`,
      {
        kind: SpanKind.CONSUMER,
        startTime: t.startedAtMs,
        root: true,
        attributes: {
          ...transactionAttributes(t.peer, t.begin),
          ...(t.error.code ? { 'db.response.status_code': t.error.code, 'error.type': t.error.code } : {}),
        },
      },
      ROOT_CONTEXT,
    );
    span.setStatus({ code: SpanStatusCode.ERROR, message: t.error.message });
    span.end(t.failedAtMs);
  }

  /** Exports the spans ended so far. */
  async flush(): Promise<void> {
    await this.provider?.forceFlush();
  }

  /** Flushes and stops the SDK (idempotent). */
  async shutdown(): Promise<void> {
    const sdk = this.sdk;
    if (!sdk) return;
    // The SDK registered our provider as the global one if it was first; do not leave a dead one.
    const global = trace.getTracerProvider();
    if (global instanceof ProxyTracerProvider && global.getDelegate() === (this.provider as unknown)) trace.disable();
    await sdk.shutdown();
  }
}

/**
 * NodeSDK builds its tracer provider in start() and only publishes it as the global provider, which
 * a second agent in the same process cannot claim. Its own reference is the private field
 * `_tracerProvider` (sdk-node 0.223); checked here at run time so that an SDK upgrade that renames it
 * turns tracing off with a warning instead of failing (test/tracing.test.ts would catch it).
 */
function ownProvider(sdk: NodeSDK): OwnTracerProvider | null {
  const p = (sdk as unknown as { _tracerProvider?: Partial<OwnTracerProvider> })._tracerProvider;
  if (p && typeof p.getTracer === 'function' && typeof p.forceFlush === 'function' && typeof p.shutdown === 'function') {
    return p as OwnTracerProvider;
  }
  return null;
}

/**
 * The batch span processor's queue and export batch when `env` does not set them. The SDK's defaults
 * (2,048 spans queued, 512 per export, one export at a time) suit a request server; an agent catching
 * up ends a span per applied transaction, tens of thousands a second, and with those defaults its
 * processor dropped 2 % of them (W2 backlog on PostgreSQL 15, ~12,000 transactions/s, spans
 * exported over OTLP/HTTP to a local sink). A larger batch makes fewer requests for the same spans;
 * the queue holds about a second of them while one export is in flight.
 */
export function spanBatchDefaults(env: TracingEnv): Record<string, string> {
  if (value(env, 'OTEL_BSP_MAX_QUEUE_SIZE') !== undefined) return {};
  return {
    OTEL_BSP_MAX_QUEUE_SIZE: '16384',
    ...(value(env, 'OTEL_BSP_MAX_EXPORT_BATCH_SIZE') === undefined ? { OTEL_BSP_MAX_EXPORT_BATCH_SIZE: '2048' } : {}),
  };
}

/**
 * Runs `fn` (synchronously) with process.env's OTEL_* variables replaced by those of `env` (over
 * spanBatchDefaults), OTLP metrics and logs forced off, and restores process.env before returning.
 */
function withOtelEnv<T>(env: TracingEnv, fn: () => T): T {
  const saved = new Map<string, string | undefined>();
  const set = (key: string, v: string | undefined): void => {
    if (!saved.has(key)) saved.set(key, process.env[key]);
    if (v === undefined) delete process.env[key];
    else process.env[key] = v;
  };
  const overlay = { ...spanBatchDefaults(env), ...env };
  for (const key of Object.keys(process.env)) if (key.startsWith('OTEL_')) set(key, undefined);
  for (const [key, v] of Object.entries(overlay)) if (key.startsWith('OTEL_')) set(key, v);
  set('OTEL_METRICS_EXPORTER', 'none');
  set('OTEL_LOGS_EXPORTER', 'none');
  try {
    return fn();
  } finally {
    for (const [key, v] of saved) {
      if (v === undefined) delete process.env[key];
      else process.env[key] = v;
    }
  }
}
