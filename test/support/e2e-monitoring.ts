/**
 * A real Prometheus and a real Alertmanager for the end-to-end monitoring test: their configuration
 * files, the processes (stderr kept for failure messages, always stopped), and the two HTTP calls the
 * test makes of Prometheus. Debian installs Alertmanager as `prometheus-alertmanager`; the upstream
 * tarball calls it `alertmanager`.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import { parse, stringify } from 'yaml';

/** The binary name on PATH: Debian's name first, the upstream one as a fallback. */
export function alertmanagerBinaryName(): string {
  for (const name of ['prometheus-alertmanager', 'alertmanager']) {
    for (const dir of (process.env['PATH'] ?? '').split(delimiter)) {
      if (!dir) continue;
      try {
        accessSync(join(dir, name), constants.X_OK);
        return name;
      } catch {
        // not here
      }
    }
  }
  return 'prometheus-alertmanager';
}

// ---- configuration files ----

export interface PrometheusConfigOptions {
  /** The job name the shipped rules select on (`job="…"` in config.ts's ruleSelector). */
  readonly job: string;
  readonly targets: readonly string[];
  readonly ruleFile: string;
  /** host:port of the Alertmanager. */
  readonly alertmanager: string;
  /** Scrape and rule evaluation interval. */
  readonly interval: string;
}

export function prometheusConfig(o: PrometheusConfigOptions): string {
  return stringify({
    global: { scrape_interval: o.interval, scrape_timeout: o.interval, evaluation_interval: o.interval },
    rule_files: [o.ruleFile],
    alerting: { alertmanagers: [{ static_configs: [{ targets: [o.alertmanager] }] }] },
    scrape_configs: [{ job_name: o.job, static_configs: [{ targets: [...o.targets] }] }],
  });
}

export interface AlertmanagerOverrides {
  /** The shipped receivers post to `${shippedBaseUrl}/<receiver>`; they post to `${webhookBaseUrl}/<receiver>` instead. */
  readonly shippedBaseUrl: string;
  readonly webhookBaseUrl: string;
  readonly groupWait: string;
  readonly groupInterval: string;
  readonly repeatInterval: string;
}

interface WebhookConfig {
  url: string;
}
interface AlertmanagerFile {
  route: Record<string, unknown>;
  receivers: { name: string; webhook_configs?: WebhookConfig[] }[];
}

/**
 * The shipped alerts/alertmanager.yml with only the webhook URLs and the route's timings replaced:
 * its routes, grouping and inhibition rules are what the test exercises. Fails when a receiver posts
 * somewhere other than the shipped base URL (the test would not see those notifications).
 */
export function alertmanagerConfigFrom(shipped: string, o: AlertmanagerOverrides): string {
  const config = parse(shipped) as AlertmanagerFile;
  for (const receiver of config.receivers) {
    for (const hook of receiver.webhook_configs ?? []) {
      if (!hook.url.startsWith(`${o.shippedBaseUrl}/`)) throw new Error(`receiver ${receiver.name} posts to ${hook.url}, not under ${o.shippedBaseUrl}`);
      hook.url = o.webhookBaseUrl + hook.url.slice(o.shippedBaseUrl.length);
    }
  }
  config.route['group_wait'] = o.groupWait;
  config.route['group_interval'] = o.groupInterval;
  config.route['repeat_interval'] = o.repeatInterval;
  return stringify(config);
}

// ---- processes ----

const OUTPUT_KEPT = 16_000;

/** A child process whose stderr and stdout tail is kept, stopped with SIGTERM (SIGKILL after 10 s). */
export class ServerProcess {
  private tail = '';
  private readonly exited: Promise<void>;

  private constructor(
    readonly name: string,
    private readonly child: ChildProcess,
    readonly baseUrl: string,
  ) {
    const keep = (chunk: Buffer): void => {
      this.tail = (this.tail + chunk.toString('utf8')).slice(-OUTPUT_KEPT);
    };
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    this.exited = new Promise((resolve) => child.once('exit', () => resolve()));
  }

  /** Starts `path args` and waits until GET `${baseUrl}/-/ready` answers 200. */
  static async start(name: string, path: string, args: readonly string[], baseUrl: string, timeoutMs = 30_000): Promise<ServerProcess> {
    const child = spawn(path, [...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    const p = new ServerProcess(name, child, baseUrl);
    const spawned = new Promise<void>((resolve, reject) => {
      child.once('spawn', resolve);
      child.once('error', reject);
    });
    try {
      await spawned;
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        if (child.exitCode !== null) throw new Error(`${name} exited with ${child.exitCode}`);
        const ready = await fetch(`${baseUrl}/-/ready`).then(
          (r) => r.ok,
          () => false,
        );
        if (ready) return p;
        if (Date.now() > deadline) throw new Error(`${name} not ready within ${timeoutMs} ms`);
        await new Promise((r) => setTimeout(r, 200));
      }
    } catch (err) {
      await p.stop();
      throw new Error(`${err instanceof Error ? err.message : String(err)}; output:\n${p.output()}`, { cause: err });
    }
  }

  /** The last lines the process wrote, for failure messages. */
  output(): string {
    return this.tail;
  }

  async stop(): Promise<void> {
    const c = this.child;
    if (c.exitCode !== null || c.signalCode !== null || c.pid === undefined) return;
    c.kill('SIGTERM');
    const killer = setTimeout(() => c.kill('SIGKILL'), 10_000);
    await this.exited;
    clearTimeout(killer);
  }
}

// ---- Prometheus HTTP API ----

export interface Series {
  readonly metric: Readonly<Record<string, string>>;
  readonly value: readonly [number, string];
}

export type QueryResult = { readonly ok: true; readonly series: readonly Series[] } | { readonly ok: false; readonly error: string };

/** An instant query; `time` in Unix seconds, default now. */
export async function instantQuery(base: string, expr: string, time?: number): Promise<QueryResult> {
  const params = new URLSearchParams({ query: expr, ...(time === undefined ? {} : { time: String(time) }) });
  const res = (await (await fetch(`${base}/api/v1/query?${params.toString()}`)).json()) as {
    status: string;
    error?: string;
    data?: { resultType: string; result: Series[] | [number, string] };
  };
  if (res.status !== 'success') return { ok: false, error: res.error ?? res.status };
  const data = res.data;
  if (data?.resultType === 'scalar') return { ok: true, series: [{ metric: {}, value: data.result as [number, string] }] };
  return { ok: true, series: (data?.result as Series[] | undefined) ?? [] };
}

/** Values of `label` on the series matching `selector` (what Grafana's label_values(selector, label) shows). */
export async function labelValues(base: string, selector: string, label: string): Promise<string[]> {
  const params = new URLSearchParams({ 'match[]': selector });
  const res = (await (await fetch(`${base}/api/v1/label/${encodeURIComponent(label)}/values?${params.toString()}`)).json()) as {
    status: string;
    data?: string[];
  };
  return res.status === 'success' ? (res.data ?? []) : [];
}

/** The scrape targets' health by instance, from /api/v1/targets. */
export async function targetHealth(base: string): Promise<Map<string, string>> {
  const res = (await (await fetch(`${base}/api/v1/targets?state=active`)).json()) as {
    data?: { activeTargets?: { labels: Record<string, string>; health: string }[] };
  };
  return new Map((res.data?.activeTargets ?? []).map((t) => [t.labels['instance'] ?? '', t.health]));
}
