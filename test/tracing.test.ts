import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent } from '../src/agent.js';
import type { ConflictRecord } from '../src/conflict/conflict-types.js';
import { RESOLUTIONS } from '../src/conflict/conflict-types.js';
import type { TransactionObserver } from '../src/link/link.js';
import { createLogger } from '../src/observability/logger.js';
import { MAX_CONFLICT_EVENTS, Tracing, parseTraceparent, spanBatchDefaults, tracingDecision, transactionSpan } from '../src/observability/tracing.js';
import type { TracingEnv } from '../src/observability/tracing.js';
import { embeddedBinDir } from '../src/pg-server/postgres-binaries.js';
import { parseLsn } from '../src/protocol/lsn.js';
import { unixMsToPgMicros } from '../src/protocol/pg-time.js';
import { eventually, sleep, useCluster } from './support/cluster-fixture.js';
import { OtlpReceiver, SPAN_KIND_CONSUMER, attributes } from './support/otlp-receiver.js';
import type { ReceivedSpan } from './support/otlp-receiver.js';

type Applied = Parameters<TransactionObserver['applied']>[0];

const TRACE_ID = '4bf92f3577b34da6a3ce929d0e0e4736';
const SPAN_ID = '00f067aa0ba902b7';
const TRACEPARENT = `00-${TRACE_ID}-${SPAN_ID}-01`;

function otelKeys(): Record<string, string | undefined> {
  return Object.fromEntries(Object.entries(process.env).filter(([k]) => k.startsWith('OTEL_')));
}

function receiverEnv(receiver: OtlpReceiver, extra: TracingEnv = {}): TracingEnv {
  return {
    OTEL_TRACES_EXPORTER: 'otlp',
    OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint,
    OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
    OTEL_TRACES_SAMPLER: 'always_on',
    OTEL_BSP_SCHEDULE_DELAY: '100',
    OTEL_SERVICE_NAME: 'pgbidi-test',
    ...extra,
  };
}

function conflict(i: number): ConflictRecord {
  return {
    type: 'insert_exists',
    resolution: 'apply_remote',
    schema: 'public',
    table: 'kv',
    key: [String(i)],
    remoteCommitTimestamp: '2024-01-02 03:04:05.123456+00',
    remoteNode: 'a',
  };
}

function fakeTransaction(over: Partial<Applied> = {}): Applied {
  const started = Date.UTC(2024, 0, 2, 3, 4, 6);
  return {
    peer: 'a',
    // 2024-01-02T03:04:05.123456Z on the peer, commit record at 16/B374D848.
    begin: { tag: 'begin', finalLsn: parseLsn('16/B374D848'), commitTime: unixMsToPgMicros(Date.UTC(2024, 0, 2, 3, 4, 5, 123)) + 456n, xid: 4242 },
    endLsn: parseLsn('16/B374D878'),
    changes: 3,
    conflicts: [conflict(1)],
    startedAtMs: started,
    committedAtMs: started + 25,
    traceparent: TRACEPARENT,
    batches: [{ table: 'public.kv', op: 'insert', rows: 3, startedAtMs: started + 2, endedAtMs: started + 20 }],
    ...over,
  };
}

