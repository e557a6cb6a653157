/**
 * The monitoring artifacts end to end, on live servers: two PostgreSQL nodes, two agents (in this
 * process, on fixed ports), a real Prometheus (1 s scrape and evaluation, the shipped rules with every
 * `for:` shortened by rules({ forOverride }), thresholds and windows as shipped) and a real
 * Alertmanager (the shipped alerts/alertmanager.yml, with its webhooks pointed at a receiver inside
 * this test and short group timings). Then, in this order (each step reads the state the previous one
 * left):
 *   1. a burst of conflicting writes on both nodes: PgbidiConflictRateHigh reaches the chat webhook;
 *   2. every query of every panel and every variable of both shipped dashboards returns data;
 *   3. agent b stops while node a keeps writing: the lag alert reaches the webhook; b restarts on the
 *      same port: the alert resolves, and the rows written meanwhile reach node b.
 */
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent } from '../../src/agent.js';
import { defaultConfig, durationSeconds } from '../../src/artifacts/config.js';
import type { Duration } from '../../src/artifacts/config.js';
import { renderYaml } from '../../src/artifacts/render-format.js';
import { recordingNames, rules } from '../../src/artifacts/rules.js';
import { createLogger } from '../../src/observability/logger.js';
import { freePort } from '../../src/pg-server/free-port.js';
import { embeddedBinDir } from '../../src/pg-server/postgres-binaries.js';
import { LocalCluster } from '../../src/testbed/local-cluster.js';
import { eventually, sleep } from '../support/cluster-fixture.js';
import {
  alertmanagerBinaryName,
  alertmanagerConfigFrom,
  instantQuery,
  labelValues,
  prometheusConfig,
  ServerProcess,
  targetHealth,
} from '../support/e2e-monitoring.js';
import { WebhookReceiver } from '../support/e2e-webhook.js';
import type { Delivery } from '../support/e2e-webhook.js';
import { panelsOf } from './support/dashboard-lint.js';
import { labelValuesSelector } from './support/promql-tree.js';
import { findTool, REPO } from './support/tools.js';

type Obj = Record<string, unknown>;

const prometheusTool = findTool('prometheus', 'prometheus');
const alertmanagerTool = findTool(alertmanagerBinaryName(), 'prometheus-alertmanager');
const skip = prometheusTool.skip || alertmanagerTool.skip;
const note = prometheusTool.note || alertmanagerTool.note;

/** The short `for:` (and keep_firing_for:) of every alert under test. */
const FOR: Duration = '5s';
const INTERVAL = '1s';
/** What `$__rate_interval` stands for: long enough to hold the conflict burst of step 1. */
const RATE_INTERVAL = '1m';
const NODES = ['a', 'b'] as const;
type Node = (typeof NODES)[number];
const UPSERT = 'INSERT INTO t (id, v) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET v = EXCLUDED.v';

/** The job the shipped rules select (config.ts ruleSelector is `job="<name>"`). */
function ruleJob(): string {
  const m = /^job="([^"]+)"$/.exec(defaultConfig.ruleSelector);
  if (!m?.[1]) throw new Error(`this test expects ruleSelector job="<name>", found ${defaultConfig.ruleSelector}`);
  return m[1];
}

/** Writes `UPSERT` in a loop on one node until stopped; counts the statements. */
class Writer {
  private stopped = false;
  private count = 0;
  private failure: Error | null = null;
  private readonly done: Promise<void>;

  constructor(dsn: string, key: (n: number) => number, pauseMs: number) {
    const run = async (): Promise<void> => {
      const client = new pg.Client({ connectionString: dsn });
      client.on('error', () => undefined);
      await client.connect();
      try {
        while (!this.stopped) {
          await client.query(UPSERT, [key(this.count), `w${this.count}`]);
          this.count++;
          if (pauseMs > 0) await sleep(pauseMs);
        }
      } finally {
        await client.end().catch(() => undefined);
      }
    };
    this.done = run().catch((err: unknown) => {
      this.failure = err instanceof Error ? err : new Error(String(err));
    });
  }

