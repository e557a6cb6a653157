/**
 * The synchronous-link comparison: what a synchronous link costs the committer on the source. B's
 * agent applies A; one client on A commits one-row INSERTs (autocommit, synchronous_commit on) back
 * to back for a fixed time, and the bench times every COMMIT. Run twice: B's link from A
 * asynchronous, then synchronous (A's synchronous_standby_names lists B's agent, so a COMMIT on A
 * returns once B applied and flushed it).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { applicationName } from '../node/names.js';
import { BenchError } from './bench-error.js';
import type { RunRecorder } from './bench-results.js';
import { BENCH_DATABASE, driverClient, now, POLL_MS } from './bench-settings.js';
import { percentile } from './stats.js';
import { allEqual, oneTableTopology, tableFingerprint, withReplication } from './workload-runner.js';
import type { RunContext } from './workload-runner.js';

const TABLE = 'bench_sync';
const TABLE_SQL = `CREATE TABLE public.${TABLE} (id bigint PRIMARY KEY, v int NOT NULL)`;

export async function runSynchronousCommit(ctx: RunContext, rec: RunRecorder): Promise<void> {
  await withReplication(ctx, rec, oneTableTopology(TABLE, TABLE_SQL), async (repl) => {
    const a = repl.server('a');
    const b = repl.server('b');
    await repl.start();
    await repl.waitStreaming(ctx.timeoutMs);
    const standby = applicationName('a', 'b');
    const expected = ctx.side.variant === 'synchronous' ? ['sync', 'quorum'] : ['async'];
    // A's walsender must count B's agent as synchronous (or not) before the clock starts.
    const deadline = now() + ctx.timeoutMs;
    for (;;) {
      const r = await a.query<{ s: string }>('SELECT sync_state AS s FROM pg_stat_replication WHERE application_name = $1', [standby]);
      if (expected.includes(r[0]?.s ?? '')) break;
      if (now() > deadline) throw new BenchError('BENCH_TIMEOUT', `${standby} on A never reached sync_state ${expected.join('/')} (${r[0]?.s ?? 'absent'})`);
      await sleep(POLL_MS * 5);
    }

    const client = await driverClient(a, 'bench_load');
    const latencies: number[] = [];
    const started = now();
    try {
      for (let id = 1; now() - started < ctx.sizes.syncSeconds * 1000; id++) {
        const t0 = now();
        await client.query(`INSERT INTO public.${TABLE} (id, v) VALUES ($1, $2)`, [id, id % 1000]);
        latencies.push((now() - t0) / 1000);
      }
    } finally {
      await client.end().catch(() => undefined);
    }
    const ended = now();
    rec.set('commits', latencies.length);
    rec.set('tps', latencies.length / ((ended - started) / 1000));
    rec.set('commitP50', percentile(latencies, 50));
    rec.set('commitP99', percentile(latencies, 99));
    rec.set('commitMax', Math.max(...latencies));

    for (;;) {
      const r = await b.query<{ n: number }>(`SELECT count(*)::int AS n FROM public.${TABLE}`, [], BENCH_DATABASE);
      if ((r[0]?.n ?? 0) >= latencies.length) break;
      if (now() - ended > ctx.timeoutMs) throw new BenchError('BENCH_TIMEOUT', `B did not receive the ${latencies.length} rows`);
      await sleep(POLL_MS);
    }
    rec.set('catchUpSeconds', (now() - ended) / 1000);
    rec.converged(await allEqual([a, b], (server) => tableFingerprint(server, TABLE)));
  });
}
