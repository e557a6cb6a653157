import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, mkdtemp, readFile, readdir, readlink, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { scrapeConfigYaml } from '../src/demo/demo-endpoints.js';
import { DemoOptionsError, parseDemoOptions } from '../src/demo/demo-options.js';

const BIN = fileURLToPath(new URL('../bin/pgbidi.js', import.meta.url));
/** --prometheus starts it when installed (CI installs it) and prints install advice otherwise. */
const PROMETHEUS_INSTALLED = spawnSync('prometheus', ['--version'], { stdio: 'ignore' }).error === undefined;

// ---- pure parts: options, scrape config (the view: test/demo/demo-view.test.ts) ----

describe('demo options', () => {
  it('applies the defaults and reads every option', () => {
    expect(parseDemoOptions({})).toEqual({
      nodes: 3,
      durationSeconds: undefined,
      writeRate: 20,
      conflictRate: 2,
      prometheus: false,
      keepData: false,
    });
    expect(parseDemoOptions({ nodes: '2', duration: '7.5', 'write-rate': '0', 'conflict-rate': '10', prometheus: true, 'keep-data': true })).toEqual({
      nodes: 2,
      durationSeconds: 7.5,
      writeRate: 0,
      conflictRate: 10,
      prometheus: true,
      keepData: true,
    });
  });

  it('reports every invalid option at once', () => {
    let error: unknown;
    try {
      parseDemoOptions({ nodes: '1', duration: '0', 'write-rate': 'fast', 'conflict-rate': '-1' });
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(DemoOptionsError);
    const problems = (error as DemoOptionsError).problems;
    expect(problems).toHaveLength(4);
    expect(problems.map((p) => p.split(' ')[0])).toEqual(['--nodes', '--duration', '--write-rate', '--conflict-rate']);
    expect((error as DemoOptionsError).code).toBe('PGBIDI_DEMO_OPTIONS');
  });
});

describe('demo scrape config', () => {
  it('writes a scrape config for job pgbidi (what the shipped rules select) with every agent', () => {
    expect(scrapeConfigYaml([{ address: '127.0.0.1:1234' }, { address: '127.0.0.1:5678' }])).toBe(
      "scrape_configs:\n  - job_name: pgbidi\n    scrape_interval: 5s\n    static_configs:\n      - targets: ['127.0.0.1:1234', '127.0.0.1:5678']\n",
    );
  });
});

// ---- the real thing: `pgbidi demo` as a child process ----

interface DemoRun {
  readonly output: () => string;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  waitFor(pattern: RegExp, timeoutMs: number): Promise<void>;
  signal(sig: NodeJS.Signals): void;
}

/** Runs bin/pgbidi.js with TMPDIR pointing at `tmp`, so that everything the demo creates is under it. */
function startDemo(args: string[], tmp: string): DemoRun {
  const child = spawn(process.execPath, [BIN, 'demo', ...args], {
    env: { ...process.env, TMPDIR: tmp },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  const waiters = new Set<() => void>();
  const onData = (chunk: Buffer): void => {
    output += chunk.toString('utf8');
    for (const w of waiters) w();
  };
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('close', (code, signal) => resolve({ code, signal }));
  });
  return {
    output: () => output,
    exited,
    waitFor(pattern, timeoutMs) {
      return new Promise((resolve, reject) => {
        const check = (): void => {
          if (pattern.test(output)) {
            waiters.delete(check);
            clearTimeout(timer);
            resolve();
          }
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`no ${pattern} in demo output within ${timeoutMs} ms:\n${output}`));
        }, timeoutMs);
        waiters.add(check);
        void exited.then(() => {
          if (waiters.has(check)) {
            waiters.delete(check);
            clearTimeout(timer);
            reject(new Error(`demo exited before printing ${pattern}:\n${output}`));
          }
        });
        check();
      });
    },
    signal(sig) {
      child.kill(sig);
    },
  };
}

/**
 * Live processes that still refer to `dir`: by command line (the postmaster's -D) or by working
 * directory (backends rename themselves, but they run inside their data directory).
 */
async function processesUsing(dir: string): Promise<string[]> {
  const found: string[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const stat = await readFile(`/proc/${entry}/stat`, 'utf8');
      if (stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z')) continue;
      const cmdline = (await readFile(`/proc/${entry}/cmdline`, 'utf8')).split('\0').join(' ');
      const cwd = await readlink(`/proc/${entry}/cwd`).catch(() => '');
      if (cmdline.includes(dir) || cwd.startsWith(dir)) found.push(`${entry}: ${cmdline}`);
    } catch {
      // exited while we looked
    }
  }
  return found;
}

function demoDirOf(output: string): string {
  const match = /temporary directory: (\S+)/.exec(output);
  if (!match?.[1]) throw new Error(`the demo did not print its temporary directory:\n${output}`);
  return match[1];
}

