import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { hasExited, signalAndWait } from '../../src/util/child-exit.js';
import type { ChildExit } from '../../src/util/child-exit.js';

const BIN = join(import.meta.dirname, '..', '..', 'bin', 'pgbidi.js');

export type Exit = ChildExit;

/** One agent as a child process (bin/pgbidi.js runs dist/), so that it can be SIGKILLed at any moment. */
export class AgentProcess {
  private child: ChildProcess | null = null;
  private startedAt = 0;
  readonly exits: Exit[] = [];
  /** The last lines the agent wrote (log level warn), shown when a wait fails. */
  readonly output: string[] = [];

  constructor(private readonly configPath: string) {}

  start(): void {
    const child = spawn(process.execPath, [BIN, 'run', '--config', this.configPath], { stdio: ['ignore', 'pipe', 'pipe'] });
    const keep = (chunk: Buffer): void => {
      this.output.push(
        ...chunk
          .toString('utf8')
          .split('\n')
          .filter((l) => l.length > 0),
      );
      this.output.splice(0, Math.max(0, this.output.length - 40));
    };
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    child.once('exit', (code, signal) => this.exits.push({ code, signal }));
    this.child = child;
    this.startedAt = Date.now();
  }

  /** The agent's process id while it runs (to read its memory from /proc). */
  get pid(): number | undefined {
    return this.child?.pid;
  }

  get msSinceStart(): number {
    return Date.now() - this.startedAt;
  }

  /** SIGKILL; resolves once the process is gone (its PostgreSQL backends may linger a moment). */
  async kill9(): Promise<void> {
    const child = this.child;
    this.child = null;
    if (child) await signalAndWait(child, 'SIGKILL');
  }

  async terminate(timeoutMs = 20_000): Promise<Exit> {
    const child = this.child;
    if (!child) throw new Error('agent is not running');
    const exited = hasExited(child);
    const result = await signalAndWait(child, 'SIGTERM', timeoutMs);
    if (!exited && result.signal === 'SIGKILL') throw new Error('agent did not exit after SIGTERM');
    this.child = null;
    return result;
  }
}
