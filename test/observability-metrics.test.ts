import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent } from '../src/agent.js';
import { createLogger } from '../src/observability/logger.js';
import { readingFromRow } from '../src/observability/peer-collectors.js';
import { identical } from '../src/testbed/local-cluster.js';
import type { LocalCluster } from '../src/testbed/local-cluster.js';
import { eventually, useCluster } from './support/cluster-fixture.js';
import { OtlpReceiver } from './support/otlp-receiver.js';
import { availableServerVersions } from './support/pg-versions.js';

const SCHEMA = ['CREATE TABLE kv (id bigint PRIMARY KEY, v text)'];

// ---- a small reader of the Prometheus text format (only what the assertions need) ----

interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

interface Exposition {
  readonly types: ReadonlyMap<string, string>;
  readonly helps: ReadonlyMap<string, string>;
  readonly samples: readonly Sample[];
}

function parseExposition(text: string): Exposition {
  const types = new Map<string, string>();
  const helps = new Map<string, string>();
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const meta = /^# (TYPE|HELP) (\S+) (.*)$/.exec(line);
    if (meta) {
      (meta[1] === 'TYPE' ? types : helps).set(meta[2] ?? '', meta[3] ?? '');
      continue;
    }
    if (line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)/.exec(line);
    if (!m) throw new Error(`unparsable exposition line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[l[1] ?? ''] = (l[2] ?? '').replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
    }
    samples.push({ name: m[1] ?? '', labels, value: Number(m[3]) });
  }
  return { types, helps, samples };
}

/** Samples of a family whose labels include `match`. */
function find(e: Exposition, name: string, match: Record<string, string> = {}): Sample[] {
  return e.samples.filter((s) => s.name === name && Object.entries(match).every(([k, v]) => s.labels[k] === v));
}

function one(e: Exposition, name: string, match: Record<string, string> = {}): number {
  const found = find(e, name, match);
  if (found.length !== 1) throw new Error(`expected one sample of ${name}${JSON.stringify(match)}, found ${found.length}`);
  return (found[0] as Sample).value;
}

/** Label names of a family's samples, without the histogram's `le`. */
function labelNames(e: Exposition, family: string, type: string): string[] {
  const names = type === 'histogram' ? [`${family}_bucket`, `${family}_sum`, `${family}_count`] : [family];
  const keys = new Set<string>();
  for (const s of e.samples) if (names.includes(s.name)) for (const k of Object.keys(s.labels)) if (k !== 'le') keys.add(k);
  return [...keys].sort();
}

// The families this test owns the meaning of: [name, type, labels].
const FAMILIES: readonly [string, string, readonly string[]][] = [
  ['pgbidi_build_info', 'gauge', ['node', 'nodejs', 'version']],
  ['pgbidi_link_state', 'gauge', ['peer', 'state']],
  ['pgbidi_link_connected', 'gauge', ['peer']],
  ['pgbidi_link_reconnects_total', 'counter', ['peer']],
  ['pgbidi_transaction_restarts_total', 'counter', ['peer']],
  ['pgbidi_received_lsn_bytes', 'gauge', ['peer']],
  ['pgbidi_applied_lsn_bytes', 'gauge', ['peer']],
  ['pgbidi_confirmed_flush_lsn_bytes', 'gauge', ['peer']],
  ['pgbidi_changes_received_total', 'counter', ['op', 'peer']],
  ['pgbidi_changes_applied_total', 'counter', ['op', 'peer']],
  ['pgbidi_changes_filtered_total', 'counter', ['op', 'peer', 'reason']],
  ['pgbidi_transactions_applied_total', 'counter', ['peer']],
  ['pgbidi_transactions_filtered_total', 'counter', ['peer', 'reason']],
  ['pgbidi_received_bytes_total', 'counter', ['peer']],
  ['pgbidi_replication_lag_seconds', 'gauge', ['peer']],
  ['pgbidi_last_applied_commit_timestamp_seconds', 'gauge', ['peer']],
  ['pgbidi_heartbeat_timestamp_seconds', 'gauge', ['peer']],
  ['pgbidi_transaction_replication_delay_seconds', 'histogram', ['peer']],
  ['pgbidi_transaction_apply_duration_seconds', 'histogram', ['peer']],
  ['pgbidi_transaction_changes', 'histogram', ['peer']],
  ['pgbidi_conflicts_total', 'counter', ['peer', 'resolution', 'table', 'type']],
  ['pgbidi_apply_errors_total', 'counter', ['kind', 'peer']],
  ['pgbidi_queue_changes', 'gauge', ['peer']],
  ['pgbidi_queue_capacity_changes', 'gauge', ['peer']],
  ['pgbidi_apply_lag_bytes', 'gauge', ['peer']],
  ['pgbidi_slot_active', 'gauge', ['peer', 'slot']],
  ['pgbidi_slot_retained_wal_bytes', 'gauge', ['peer', 'slot']],
  ['pgbidi_slot_wal_status', 'gauge', ['peer', 'slot', 'wal_status']],
  ['pgbidi_scrape_errors_total', 'counter', ['peer']],
  ['pgbidi_local_slot_active', 'gauge', ['peer', 'slot']],
  ['pgbidi_local_slot_retained_wal_bytes', 'gauge', ['peer', 'slot']],
  ['pgbidi_local_slot_wal_status', 'gauge', ['peer', 'slot', 'wal_status']],
];

async function scrape(agent: Agent, accept?: string): Promise<{ status: number; contentType: string; text: string }> {
  const res = await fetch(`http://${agent.httpAddress}/metrics`, {
    ...(accept ? { headers: { accept } } : {}),
    signal: AbortSignal.timeout(15_000),
  });
  return { status: res.status, contentType: res.headers.get('content-type') ?? '', text: await res.text() };
}

