/**
 * One pgbidi agent of the fault suite as a child process (`node bin/pgbidi.js run`), so that it can
 * be SIGKILLed at any moment, exactly as an operator's process would be.
 *
 *   stopped ──start()──> starting ──/status names the node──> running ──kill9() / stop()──> stopped
 *
 * Its pino log is appended to a file per node (kept for the report of a failed run). Every child still
 * running when this process exits is SIGKILLed.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { closeSync, openSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { stringify } from 'yaml';
import type { RawConfig } from '../../config/config-schema.js';
import { hasExited, signalAndWait } from '../../util/child-exit.js';

const BIN = fileURLToPath(new URL('../../../bin/pgbidi.js', import.meta.url));
const READY_TIMEOUT_MS = 90_000;
const STOP_GRACE_MS = 20_000;

const running = new Set<ChildProcess>();
let exitHookInstalled = false;

/** The part of one link's `/status` the suite reads. */
export interface FaultLinkStatus {
  readonly peer: string;
  readonly state: string;
  readonly slot: string;
  readonly queuedChanges: number;
  readonly transactionsApplied: number;
  readonly changesApplied: number;
  readonly lastError: { readonly message: string; readonly code: string | null } | null;
}

export class FaultAgentError extends Error {
  readonly code = 'FAULTS_AGENT';
  override readonly name = 'FaultAgentError';
}

export class FaultAgent {
  private child: ChildProcess | null = null;
  private stderrTail = '';
  /** Exits nobody asked for (not kill9, not stop): a crash of the agent. */
  readonly unexpectedExits: string[] = [];
  kills = 0;
  starts = 0;

  constructor(
    readonly node: string,
    private readonly dir: string,
    readonly httpPort: number,
  ) {}

  get logFile(): string {
    return join(this.dir, `${this.node}.log`);
  }

  get running(): boolean {
    return this.child !== null;
  }

  /** Writes the config and spawns the agent; resolves once /status answers with this node. */
  async start(config: RawConfig): Promise<void> {
    if (this.child) throw new FaultAgentError(`agent ${this.node} is already running`);
    const configPath = join(this.dir, `${this.node}.yaml`);
    writeFileSync(configPath, stringify({ ...config, http: { listen: `127.0.0.1:${this.httpPort}` } }));
    const logFd = openSync(this.logFile, 'a');
    const child = spawn(process.execPath, [BIN, 'run', '--config', configPath], { stdio: ['ignore', logFd, 'pipe'] });
    closeSync(logFd);
    child.stderr?.setEncoding('utf8').on('data', (s: string) => (this.stderrTail = (this.stderrTail + s).slice(-4000)));
    running.add(child);
    installExitHook();
    child.once('exit', (code, signal) => {
      running.delete(child);
      if (this.child === child) {
        this.child = null;
        this.unexpectedExits.push(`${code ?? signal ?? '?'}: ${this.stderrTail.slice(-1000)}`);
      }
    });
    this.child = child;
    this.starts++;
    const deadline = Date.now() + READY_TIMEOUT_MS;
    for (;;) {
      if (this.child !== child) throw new FaultAgentError(`agent ${this.node} exited during start-up: ${this.stderrTail.slice(-1500)}`);
      const node = await fetch(`http://127.0.0.1:${this.httpPort}/status`, { signal: AbortSignal.timeout(2000) }).then(
        async (r) => (r.ok ? ((await r.json()) as { node?: unknown }).node : undefined),
        () => undefined,
      );
      if (node === this.node) return;
      if (Date.now() > deadline) throw new FaultAgentError(`agent ${this.node} did not answer /status within ${READY_TIMEOUT_MS / 1000} s`);
      await sleep(100);
    }
  }

  /** SIGKILL, no warning; resolves once the process is gone. */
  async kill9(): Promise<void> {
    const child = this.child;
    this.child = null;
    if (!child || hasExited(child)) return;
    await signalAndWait(child, 'SIGKILL');
    this.kills++;
  }

  /** SIGTERM (the agent drains and sends its final feedback); SIGKILL after a grace period. */
  async stop(): Promise<void> {
    const child = this.child;
    this.child = null;
    if (child) await signalAndWait(child, 'SIGTERM', STOP_GRACE_MS);
  }

  async status(): Promise<FaultLinkStatus[]> {
    const res = await fetch(`http://127.0.0.1:${this.httpPort}/status`, { signal: AbortSignal.timeout(5000) });
    const body = (await res.json()) as { links?: FaultLinkStatus[] };
    return body.links ?? [];
  }

  async link(peer: string): Promise<FaultLinkStatus | undefined> {
    return (await this.status()).find((l) => l.peer === peer);
  }

  /** The Prometheus text exposition of /metrics. */
  async metrics(): Promise<string> {
    const res = await fetch(`http://127.0.0.1:${this.httpPort}/metrics`, { signal: AbortSignal.timeout(10_000) });
    return res.text();
  }
}

/** The value of one sample in a text exposition, matched by name and every given label; undefined when absent. */
export function sampleValue(exposition: string, name: string, labels: Readonly<Record<string, string>>): number | undefined {
  for (const line of exposition.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    const close = line.lastIndexOf('}');
    const labelText = close > 0 ? line.slice(name.length + 1, close) : '';
    if (Object.entries(labels).every(([k, v]) => labelText.includes(`${k}="${v}"`)))
      return Number(
        line
          .slice(close + 1)
          .trim()
          .split(' ')[0],
      );
  }
  return undefined;
}

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const child of running) child.kill('SIGKILL');
  });
}
