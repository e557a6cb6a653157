import { setTimeout as sleep } from 'node:timers/promises';

/**
 * True when `promise` settles (resolves or rejects) within `ms`; the timer is cancelled either way
 * so that it cannot hold the process open.
 */
export async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
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
