/**
 * A live measurement: heartbeats on the sources while a load runs, then a fence per source once it
 * stops, waited for on every target. Figures per direction: heartbeat lag p50/p99/max and catch-up
 * (the fence's commit on the source to its first sighting on the target).
 */
import type { RunRecorder } from './bench-results.js';
import { HEARTBEAT_MS } from './bench-settings.js';
import { lagOf } from './mark-probes.js';
import type { MarkWatcher, MarkWriter } from './mark-probes.js';

export interface Direction {
  /** Figure key prefix, e.g. 'live', 'ab', 'c'. */
  readonly key: string;
  readonly writer: MarkWriter;
  readonly watcher: MarkWatcher;
}

export async function measureLive<T>(rec: RunRecorder, directions: readonly Direction[], timeoutMs: number, load: () => Promise<T>): Promise<T> {
  const writers = [...new Set(directions.map((d) => d.writer))];
  for (const d of directions) d.watcher.start();
  for (const w of writers) w.startHeartbeats(HEARTBEAT_MS);
  let result: T;
  try {
    result = await load();
  } finally {
    await Promise.all(writers.map((w) => w.stopHeartbeats()));
  }
  const fences = new Map(await Promise.all(writers.map(async (w) => [w, await w.write()] as const)));
  // Every direction is recorded even when another one times out; then the first failure is raised.
  const settled = await Promise.allSettled(
    directions.map(async (d) => {
      const fence = fences.get(d.writer);
      if (!fence) return;
      const seenAt = await d.watcher.waitFor(fence.id, timeoutMs);
      rec.set(`${d.key}.catchUpSeconds`, Math.max(0, seenAt - fence.ackAt) / 1000);
      const lag = lagOf(d.writer, d.watcher);
      rec.set(`${d.key}.lagP50`, lag?.p50 ?? null);
      rec.set(`${d.key}.lagP99`, lag?.p99 ?? null);
      rec.set(`${d.key}.lagMax`, lag?.max ?? null);
    }),
  );
  const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
  if (failed) throw failed.reason;
  return result;
}