describe.sequential('pgbidi demo (child process, real PostgreSQL)', () => {
  let tmp = '';
  afterEach(async () => {
    if (tmp) await rm(tmp, { recursive: true, force: true });
    tmp = '';
  });

  async function freshTmp(): Promise<string> {
    tmp = await mkdtemp(path.join(tmpdir(), 'pgbidi-demo-test-'));
    // As root the servers run as another user, who must be able to pass through this directory.
    await chmod(tmp, 0o755);
    return tmp;
  }

  async function expectNothingLeft(dir: string): Promise<void> {
    expect(await processesUsing(dir)).toEqual([]);
    expect(existsSync(dir)).toBe(false);
    expect(await readdir(tmp)).toEqual([]);
  }

  it('runs for --duration, shows links, endpoints and convergence, and leaves nothing behind', async () => {
    const run = startDemo(['--duration', '8', '--nodes', '2', '--prometheus'], await freshTmp());
    const { code } = await run.exited;
    const out = run.output();
    expect(code, out).toBe(0);
    const dir = demoDirOf(out);
    expect(dir.startsWith(tmp)).toBe(true);

    // Endpoints of both agents, and a scrape config naming exactly those addresses.
    const metrics = [...out.matchAll(/ (n[12]) {2}http:\/\/(127\.0\.0\.1:\d+)\/metrics {2}http:\/\/127\.0\.0\.1:\d+\/status/g)];
    expect(metrics.map((m) => m[1])).toEqual(['n1', 'n2']);
    expect(out).toContain('scrape_configs:');
    expect(out).toContain(`- targets: [${metrics.map((m) => `'${m[2]}'`).join(', ')}]`);

    // A compact line per second while running, then the full per-link table.
    expect(out.match(/^\[ +\d+s\] n2->n1 streaming .* \| n1->n2 streaming .* \| convergence counters=\w+ events=\w+/gm)?.length).toBeGreaterThanOrEqual(5);
    expect(out).toMatch(/^n2 -> n1 +streaming +\d+\.\ds +[\d.]+ +\d+ +\d+/m);
    expect(out).toMatch(/^n1 -> n2 +streaming +\d+\.\ds +[\d.]+ +\d+ +\d+/m);
    expect(out).toMatch(/^ {2}counters +equal +n1 +\d+ rows +md5 ([0-9a-f]{32})\n +n2 +\d+ rows +md5 \1$/m);
    expect(out).toMatch(/^ {2}events +equal +n1 +\d+ rows +md5 ([0-9a-f]{32})\n +n2 +\d+ rows +md5 \1$/m);
    expect(out).toContain('converged: yes');
    expect(out).toMatch(/^conflicts over the run: /m);
    if (PROMETHEUS_INSTALLED) expect(out).toMatch(/^Prometheus: http:\/\/127\.0\.0\.1:\d+ \(config /m);
    else expect(out).toContain('apt-get install prometheus');

    await expectNothingLeft(dir);
  }, 90_000);

  it('stops cleanly on SIGINT in the middle of the run', async () => {
    const run = startDemo(['--nodes', '2'], await freshTmp());
    // A status line from the third second on; under load a tick can be late and skip a second.
    await run.waitFor(/^\[ +([3-9]|\d{2,})s\] /m, 60_000);
    // One URL shows the whole group: the page, and what it polls, with every node's links.
    const url = /^web view of the whole group \(open it in a browser\): (http:\/\/127\.0\.0\.1:\d+\/)$/m.exec(run.output())?.[1];
    expect(url, run.output()).toBeDefined();
    const page = await fetch(url ?? '');
    expect(page.status).toBe(200);
    expect(await page.text()).toContain('<title>pgbidi demo · 2 nodes</title>');
    const view = (await (await fetch(`${url ?? ''}view.json`)).json()) as { nodes: { node: string; links: { peer: string; state: string }[] }[] };
    expect(view.nodes.map((n) => [n.node, n.links.map((l) => l.peer)])).toEqual([
      ['n1', ['n2']],
      ['n2', ['n1']],
    ]);
    run.signal('SIGINT');
    const { code } = await run.exited;
    const out = run.output();
    expect(code, out).toBe(0);
    expect(out).toContain('SIGINT received: stopping');
    expect(out).toContain('converged: yes');
    await expectNothingLeft(demoDirOf(out));
  }, 90_000);

  it('cleans up when interrupted while the servers start', async () => {
    const run = startDemo(['--nodes', '2'], await freshTmp());
    await run.waitFor(/starting 2 PostgreSQL servers/, 30_000);
    run.signal('SIGTERM');
    const { code } = await run.exited;
    const out = run.output();
    expect(code, out).toBe(130);
    expect(out).toContain('interrupted by SIGTERM during start-up');
    await expectNothingLeft(demoDirOf(out));
  }, 60_000);
});
