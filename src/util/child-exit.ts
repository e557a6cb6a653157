import type { ChildProcess } from 'node:child_process';

export interface ChildExit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

/** Whether the child has exited (or was killed) already. */
export function hasExited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

/**
 * Sends `signal` to the child and resolves with how it exited. With `killAfterMs`, a child still
 * running by then gets SIGKILL (an agent that does not drain in time need not hold up a stop).
 */
export async function signalAndWait(child: ChildProcess, signal: NodeJS.Signals, killAfterMs?: number): Promise<ChildExit> {
  if (hasExited(child)) return { code: child.exitCode, signal: child.signalCode };
  const exited = new Promise<ChildExit>((resolve) => child.once('exit', (code, sig) => resolve({ code, signal: sig })));
  child.kill(signal);
  const timer = killAfterMs === undefined ? null : setTimeout(() => child.kill('SIGKILL'), killAfterMs);
  try {
    return await exited;
  } finally {
    if (timer) clearTimeout(timer);
  }
}
