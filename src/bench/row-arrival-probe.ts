/**
 * Watches rows with ids first..last arrive on a target (W1, W4, W5): one open connection, two
 * primary-key lookups every POLL_MS (the first and the last id), and one count once the last id is
 * visible. Not count(*) on every poll: over 200,000 fresh rows that costs a backend about 20 ms of
 * CPU, which on a 2-core machine would slow down the very apply it measures. Both engines commit in
 * the source's commit order and the ids were committed in increasing order, so the last id implies
 * the earlier ones; the count checks that (and polling goes on if it were not so).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type pg from 'pg';
import type { PostgresServer } from '../pg-server/postgres-server.js';
import { BenchError } from './bench-error.js';
import { driverClient, now, POLL_MS } from './bench-settings.js';

export interface IdRange {
  readonly table: string;
  readonly first: number;
  readonly last: number;
}

export interface RowArrival {
  /** now() of the first poll that saw any row of the range. */
  readonly firstRowAt: number;
  /** now() of the first poll that saw all of them. */
  readonly allRowsAt: number;
}

export class RowArrivalProbe {
  private constructor(
    private readonly client: pg.Client,
    private readonly server: PostgresServer,
    private readonly range: IdRange,
  ) {}

  /** Connect first, then start the clock, then watch: the connect is in no measured interval. */
  static async open(server: PostgresServer, range: IdRange): Promise<RowArrivalProbe> {
    return new RowArrivalProbe(await driverClient(server, 'bench_probe'), server, range);
  }

  get expected(): number {
    return this.range.last - this.range.first + 1;
  }

  async count(): Promise<number> {
    const r = await this.client.query<{ n: number }>(`SELECT count(*)::int AS n FROM public.${this.range.table} WHERE id BETWEEN $1 AND $2`, [
      this.range.first,
      this.range.last,
    ]);
    return r.rows[0]?.n ?? 0;
  }

  /** Resolves when every row of the range is visible; rejects after timeoutMs or when `signal` aborts. */
  async watch(timeoutMs: number, signal?: AbortSignal): Promise<RowArrival> {
    const startedAt = now();
    let firstRowAt: number | undefined;
    for (let tick = 1; ; tick += 1) {
      if (signal?.aborted) throw signal.reason;
      const r = await this.client.query<{ first: boolean; last: boolean }>(
        `SELECT EXISTS (SELECT 1 FROM public.${this.range.table} WHERE id = $1) AS first,
                EXISTS (SELECT 1 FROM public.${this.range.table} WHERE id = $2) AS last`,
        [this.range.first, this.range.last],
      );
      const seenAt = now();
      const { first = false, last = false } = r.rows[0] ?? {};
      if ((first || last) && firstRowAt === undefined) firstRowAt = seenAt;
      if (last && (await this.count()) >= this.expected) return { firstRowAt: firstRowAt ?? seenAt, allRowsAt: seenAt };
      if (seenAt - startedAt > timeoutMs) {
        throw new BenchError('BENCH_TIMEOUT', `${await this.count()} of ${this.expected} rows on ${this.server.name} after ${Math.round(timeoutMs / 1000)} s`);
      }
      await sleep(Math.max(0, startedAt + tick * POLL_MS - now()));
    }
  }

  async close(): Promise<void> {
    await this.client.end().catch(() => undefined);
  }
}

/**
 * Starts `watch` before `trigger` runs, so the first poll follows the trigger as closely as the
 * probe's cadence allows; a failing trigger stops the watch.
 */
export async function watchDuring<T>(probe: RowArrivalProbe, timeoutMs: number, trigger: () => Promise<T>): Promise<{ arrival: RowArrival; triggered: T }> {
  const abort = new AbortController();
  const watching = probe.watch(timeoutMs, abort.signal);
  watching.catch(() => undefined);
  let triggered: T;
  try {
    triggered = await trigger();
  } catch (err) {
    abort.abort(err);
    throw err;
  }
  return { arrival: await watching, triggered };
}