async function readyz(agent: Agent): Promise<{ status: number; body: { ready: boolean; reasons?: string[] } }> {
  const res = await fetch(`http://${agent.httpAddress}/readyz`, { signal: AbortSignal.timeout(5_000) });
  return { status: res.status, body: (await res.json()) as { ready: boolean; reasons?: string[] } };
}

/** promtool's metric linter; null when promtool is not installed (allowed only outside CI). */
function promtoolCheck(text: string): { status: number | null; output: string } | null {
  const r = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8', timeout: 30_000 });
  if (r.error !== undefined && 'code' in r.error && r.error.code === 'ENOENT') {
    if (process.env['CI'] === 'true') throw new Error('CI=true but promtool is not on PATH (Debian package prometheus)');
    return null;
  }
  if (r.error) throw r.error;
  return { status: r.status, output: `${r.stdout}${r.stderr}` };
}

describe('peer slot readings (pure)', () => {
  const row = {
    current_lsn: '1/00000100',
    slot_name: 'pgbidi_b_to_a',
    active: true,
    confirmed_flush_lsn: '0/FFFFFF00',
    restart_lsn: '0/FFFF0000',
    wal_status: 'reserved',
    safe_wal_size: '1048576',
  };

  it('computes byte distances across the 4 GiB boundary of the LSN halves', () => {
    expect(readingFromRow(row)).toEqual({
      applyLagBytes: 0x200,
      active: true,
      retainedWalBytes: 0x10100,
      safeWalSizeBytes: 1048576,
      walStatus: 'reserved',
    });
  });

  it('leaves the headroom unknown when unlimited or lost, and a missing slot reads as inactive with no positions', () => {
    const lost = readingFromRow({ ...row, active: false, wal_status: 'lost', safe_wal_size: null, restart_lsn: null });
    expect(lost).toMatchObject({ active: false, walStatus: 'lost', safeWalSizeBytes: null, retainedWalBytes: null });
    const missing = readingFromRow({
      ...row,
      slot_name: null,
      active: null,
      confirmed_flush_lsn: null,
      restart_lsn: null,
      wal_status: null,
      safe_wal_size: null,
    });
    expect(missing).toEqual({ applyLagBytes: null, active: false, retainedWalBytes: null, safeWalSizeBytes: null, walStatus: null });
  });
});