describe('tracing rule and span shape (no SDK)', () => {
  it('starts only when an exporter or an OTLP endpoint is named, and never when disabled', () => {
    const cases: [TracingEnv, boolean][] = [
      [{}, false],
      [{ OTEL_SERVICE_NAME: 'x', OTEL_TRACES_SAMPLER: 'always_on' }, false],
      [{ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318' }, true],
      [{ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://collector:4318/v1/traces' }, true],
      [{ OTEL_EXPORTER_OTLP_ENDPOINT: '   ' }, false],
      [{ OTEL_TRACES_EXPORTER: 'otlp' }, true],
      [{ OTEL_TRACES_EXPORTER: 'console' }, true],
      [{ OTEL_TRACES_EXPORTER: 'none', OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318' }, false],
      [{ OTEL_TRACES_EXPORTER: 'otlp', OTEL_SDK_DISABLED: 'true' }, false],
      [{ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318', OTEL_SDK_DISABLED: 'TRUE' }, false],
      [{ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318', OTEL_SDK_DISABLED: 'false' }, true],
    ];
    for (const [env, enabled] of cases) expect({ env, enabled: tracingDecision(env).enabled }).toEqual({ env, enabled });
  });

  it('parses W3C traceparent values and rejects invalid ones', () => {
    expect(parseTraceparent(TRACEPARENT)).toEqual({ traceId: TRACE_ID, spanId: SPAN_ID, traceFlags: 1, isRemote: true });
    expect(parseTraceparent(` 00-${TRACE_ID}-${SPAN_ID}-00\n`)?.traceFlags).toBe(0);
    // A later version may append fields; version 00 may not.
    expect(parseTraceparent(`01-${TRACE_ID}-${SPAN_ID}-01-extra`)?.traceId).toBe(TRACE_ID);
    for (const bad of [
      `00-${TRACE_ID}-${SPAN_ID}-01-extra`,
      `ff-${TRACE_ID}-${SPAN_ID}-01`,
      `00-${'0'.repeat(32)}-${SPAN_ID}-01`,
      `00-${TRACE_ID}-${'0'.repeat(16)}-01`,
      `00-${TRACE_ID.toUpperCase()}-${SPAN_ID}-01`,
      `00-${TRACE_ID}-${SPAN_ID}`,
      'not a traceparent',
      '',
    ]) {
      expect({ bad, parsed: parseTraceparent(bad) }).toEqual({ bad, parsed: null });
    }
  });

  it('describes a transaction with messaging attributes, a link and capped conflict events', () => {
    const many = Array.from({ length: MAX_CONFLICT_EVENTS + 5 }, (_, i) => conflict(i));
    const s = transactionSpan(fakeTransaction({ conflicts: many }));
    expect(s.name).toBe('apply a');
    expect(s.attributes).toEqual({
      'messaging.system': 'postgresql',
      'messaging.operation.type': 'process',
      'messaging.operation.name': 'apply',
      'messaging.destination.name': 'a',
      'pgbidi.peer': 'a',
      'pgbidi.commit_lsn': '16/B374D848',
      'pgbidi.xid': 4242,
      'pgbidi.commit_time': '2024-01-02T03:04:05.123456Z',
      'pgbidi.changes': 3,
      'pgbidi.conflicts': MAX_CONFLICT_EVENTS + 5,
    });
    expect(s.links.map((l) => [l.context.traceId, l.context.spanId])).toEqual([[TRACE_ID, SPAN_ID]]);
    expect(s.events).toHaveLength(MAX_CONFLICT_EVENTS);
    expect(s.events[0]).toEqual({
      name: 'conflict',
      attributes: { 'pgbidi.conflict.type': 'insert_exists', 'pgbidi.conflict.resolution': 'apply_remote', 'db.collection.name': 'public.kv' },
    });
    expect(transactionSpan(fakeTransaction({ traceparent: null })).links).toEqual([]);
    expect(transactionSpan(fakeTransaction({ traceparent: 'garbage' })).links).toEqual([]);
  });
});

describe('Tracing with the real NodeSDK and an OTLP/HTTP JSON receiver', () => {
  let receiver: OtlpReceiver;
  beforeAll(async () => {
    receiver = await OtlpReceiver.start();
  });
  afterAll(async () => {
    await receiver.close();
  });

  it('stays off without configuration: no SDK, no trace id', async () => {
    const before = otelKeys();
    const tracing = await Tracing.start({ env: {}, node: 'b', version: 'test' });
    expect(tracing.enabled).toBe(false);
    expect(tracing.applied(fakeTransaction())).toBeUndefined();
    await tracing.shutdown();
    const disabled = await Tracing.start({ env: receiverEnv(receiver, { OTEL_SDK_DISABLED: 'true' }), node: 'b', version: 'test' });
    expect(disabled.enabled).toBe(false);
    expect(otelKeys()).toEqual(before);
  });

  it('exports one CONSUMER span from the env object given, not from process.env, and no OTLP metrics or logs', async () => {
    const before = otelKeys();
    // A conflicting process-wide value, restored below: the env object must win.
    const saved = process.env['OTEL_SERVICE_NAME'];
    process.env['OTEL_SERVICE_NAME'] = 'from-process-env';
    let tracing: Tracing;
    try {
      tracing = await Tracing.start({ env: receiverEnv(receiver, { OTEL_SERVICE_NAME: 'unit-test' }), node: 'b', version: 'test' });
    } finally {
      if (saved === undefined) delete process.env['OTEL_SERVICE_NAME'];
      else process.env['OTEL_SERVICE_NAME'] = saved;
    }
    expect(otelKeys()).toEqual(before);
    expect(tracing.enabled).toBe(true);
    const t = fakeTransaction();
    const traceId = tracing.applied(t);
    expect(traceId).toMatch(/^[0-9a-f]{32}$/);
    expect(traceId).not.toBe(TRACE_ID);
    await tracing.shutdown();

    const all = receiver.spans().filter((s) => s.resource['service.name'] === 'unit-test');
    // One child span per multi-row statement, under the apply span, after the database conventions.
    const children = all.filter((s) => s.span.name !== 'apply a');
    expect(children).toHaveLength(1);
    expect(children[0]?.span.name).toBe('INSERT public.kv');
    expect(children[0]?.span.traceId).toBe(traceId);
    expect(attributes(children[0]?.span.attributes ?? [])).toMatchObject({
      'db.system.name': 'postgresql',
      'db.collection.name': 'public.kv',
      'db.operation.name': 'INSERT',
      'db.operation.batch.size': 3,
    });
    const got = all.filter((s) => s.span.name === 'apply a');
    expect(got).toHaveLength(1);
    const [{ span, resource }] = got as [ReceivedSpan];
    expect(children[0]?.span.parentSpanId).toBe(span.spanId);
    expect(resource['service.instance.id']).toBe('b');
    expect(span.traceId).toBe(traceId);
    expect(span.name).toBe('apply a');
    expect(span.kind).toBe(SPAN_KIND_CONSUMER);
    expect(span.parentSpanId ?? '').toBe('');
    expect(BigInt(span.startTimeUnixNano)).toBe(BigInt(t.startedAtMs) * 1_000_000n);
    expect(BigInt(span.endTimeUnixNano)).toBe(BigInt(t.committedAtMs) * 1_000_000n);
    expect(attributes(span.attributes)).toMatchObject({ 'pgbidi.xid': 4242, 'pgbidi.commit_lsn': '16/B374D848', 'pgbidi.conflicts': 1 });
    expect(span.links?.map((l) => [l.traceId, l.spanId])).toEqual([[TRACE_ID, SPAN_ID]]);
    expect(span.events?.map((e) => e.name)).toEqual(['conflict']);
    await sleep(300);
    expect(receiver.requests.map((r) => r.path).filter((p) => p !== '/v1/traces')).toEqual([]);
  });

  it('ends the span of a failed transaction with an ERROR status and the SQLSTATE', async () => {
    const tracing = await Tracing.start({ env: receiverEnv(receiver, { OTEL_SERVICE_NAME: 'failing' }), node: 'b', version: 'test' });
    const t = fakeTransaction();
    tracing.failed({
      peer: 'a',
      begin: t.begin,
      startedAtMs: t.startedAtMs,
      failedAtMs: t.startedAtMs + 5,
      error: { message: 'duplicate key', code: '23505' },
    });
    await tracing.shutdown();
    const got = receiver.spans().filter((s) => s.resource['service.name'] === 'failing');
    expect(got).toHaveLength(1);
    const span = (got[0] as ReceivedSpan).span as ReceivedSpan['span'] & { status?: { code?: number; message?: string } };
    expect(span.status?.code).toBe(2); // STATUS_CODE_ERROR
    expect(span.status?.message).toBe('duplicate key');
    expect(attributes(span.attributes)).toMatchObject({ 'db.response.status_code': '23505', 'pgbidi.xid': 4242 });
  });

  it('returns no trace id (no exemplar) for spans the sampler drops', async () => {
    const env = receiverEnv(receiver, { OTEL_TRACES_SAMPLER: 'traceidratio', OTEL_TRACES_SAMPLER_ARG: '0', OTEL_SERVICE_NAME: 'never-sampled' });
    const tracing = await Tracing.start({ env, node: 'b', version: 'test' });
    expect(tracing.enabled).toBe(true);
    expect(tracing.applied(fakeTransaction())).toBeUndefined();
    await tracing.shutdown();
    expect(receiver.spans().filter((s) => s.resource['service.name'] === 'never-sampled')).toEqual([]);
  });

  it('queues a burst of spans larger than the SDK default queue (2,048) without dropping any', async () => {
    const tracing = await Tracing.start({ env: receiverEnv(receiver, { OTEL_SERVICE_NAME: 'burst' }), node: 'b', version: 'test' });
    // Ended without yielding to the event loop, as a backlog's transactions are between reads:
    // nothing is exported meanwhile, so only the queue keeps them (the SDK's 2,048 would drop 2,952).
    for (let i = 0; i < 2_500; i++) tracing.applied(fakeTransaction({ conflicts: [] }));
    await tracing.shutdown();
    expect(receiver.spans().filter((s) => s.resource['service.name'] === 'burst')).toHaveLength(5_000);
  });

  it('keeps the batch span processor settings the environment gives', () => {
    expect(spanBatchDefaults({})).toEqual({ OTEL_BSP_MAX_QUEUE_SIZE: '16384', OTEL_BSP_MAX_EXPORT_BATCH_SIZE: '2048' });
    expect(spanBatchDefaults({ OTEL_BSP_MAX_EXPORT_BATCH_SIZE: '100' })).toEqual({ OTEL_BSP_MAX_QUEUE_SIZE: '16384' });
    // A smaller queue set by the operator keeps the SDK's batch size, which never exceeds it.
    expect(spanBatchDefaults({ OTEL_BSP_MAX_QUEUE_SIZE: '1000' })).toEqual({});
  });
});

describe('traces of replicated transactions (PostgreSQL 18)', () => {
  const cluster = useCluster(() => ({
    binDir: embeddedBinDir(),
    nodes: ['a', 'b'],
    schema: ['CREATE TABLE kv (id bigint PRIMARY KEY, v text)'],
  }));
  let receiver: OtlpReceiver;
  beforeAll(async () => {
    receiver = await OtlpReceiver.start();
  });
  afterAll(async () => {
    await receiver.close();
  });

  it('links the apply span to the writer traceparent, records the conflict, and matches the exemplar', async () => {
    const c = cluster.get();
    await c.setupAll();
    // No agent runs yet: b writes key 1 first, then a writes it in a transaction that carries a traceparent.
    await c.query('b', `INSERT INTO kv VALUES (1, 'from b')`);
    const [beforeLsn] = await c.query<{ lsn: string }>('a', 'SELECT pg_current_wal_lsn()::text AS lsn');
    // What an instrumented application does: the traceparent goes into WAL inside its transaction.
    const writer = new pg.Client({ connectionString: c.dsn('a') });
    await writer.connect();
    let xid: string;
    try {
      await writer.query('BEGIN');
      await writer.query(`SELECT pg_logical_emit_message(true, 'traceparent', $1)`, [TRACEPARENT]);
      xid = (await writer.query<{ xid: string }>('SELECT (txid_current() % 4294967296)::text AS xid')).rows[0]?.xid ?? '';
      await writer.query(`INSERT INTO kv VALUES (1, 'from a')`);
      await writer.query('COMMIT');
    } finally {
      await writer.end();
    }
    const [commit] = await c.query<{ commit_time: string; lsn: string }>(
      'a',
      `SELECT to_char(pg_xact_commit_timestamp($1::text::xid) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS commit_time,
              pg_current_wal_lsn()::text AS lsn`,
      [xid],
    );
    // A second transaction without traceparent: its span has no link.
    await c.query('a', `INSERT INTO kv VALUES (2, 'plain')`);

    const agent = await Agent.start({ config: c.config('b'), log: createLogger('silent'), defaultMetrics: false, tracingEnv: receiverEnv(receiver) });
    c.agents.set('b', agent);
    expect(agent.tracing.enabled).toBe(true);

    await eventually('both spans exported', () => receiver.spans().filter((s) => s.span.name === 'apply a').length >= 2);
    const spans = receiver.spans().filter((s) => s.span.name === 'apply a');
    const linked = spans.filter((s) => (s.span.links ?? []).length > 0);
    expect(linked).toHaveLength(1);
    const { span, resource } = linked[0] as ReceivedSpan;
    expect(resource).toMatchObject({ 'service.name': 'pgbidi-test', 'service.instance.id': 'b' });
    expect(span.kind).toBe(SPAN_KIND_CONSUMER);
    expect(span.traceId).not.toBe(TRACE_ID);
    expect(span.links?.map((l) => [l.traceId, l.spanId])).toEqual([[TRACE_ID, SPAN_ID]]);
    const attrs = attributes(span.attributes);
    expect(attrs).toMatchObject({
      'messaging.system': 'postgresql',
      'messaging.operation.type': 'process',
      'messaging.destination.name': 'a',
      'pgbidi.peer': 'a',
      'pgbidi.xid': Number(xid),
      'pgbidi.commit_time': commit?.commit_time,
      'pgbidi.changes': 1,
      'pgbidi.conflicts': 1,
    });
    const commitLsn = parseLsn(String(attrs['pgbidi.commit_lsn']));
    expect(commitLsn > parseLsn(beforeLsn?.lsn ?? '0/0')).toBe(true);
    expect(commitLsn <= parseLsn(commit?.lsn ?? '0/0')).toBe(true);
    expect(BigInt(span.endTimeUnixNano) >= BigInt(span.startTimeUnixNano)).toBe(true);

    expect(span.events?.map((e) => e.name)).toEqual(['conflict']);
    const event = attributes(span.events?.[0]?.attributes);
    expect(event['pgbidi.conflict.type']).toBe('insert_exists');
    expect(event['db.collection.name']).toBe('public.kv');
    expect(RESOLUTIONS).toContain(event['pgbidi.conflict.resolution']);

    const plain = spans.find((s) => (s.span.links ?? []).length === 0);
    expect(attributes(plain?.span.attributes)['pgbidi.conflicts']).toBe(0);
    expect(plain?.span.events ?? []).toEqual([]);

    // The exemplars on the OpenMetrics endpoint point at exported spans, and the conflict metric
    // carries the resolution the span event reported.
    const res = await fetch(`http://${agent.httpAddress}/metrics`, { headers: { accept: 'application/openmetrics-text; version=1.0.0' } });
    expect(res.headers.get('content-type')).toContain('application/openmetrics-text');
    const text = await res.text();
    const exemplarIds = [...text.matchAll(/^pgbidi_transaction_apply_duration_seconds_bucket\{[^}]*peer="a"[^}]*\} \S+ # \{trace_id="([0-9a-f]{32})"\}/gm)].map(
      (m) => m[1],
    );
    expect(exemplarIds.length).toBeGreaterThan(0);
    const exported = new Set(spans.map((s) => s.span.traceId));
    for (const id of exemplarIds) expect(exported.has(id ?? '')).toBe(true);
    const resolution = String(event['pgbidi.conflict.resolution']);
    const conflictLine = new RegExp(`^pgbidi_conflicts_total\\{[^}]*type="insert_exists"[^}]*resolution="${resolution}"[^}]*\\} ([0-9.e+]+)`, 'm');
    const conflictsOnPeerA = [...text.matchAll(new RegExp(conflictLine.source, 'gm'))].filter((m) => m[0].includes('peer="a"')).map((m) => Number(m[1]));
    expect(conflictsOnPeerA.reduce((x, y) => x + y, 0)).toBe(1);

    await c.stopAgent('b');
    expect(receiver.requests.map((r) => r.path).filter((p) => p !== '/v1/traces')).toEqual([]);
  });
});
