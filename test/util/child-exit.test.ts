import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { hasExited, signalAndWait } from '../../src/util/child-exit.js';

const child = (script: string): ReturnType<typeof spawn> => spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'ignore'] });

/** Resolves once the child has printed its first line (its signal handlers are installed by then). */
const ready = (c: ReturnType<typeof spawn>): Promise<void> => new Promise((resolve) => c.stdout?.once('data', () => resolve()));

describe('signalAndWait', () => {
  it('resolves with the exit of a child that stops on the signal', async () => {
    const c = child(`process.on('SIGTERM', () => process.exit(3)); console.log('up'); setInterval(() => {}, 1000);`);
    await ready(c);
    expect(await signalAndWait(c, 'SIGTERM', 10_000)).toEqual({ code: 3, signal: null });
    expect(hasExited(c)).toBe(true);
    // Already gone: nothing is sent, the same exit comes back.
    expect(await signalAndWait(c, 'SIGTERM')).toEqual({ code: 3, signal: null });
  });

  it('kills a child that ignores the signal once the grace period is over', async () => {
    const c = child(`process.on('SIGTERM', () => {}); console.log('up'); setInterval(() => {}, 1000);`);
    await ready(c);
    const started = Date.now();
    expect(await signalAndWait(c, 'SIGTERM', 300)).toEqual({ code: null, signal: 'SIGKILL' });
    expect(Date.now() - started).toBeGreaterThanOrEqual(250);
  });
});