describe.each(availableServerVersions())('metrics, exemplars and readiness on $label', ({ binDir }) => {
  const cluster = useCluster(() => ({
    binDir,
    nodes: ['a', 'b'],
    schema: SCHEMA,
    replication: { heartbeat_interval_ms: 300, feedback_interval_ms: 300, reconnect: { initial_delay_ms: 200, max_delay_ms: 1000 } },
  }));
  let receiver: OtlpReceiver;
  let agentA: Agent;
  beforeAll(async () => {
    receiver = await OtlpReceiver.start();
  });
  afterAll(async () => {
    await receiver.close();
  });

  async function startTracedAgent(c: LocalCluster, name: string): Promise<Agent> {
    const agent = await Agent.start({
      config: c.config(name, '127.0.0.1:0'),
      log: createLogger('silent'),
      // The Node.js process metrics too: `promtool check metrics` below covers the whole scrape.
      defaultMetrics: true,
      tracingEnv: {
        OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint,
        OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
        OTEL_BSP_SCHEDULE_DELAY: '100',
      },
    });
    c.agents.set(name, agent);
    return agent;
  }

  it('exports every family with its type and labels, and the values move with a workload that conflicts', async () => {
    const c = cluster.get();
    await c.setupAll();
    // The same key written on both nodes while no agent runs: each side sees insert_exists.
    await c.query('a', `INSERT INTO kv VALUES (1, 'from a')`);
    await c.query('b', `INSERT INTO kv VALUES (1, 'from b')`);
    await c.query('b', `INSERT INTO kv SELECT g, 'b' FROM generate_series(100, 149) g`);
    agentA = await startTracedAgent(c, 'a');
    await c.startAgent('b', createLogger('silent'), '127.0.0.1:0');
    await c.query('b', `UPDATE kv SET v = 'b2' WHERE id BETWEEN 100 AND 109`);
    await c.query('b', `DELETE FROM kv WHERE id BETWEEN 140 AND 149`);
    const hashes = await c.waitConverged('public', 'kv');
    expect(identical(hashes)).toBe(true);
    expect(hashes.get('a')?.rows).toBe(41);

    let e = parseExposition((await scrape(agentA)).text);
    await eventually('a heartbeat from b applied on a', async () => {
      e = parseExposition((await scrape(agentA)).text);
      return one(e, 'pgbidi_heartbeat_timestamp_seconds', { peer: 'b' }) > 0;
    });
    const res = await scrape(agentA);
    expect(res.status).toBe(200);
    expect(res.contentType).toContain('text/plain');
    e = parseExposition(res.text);

    for (const [name, type, labels] of FAMILIES) {
      expect({ name, type: e.types.get(name) }).toEqual({ name, type });
      expect({ name, help: (e.helps.get(name) ?? '').length > 10 }).toEqual({ name, help: true });
      expect({ name, labels: labelNames(e, name, type) }).toEqual({ name, labels: [...labels].sort() });
    }
    // Absent while max_slot_wal_keep_size is unlimited (the default), but declared.
    expect(e.types.get('pgbidi_slot_safe_wal_size_bytes')).toBe('gauge');
    expect(find(e, 'pgbidi_slot_safe_wal_size_bytes')).toEqual([]);

    const peer = { peer: 'b' };
    const slot = { peer: 'b', slot: 'pgbidi_b_to_a' };
    expect(one(e, 'pgbidi_build_info', { node: 'a' })).toBe(1);
    expect(one(e, 'pgbidi_link_state', { ...peer, state: 'streaming' })).toBe(1);
    expect(one(e, 'pgbidi_link_connected', peer)).toBe(1);
    expect(one(e, 'pgbidi_changes_applied_total', { ...peer, op: 'insert' })).toBeGreaterThanOrEqual(50);
    expect(one(e, 'pgbidi_changes_applied_total', { ...peer, op: 'update' })).toBeGreaterThanOrEqual(10);
    expect(one(e, 'pgbidi_changes_applied_total', { ...peer, op: 'delete' })).toBeGreaterThanOrEqual(10);
    expect(one(e, 'pgbidi_changes_received_total', { ...peer, op: 'insert' })).toBeGreaterThanOrEqual(51);
    expect(one(e, 'pgbidi_transactions_applied_total', peer)).toBeGreaterThanOrEqual(4);
    expect(one(e, 'pgbidi_received_bytes_total', peer)).toBeGreaterThan(0);
    const insertExists = find(e, 'pgbidi_conflicts_total', { ...peer, table: 'public.kv', type: 'insert_exists' });
    expect(insertExists.reduce((sum, s) => sum + s.value, 0)).toBe(1);
    expect(one(e, 'pgbidi_transaction_apply_duration_seconds_count', peer)).toBe(one(e, 'pgbidi_transactions_applied_total', peer));
    expect(one(e, 'pgbidi_transaction_replication_delay_seconds_count', peer)).toBeGreaterThanOrEqual(4);
    expect(one(e, 'pgbidi_transaction_changes_sum', peer)).toBeGreaterThanOrEqual(71);
    const now = Date.now() / 1000;
    expect(now - one(e, 'pgbidi_heartbeat_timestamp_seconds', peer)).toBeLessThan(30);
    expect(now - one(e, 'pgbidi_last_applied_commit_timestamp_seconds', peer)).toBeLessThan(120);
    expect(one(e, 'pgbidi_replication_lag_seconds', peer)).toBeGreaterThanOrEqual(0);
    expect(one(e, 'pgbidi_applied_lsn_bytes', peer)).toBeGreaterThan(0);
    expect(one(e, 'pgbidi_confirmed_flush_lsn_bytes', peer)).toBeGreaterThan(0);
    // Scrape-time reads of b.
    const lagBytes = one(e, 'pgbidi_apply_lag_bytes', peer);
    expect(lagBytes).toBeGreaterThanOrEqual(0);
    expect(lagBytes).toBeLessThan(16 * 1024 * 1024);
    expect(one(e, 'pgbidi_slot_active', slot)).toBe(1);
    expect(one(e, 'pgbidi_slot_retained_wal_bytes', slot)).toBeGreaterThanOrEqual(lagBytes);
    expect(
      find(e, 'pgbidi_slot_wal_status', slot)
        .map((s) => [s.labels['wal_status'], s.value])
        .sort(),
    ).toEqual([
      ['extended', 0],
      ['lost', 0],
      ['reserved', 1],
      ['unreserved', 0],
    ]);
    expect(one(e, 'pgbidi_scrape_errors_total', peer)).toBe(0);

    // A WAL limit on b: the headroom appears.
    await c.query('b', `ALTER SYSTEM SET max_slot_wal_keep_size = '1GB'`);
    await c.query('b', 'SELECT pg_reload_conf()');
    try {
      await eventually('safe_wal_size exported', async () => {
        e = parseExposition((await scrape(agentA)).text);
        return find(e, 'pgbidi_slot_safe_wal_size_bytes', slot).length === 1;
      });
      const safe = one(e, 'pgbidi_slot_safe_wal_size_bytes', slot);
      expect(safe).toBeGreaterThan(0);
      expect(safe).toBeLessThan(2 * 1024 * 1024 * 1024);
    } finally {
      await c.query('b', 'ALTER SYSTEM RESET max_slot_wal_keep_size');
      await c.query('b', 'SELECT pg_reload_conf()');
    }

    expect(res.text).toMatch(/^nodejs_active_handles\{type="/m);
    expect(res.text).toMatch(/^process_cpu_seconds_total /m);
    const lint = promtoolCheck(res.text);
    if (lint === null) console.warn('promtool not on PATH: skipped `promtool check metrics`');
    else expect(lint).toEqual({ status: 0, output: '' });

    // The slot on a that b streams from, as a's own agent sees it, also while b's agent is down.
    const local = { peer: 'b', slot: 'pgbidi_a_to_b' };
    expect(one(e, 'pgbidi_local_slot_active', local)).toBe(1);
    expect(one(e, 'pgbidi_local_slot_retained_wal_bytes', local)).toBeGreaterThanOrEqual(0);
    expect(find(e, 'pgbidi_local_slot_wal_status', local).find((x) => x.value === 1)?.labels['wal_status']).toBe('reserved');
    await c.stopAgent('b');
    try {
      await c.query('a', `INSERT INTO kv SELECT g, 'while b is down' FROM generate_series(1000, 1999) g`);
      await eventually('a reports its slot for b inactive and retaining WAL', async () => {
        e = parseExposition((await scrape(agentA)).text);
        return one(e, 'pgbidi_local_slot_active', local) === 0 && one(e, 'pgbidi_local_slot_retained_wal_bytes', local) > 0;
      });
    } finally {
      await c.startAgent('b', createLogger('silent'), '127.0.0.1:0');
    }
  });

  it('serves OpenMetrics with trace-id exemplars when tracing is on', async () => {
    const c = cluster.get();
    await c.query('b', `INSERT INTO kv VALUES (500, 'traced')`);
    await eventually('row 500 on a', async () => (await c.query('a', 'SELECT 1 FROM kv WHERE id = 500')).length === 1);
    const res = await scrape(agentA, 'application/openmetrics-text; version=1.0.0');
    expect(res.status).toBe(200);
    expect(res.contentType).toContain('application/openmetrics-text');
    expect(res.text.trimEnd().endsWith('# EOF')).toBe(true);
    expect(res.text).toMatch(/^# TYPE pgbidi_transactions_applied counter$/m);
    expect(res.text).toMatch(/^pgbidi_transactions_applied_total\{peer="b"\} \d+/m);
    const exemplars = [
      ...res.text.matchAll(
        /^pgbidi_transaction_(?:apply_duration|replication_delay)_seconds_bucket\{[^}]*peer="b"[^}]*\} \S+ # \{trace_id="([0-9a-f]{32})"\} \S+ \S+$/gm,
      ),
    ].map((m) => m[1] ?? '');
    expect(exemplars.length).toBeGreaterThan(0);
    await eventually('the exemplar traces exported', () => {
      const exported = new Set(receiver.spans().map((s) => s.span.traceId));
      return exemplars.every((id) => exported.has(id));
    });
    // prom-client renames counters for OpenMetrics; the text format must keep its _total names.
    const text = await scrape(agentA);
    const after = parseExposition(text.text);
    expect(after.types.get('pgbidi_transactions_applied_total')).toBe('counter');
    expect(after.types.get('pgbidi_scrape_errors_total')).toBe('counter');
    expect(after.types.has('pgbidi_transactions_applied')).toBe(false);
    const lint = promtoolCheck(text.text);
    if (lint !== null) expect(lint).toEqual({ status: 0, output: '' });
    // Tracing off on b: no exemplars there.
    const b = c.agents.get('b') as Agent;
    expect(b.tracing.enabled).toBe(false);
    expect((await scrape(b, 'application/openmetrics-text; version=1.0.0')).text).not.toContain('trace_id=');
  });

  it('is ready while streaming, 503 with a reason when the peer server stops, ready again after it restarts', async () => {
    const c = cluster.get();
    expect(await readyz(agentA)).toEqual({ status: 200, body: { ready: true } });

    await c.server('b').stop();
    let last = await readyz(agentA);
    await eventually('a not ready', async () => {
      last = await readyz(agentA);
      return last.status === 503;
    });
    expect(last.body.ready).toBe(false);
    expect(last.body.reasons?.some((r) => /^link from b is (backoff|connecting)$/.test(r))).toBe(true);
    // Scrapes still answer; the failed reads of b are counted.
    // A scrape shortly after the previous one reuses its reading, so the failure shows on a later one.
    let e = parseExposition((await scrape(agentA)).text);
    await eventually('a failed read of b counted', async () => {
      const started = Date.now();
      e = parseExposition((await scrape(agentA)).text);
      expect(Date.now() - started).toBeLessThan(10_000);
      return one(e, 'pgbidi_scrape_errors_total', { peer: 'b' }) > 0;
    });
    expect(one(e, 'pgbidi_link_connected', { peer: 'b' })).toBe(0);

    await c.server('b').restart();
    await eventually('a ready again', async () => (await readyz(agentA)).status === 200, 60_000);
    expect(await readyz(agentA)).toEqual({ status: 200, body: { ready: true } });
    await eventually('slot active again', async () => {
      const again = parseExposition((await scrape(agentA)).text);
      return one(again, 'pgbidi_slot_active', { peer: 'b', slot: 'pgbidi_b_to_a' }) === 1;
    });
  });
});
