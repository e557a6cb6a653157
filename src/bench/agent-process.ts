/**
 * One pgbidi agent as a child process, `node bin/pgbidi.js run --config <file>`, exactly as an
 * operator runs it, so that its CPU time and memory are its own (in this process they would mix with
 * the probes') and the bench treats the agent as a black box.
 *
 *   start() ─ config written ─ spawn ─ /status answers with its node (CPU baseline taken) ─> running ─ stop() ─> gone
 *
 * CPU is counted from the moment /status first answers with its node, so Node's start-up and module loading
 * (a fixed cost of each start, not a per-transaction one) stay out of the per-transaction figures. Every child still running when this process exits is SIGKILLed.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { closeSync, openSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { stringify } from 'yaml';
import type { RawConfig } from '../config/config-schema.js';
import { signalAndWait } from '../util/child-exit.js';
import { BenchError } from './bench-error.js';
import { DroppedSpanCounter } from './dropped-spans.js';
import { now } from './bench-settings.js';
import { processCpuSeconds, processPeakRssBytes } from './proc-stats.js';
import { errorMessage } from '../util/error-message.js';

const BIN = fileURLToPath(new URL('../../bin/pgbidi.js', import.meta.url));
const READY_TIMEOUT_MS = 60_000;
const STOP_GRACE_MS = 10_000;

const running = new Set<AgentProcess>();
let exitHookInstalled = false;

export interface AgentProcessOptions {
  /** The node's name, for messages and file names. */
  readonly name: string;
  /** Its config; http.listen must name a fixed port (the bench reads /status there). */
  readonly config: RawConfig;
  /** Where the config file (and the log file) go. */
  readonly dir: string;
  /** Write the agent's stdout (its pino log) to this file; absent: discard it. */
  readonly logFile?: string;
  /** The child's environment (OTEL_* for tracing); the bench's own OTEL_* are never passed on. */
  readonly env?: Readonly<Record<string, string>>;
}

/** The part of `/status` the bench reads. */
export interface AgentLinkStatus {
  readonly peer: string;
  readonly state: string;
  readonly transactionsApplied: number;
  readonly lastError: { readonly message: string } | null;
}

/**
 * PGBIDI_BENCH_CPU_PROF_DIR=DIR runs every agent under `node --cpu-prof`, its profile written to
 * DIR/<node>/ when it stops: to profile before optimizing (NODE_OPTIONS cannot carry --cpu-prof).
 */
function profileArgs(name: string): string[] {
  const dir = process.env['PGBIDI_BENCH_CPU_PROF_DIR'];
  return dir ? ['--cpu-prof', `--cpu-prof-dir=${join(dir, name)}`] : [];
}

export class AgentProcess {
  private cpuAtReady = 0;
  private stderrTail = '';
  private readonly dropped = new DroppedSpanCounter();
  private stopRequested = false;
  /** now() when /status first answered with its node. */
  readyAt = 0;

  private constructor(
    readonly name: string,
    private readonly child: ChildProcess,
    readonly httpAddress: string,
    /** now() right before the spawn. */
    readonly spawnedAt: number,
  ) {}