  /** Stops the loop; throws what made it stop early, if anything did. */
  async stop(): Promise<number> {
    this.stopped = true;
    await this.done;
    if (this.failure !== null) throw this.failure;
    return this.count;
  }
}

describe(`end to end: agents, Prometheus, Alertmanager and the shipped artifacts${note}`, { skip }, () => {
  let dir = '';
  let cluster: LocalCluster | null = null;
  let webhook: WebhookReceiver | null = null;
  let prometheus: ServerProcess | null = null;
  let alertmanager: ServerProcess | null = null;
  const listen = new Map<Node, string>();
  const writers: Writer[] = [];

  const c = (): LocalCluster => {
    if (!cluster) throw new Error('cluster not started');
    return cluster;
  };
  const prom = (): string => {
    if (!prometheus) throw new Error('prometheus not started');
    return prometheus.baseUrl;
  };
  const hook = (): WebhookReceiver => {
    if (!webhook) throw new Error('webhook not started');
    return webhook;
  };
  const instance = (node: Node): string => listen.get(node) ?? '';

  // LocalCluster.startAgent turns prom-client's default collectors off (several agents share this
  // process); the overview dashboard's process panels read them, so these agents keep them on. A
  // fixed address keeps the scrape target (and the `instance` label) when an agent restarts.
  async function startAgent(node: Node): Promise<Agent> {
    const agent = await Agent.start({ config: c().config(node, instance(node)), log: createLogger('silent'), defaultMetrics: true });
    c().agents.set(node, agent);
    expect(agent.httpAddress).toBe(instance(node));
    return agent;
  }

  /** Diagnostics for a failed wait: what reached the webhook and what the servers said last. */
  function context(): string {
    return [
      `webhook received:\n${webhook?.summary() || '(nothing)'}`,
      `prometheus output (tail):\n${prometheus?.output().slice(-3000) ?? ''}`,
      `alertmanager output (tail):\n${alertmanager?.output().slice(-3000) ?? ''}`,
    ].join('\n');
  }

  async function waitForAlert(what: string, match: (d: Delivery) => boolean, timeoutMs: number): Promise<Delivery> {
    try {
      return await hook().waitFor(what, match, timeoutMs);
    } catch (err) {
      throw new Error(`${err instanceof Error ? err.message : String(err)}\n${context()}`, { cause: err });
    }
  }

  beforeAll(async () => {
    if (prometheusTool.path === null || alertmanagerTool.path === null) throw new Error('prometheus and alertmanager are required when CI=true');
    dir = await mkdtemp(join(tmpdir(), 'pgbidi-e2e-'));
    webhook = await WebhookReceiver.start();
    cluster = await LocalCluster.start({
      binDir: embeddedBinDir(),
      nodes: NODES,
      schema: ['CREATE TABLE t (id int PRIMARY KEY, v text)'],
      // A limit makes pg_replication_slots.safe_wal_size non-null: the "Safe WAL size" panels read it.
      settings: { max_slot_wal_keep_size: '1GB' },
    });
    await cluster.setupAll();
    for (const node of NODES) listen.set(node, `127.0.0.1:${await freePort()}`);
    for (const node of NODES) await startAgent(node);

    const amPort = await freePort();
    const shipped = await readFile(join(REPO, 'alerts/alertmanager.yml'), 'utf8');
    await writeFile(
      join(dir, 'alertmanager.yml'),
      alertmanagerConfigFrom(shipped, {
        shippedBaseUrl: defaultConfig.alertmanager.webhookBaseUrl,
        webhookBaseUrl: webhook.baseUrl,
        groupWait: '1s',
        groupInterval: '1s',
        repeatInterval: '1h',
      }),
    );
    alertmanager = await ServerProcess.start(
      'alertmanager',
      alertmanagerTool.path,
      [
        `--config.file=${join(dir, 'alertmanager.yml')}`,
        `--storage.path=${join(dir, 'alertmanager-data')}`,
        `--web.listen-address=127.0.0.1:${amPort}`,
        '--cluster.listen-address=',
      ],
      `http://127.0.0.1:${amPort}`,
    );

    const promPort = await freePort();
    await writeFile(join(dir, 'rules.yml'), renderYaml(rules({ forOverride: FOR })));
    await writeFile(
      join(dir, 'prometheus.yml'),
      prometheusConfig({
        job: ruleJob(),
        targets: NODES.map(instance),
        ruleFile: join(dir, 'rules.yml'),
        alertmanager: `127.0.0.1:${amPort}`,
        interval: INTERVAL,
      }),
    );
    prometheus = await ServerProcess.start(
      'prometheus',
      prometheusTool.path,
      [
        `--config.file=${join(dir, 'prometheus.yml')}`,
        `--storage.tsdb.path=${join(dir, 'prometheus-data')}`,
        `--web.listen-address=127.0.0.1:${promPort}`,
        // Re-send firing alerts every second instead of every minute (Alertmanager dedups them).
        '--rules.alert.resend-delay=1s',
      ],
      `http://127.0.0.1:${promPort}`,
    );

    await eventually('both agents scraped', async () => {
      const health = await targetHealth(prom());
      return NODES.every((n) => health.get(instance(n)) === 'up');
    });
    await eventually('both links streaming, as Prometheus sees them', async () => {
      const r = await instantQuery(prom(), `sum(pgbidi_link_connected{${defaultConfig.ruleSelector}})`);
      return r.ok && Number(r.series[0]?.value[1]) === NODES.length;
    });
  }, 120_000);

  afterAll(async () => {
    await Promise.all(writers.map((w) => w.stop().catch(() => 0)));
    await prometheus?.stop();
    await alertmanager?.stop();
    await webhook?.close();
    await cluster?.destroy();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('1. a burst of conflicts: PgbidiConflictRateHigh reaches the chat webhook', async () => {
    // The shipped threshold is a rate over the recording window (conflicts per second per link and
    // type, averaged over 5m): at least window × threshold conflicts of one type on one link have to
    // happen. Both nodes upsert the same five keys as fast as they can until the alert arrives; a
    // remote update of a row last written locally is an update_origin_differs conflict.
    const t = defaultConfig.alerts.conflictRate;
    const started = Date.now();
    const burst = NODES.map((n) => new Writer(c().dsn(n), (i) => (i % 5) + 1, 0));
    writers.push(...burst);
    let delivery: Delivery;
    try {
      delivery = await waitForAlert(
        'PgbidiConflictRateHigh firing',
        ({ notification, alert }) => notification.path === 'chat' && alert.status === 'firing' && alert.labels['alertname'] === 'PgbidiConflictRateHigh',
        120_000,
      );
    } finally {
      const counts = await Promise.all(burst.map((w) => w.stop()));
      console.info(`conflict burst: ${counts.join(' + ')} upserts on a + b in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    }
    const { alert, notification } = delivery;
    expect(alert.labels['severity']).toBe('warning');
    expect(alert.labels['job']).toBe(ruleJob());
    expect(NODES.map(instance)).toContain(alert.labels['instance']);
    expect(NODES).toContain(alert.labels['peer']);
    expect(alert.labels['peer']).not.toBe(NODES.find((n) => instance(n) === alert.labels['instance']));
    expect(alert.labels['type']).toBe('update_origin_differs');
    expect(alert.annotations['runbook_url']).toMatch(/\/PgbidiConflictRateHigh\.md$/);
    expect(notification.groupLabels).toEqual({ job: ruleJob(), peer: alert.labels['peer'] });

    // The alert read the recording rule, which read the agent's counter: both agree it crossed.
    const rate = await instantQuery(prom(), `max(${recordingNames().conflictsByType}{${defaultConfig.ruleSelector}})`);
    expect(rate.ok && Number(rate.series[0]?.value[1])).toBeGreaterThan(t.perSecond);
    const total = await instantQuery(prom(), `sum(pgbidi_conflicts_total{${defaultConfig.ruleSelector},type="update_origin_differs"})`);
    expect(total.ok && Number(total.series[0]?.value[1])).toBeGreaterThan(t.perSecond * durationSeconds(defaultConfig.recordingWindow));
    console.info(`conflict alert after ${((notification.receivedAt - started) / 1000).toFixed(1)} s: ${JSON.stringify(alert.labels)}`);
  }, 150_000);

  it('2. every panel query and every variable of the shipped dashboards returns data from that Prometheus', async () => {
    const files = (await readdir(join(REPO, 'dashboards'))).filter((f) => f.endsWith('.json')).sort();
    expect(files.length).toBeGreaterThanOrEqual(2);
    const problems: string[] = [];
    let queries = 0;
    for (const file of files) {
      const dashboard = JSON.parse(await readFile(join(REPO, 'dashboards', file), 'utf8')) as Obj;
      // The link dashboard shows one link: b → a, as agent a applies it. The overview shows all.
      const peer = file === 'pgbidi-link.json' ? 'b' : '.+';
      const substitute = (expr: string): string =>
        expr.replaceAll('$__rate_interval', RATE_INTERVAL).replaceAll('$job', '.+').replaceAll('$instance', '.+').replaceAll('$peer', peer);

      const templating = (dashboard['templating'] as { list?: Obj[] } | undefined)?.list ?? [];
      for (const variable of templating.filter((v) => v['type'] === 'query')) {
        const q = variable['query'];
        const inner = (q as Obj | undefined)?.['query'];
        const text = typeof q === 'string' ? q : typeof inner === 'string' ? inner : '';
        const selector = labelValuesSelector(text);
        const label = /,\s*([A-Za-z_][A-Za-z0-9_]*)\)\s*$/.exec(text)?.[1];
        if (selector === null || !label) {
          problems.push(`${file} variable ${String(variable['name'])}: not a label_values() query: ${text}`);
          continue;
        }
        queries++;
        const values = await labelValues(prom(), substitute(selector), label);
        if (values.length === 0) problems.push(`${file} variable ${String(variable['name'])}: ${text} has no values`);
      }

      for (const panel of panelsOf(dashboard)) {
        for (const target of (panel['targets'] as Obj[] | undefined) ?? []) {
          const where = `${file} "${String(panel['title'])}" ${String(target['refId'])}`;
          queries++;
          const res = await instantQuery(prom(), substitute(String(target['expr'])));
          if (!res.ok) {
            problems.push(`${where}: ${res.error}`);
            continue;
          }
          if (res.series.length === 0) {
            problems.push(`${where}: no series`);
            continue;
          }
          const legend = typeof target['legendFormat'] === 'string' ? target['legendFormat'] : '';
          for (const [, label] of legend.matchAll(/\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}/g)) {
            if (label && !res.series.some((s) => label in s.metric)) problems.push(`${where}: legend {{${label}}} but the result has no "${label}" label`);
          }
        }
      }
    }
    expect(queries).toBeGreaterThan(40);
    expect(problems).toEqual([]);
  }, 60_000);

  it('3. agent b stops while node a writes: the lag alert reaches the webhook; b restarts: it resolves', async () => {
    // Which alert is "the lag alert" here. With agent b down, nothing measures the link a → b: its
    // lag gauges live in agent b, whose series go stale, and PgbidiAgentDown{instance=b} would inhibit
    // any alert of instance b anyway (the shipped inhibition, equal job and instance). What stays
    // observable is the other direction's end-to-end freshness: agent b emits a heartbeat on node b
    // every second, agent a applies them, and once agent b is gone agent a's
    // pgbidi_heartbeat_timestamp_seconds{peer="b"} stops moving. So PgbidiHeartbeatStale{instance=a,
    // peer=b} is the lag alert that fires, after the shipped threshold (60 s) plus the short for:, and
    // nothing inhibits it: its instance is a, and the link b → a (a streaming from node b) stays
    // connected. PgbidiReplicationLagHigh cannot fire: a's lag from b is 0 (b's node is idle), and
    // b's own lag gauges are not scraped.
    const a = instance('a');
    const b = instance('b');
    const hb = defaultConfig.alerts.heartbeatStale;
    const writer = new Writer(c().dsn('a'), (i) => 1000 + i, 100);
    writers.push(writer);
    // Measured from before the stop: agent b may emit its last heartbeat while it drains.
    const stoppedAt = Date.now();
    await c().stopAgent('b');

    const down = await waitForAlert(
      'PgbidiAgentDown firing for agent b on the pager webhook',
      ({ notification, alert }) =>
        notification.path === 'pager' && alert.status === 'firing' && alert.labels['alertname'] === 'PgbidiAgentDown' && alert.labels['instance'] === b,
      60_000,
    );
    const stale = await waitForAlert(
      'PgbidiHeartbeatStale firing for the link b → a',
      ({ notification, alert }) =>
        notification.path === 'chat' &&
        alert.status === 'firing' &&
        alert.labels['alertname'] === 'PgbidiHeartbeatStale' &&
        alert.labels['instance'] === a &&
        alert.labels['peer'] === 'b',
      (hb.warningSeconds + durationSeconds(FOR) + 45) * 1000,
    );
    const staleAfter = (stale.notification.receivedAt - stoppedAt) / 1000;
    expect(stale.alert.labels['severity']).toBe('warning');
    // Not before the threshold: the alert measures the age of the last heartbeat.
    expect(staleAfter).toBeGreaterThanOrEqual(hb.warningSeconds);
    console.info(
      `agent b stopped: PgbidiAgentDown after ${((down.notification.receivedAt - stoppedAt) / 1000).toFixed(1)} s, PgbidiHeartbeatStale after ${staleAfter.toFixed(1)} s`,
    );

    await startAgent('b');
    const restartedAt = Date.now();
    const resolved = await waitForAlert(
      'PgbidiHeartbeatStale resolved for the link b → a',
      ({ notification, alert }) =>
        notification.path === 'chat' &&
        alert.status === 'resolved' &&
        alert.labels['alertname'] === 'PgbidiHeartbeatStale' &&
        alert.labels['instance'] === a &&
        alert.labels['peer'] === 'b',
      60_000,
    );
    expect(resolved.alert.startsAt).toBe(stale.alert.startsAt);
    await waitForAlert(
      'PgbidiAgentDown resolved for agent b',
      ({ notification, alert }) =>
        notification.path === 'pager' && alert.status === 'resolved' && alert.labels['alertname'] === 'PgbidiAgentDown' && alert.labels['instance'] === b,
      30_000,
    );
    console.info(`agent b restarted: PgbidiHeartbeatStale resolved after ${((resolved.notification.receivedAt - restartedAt) / 1000).toFixed(1)} s`);

    const seen = new Set(
      hook()
        .deliveries()
        .map(({ notification, alert }) => `${notification.path} ${alert.status} ${alert.labels['alertname'] ?? '?'}`),
    );
    console.info(`the webhook received: ${[...seen].join(', ')}`);

    const written = await writer.stop();
    expect(written).toBeGreaterThan(0);
    await eventually('the rows node a wrote meanwhile reach node b', async () => {
      const counts = await Promise.all(NODES.map((n) => c().query<{ n: number }>(n, 'SELECT count(*)::int AS n FROM t WHERE id >= 1000')));
      return counts.every((r) => r[0]?.n === written);
    });
  }, 180_000);
});
