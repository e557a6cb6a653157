/**
 * How the demo ends: the signals that ask it to stop, and the cleanup that runs on every path out.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { errorMessage } from '../util/error-message.js';

/** Ctrl-C or SIGTERM arrived before the workload started: nothing to report, only cleanup. */
export class DemoInterruptedError extends Error {
  readonly code = 'PGBIDI_DEMO_INTERRUPTED';
  override readonly name = 'DemoInterruptedError';
}

/**
 * Cleanup steps, run last-registered first, each one even if an earlier one failed: the demo must
 * leave no process and no directory behind whatever went wrong before.
 */
export class Teardown {
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
export class StopSignal {
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