  static async start(options: AgentProcessOptions): Promise<AgentProcess> {
    const listen = options.config.http?.listen;
    if (!listen || listen.endsWith(':0')) throw new BenchError('BENCH_UNEXPECTED', `agent ${options.name}: http.listen needs a fixed port`);
    const configPath = join(options.dir, `${options.name}.yaml`);
    writeFileSync(configPath, stringify(options.config));
    const logFd = options.logFile ? openSync(options.logFile, 'a') : null;
    const spawnedAt = now();
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('OTEL_')));
    const child = spawn(process.execPath, [...profileArgs(options.name), BIN, 'run', '--config', configPath], {
      stdio: ['ignore', logFd ?? 'ignore', 'pipe'],
      env: { ...env, ...options.env },
    });
    if (logFd !== null) closeSync(logFd);
    const agent = new AgentProcess(options.name, child, listen, spawnedAt);
    child.stderr?.setEncoding('utf8').on('data', (s: string) => {
      agent.stderrTail = (agent.stderrTail + s).slice(-4000);
      agent.dropped.push(s);
    });
    running.add(agent);
    child.once('exit', (code, signal) => {
      running.delete(agent);
      // A crash is a result in itself: say so at once with what the agent wrote, rather than only
      // through the timeout of whatever waits for its rows.
      if (!agent.stopRequested) {
        process.stderr.write(
          `\nbench: agent ${options.name} exited unexpectedly (${code ?? signal ?? '?'}): ${agent.stderrTail.slice(-3000) || '(no stderr)'}\n`,
        );
      }
    });
    installExitHook();
    try {
      await agent.waitReady();
    } catch (err) {
      await agent.stop();
      throw err;
    }
    agent.readyAt = now();
    agent.cpuAtReady = processCpuSeconds(child.pid ?? 0) ?? 0;
    return agent;
  }

  get pid(): number {
    return this.child.pid ?? 0;
  }

  /** CPU seconds (user + system, all threads) since the agent answered /status; null once gone. */
  cpuSeconds(): number | null {
    const total = processCpuSeconds(this.pid);
    return total === null ? null : total - this.cpuAtReady;
  }

  /** Spans the agent's batch span processor reported dropped so far (tracing with OTEL_LOG_LEVEL set). */
  get droppedSpans(): number {
    return this.dropped.total;
  }

  /** Peak resident set size (VmHWM) so far, in bytes; null once gone. */
  peakRssBytes(): number | null {
    return processPeakRssBytes(this.pid);
  }

  async status(): Promise<AgentLinkStatus[]> {
    const res = await fetch(`http://${this.httpAddress}/status`, { signal: AbortSignal.timeout(5000) });
    const body = (await res.json()) as { links?: AgentLinkStatus[] };
    return body.links ?? [];
  }

  /** One line about each link's state and last error, for a failure message. */
  async describe(): Promise<string> {
    try {
      const links = await this.status();
      return links
        .map((l) => `${this.name}<-${l.peer}: ${l.state}, ${l.transactionsApplied} txns applied${l.lastError ? `, last error: ${l.lastError.message}` : ''}`)
        .join('; ');
    } catch (err) {
      return `${this.name}: no /status (${errorMessage(err)})${this.stderrTail ? `; stderr: ${this.stderrTail.slice(-500)}` : ''}`;
    }
  }

  private async waitReady(): Promise<void> {
    const deadline = Date.now() + READY_TIMEOUT_MS;
    for (;;) {
      if (this.child.exitCode !== null || this.child.signalCode !== null) {
        throw new BenchError(
          'BENCH_TOOL_FAILED',
          `agent ${this.name} exited (${this.child.exitCode ?? this.child.signalCode}) before it answered: ${this.stderrTail.slice(-1500)}`,
        );
      }
      // /status names the node: an answer from another process that took the port in the meantime
      // (freePort() can only pick a port that was free a moment ago) is not this agent's.
      const node = await fetch(`http://${this.httpAddress}/status`, { signal: AbortSignal.timeout(1000) }).then(
        async (r) => (r.ok ? ((await r.json()) as { node?: unknown }).node : undefined),
        () => undefined,
      );
      if (node === this.name && this.child.exitCode === null && this.child.signalCode === null) return;
      if (Date.now() > deadline) throw new BenchError('BENCH_TIMEOUT', `agent ${this.name} did not answer /status within ${READY_TIMEOUT_MS / 1000} s`);
      await sleep(25);
    }
  }

  /** SIGTERM, then SIGKILL after a grace period: a lagging agent need not drain for the bench. */
  async stop(): Promise<void> {
    this.stopRequested = true;
    const child = this.child;
    await signalAndWait(child, 'SIGTERM', STOP_GRACE_MS);
  }
}

/** Stops every agent process this process started and has not stopped yet. */
export async function stopAllAgents(): Promise<void> {
  await Promise.all([...running].map((a) => a.stop()));
}

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const agent of running) {
      if (agent.pid <= 0) continue; // pid 0 would signal our own process group
      try {
        process.kill(agent.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  });
}
