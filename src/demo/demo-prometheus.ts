/**
 * `pgbidi demo --prometheus`: a local Prometheus scraping the demo's agents with the shipped rules,
 * when the binary is installed. Optional in every way: it never fails the demo.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort } from '../pg-server/free-port.js';
import { settlesWithin } from '../util/settles-within.js';
import type { ScrapeTarget } from './demo-endpoints.js';
import { scrapeConfigYaml, shippedRuleFiles } from './demo-endpoints.js';

const PROMETHEUS_READY_TIMEOUT_MS = 20_000;
const PROMETHEUS_STOP_TIMEOUT_MS = 10_000;

export interface RunningPrometheus {
  stop(): Promise<void>;
}

/** Starts Prometheus when the binary is installed; otherwise says how to get it. Never fails the demo. */
export async function startPrometheus(dir: string, targets: readonly ScrapeTarget[], say: (line: string) => void): Promise<RunningPrometheus | undefined> {
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
