/**
 * W4 large transaction: one INSERT of N rows (three short columns) in a single transaction on A.
 *
 *   backlog:   nothing applying → the transaction commits on A → clock → start → B holds all rows
 *   streaming: applier streaming → ids N+1..2N in one transaction → clock at its commit ack → B holds all
 *
 * The rows of one transaction become visible on B at once, so the probe's last-id lookup is exact.
 * The agent's peak RSS (VmHWM of its process) is read at the end, over both phases.
 */
import type { PostgresServer } from '../pg-server/postgres-server.js';
import { BenchError } from './bench-error.js';
import type { RunRecorder } from './bench-results.js';
import { driverClient, now } from './bench-settings.js';
import { RowArrivalProbe, watchDuring } from './row-arrival-probe.js';
import { allEqual, oneTableTopology, tableFingerprint, withReplication } from './workload-runner.js';
import type { RunContext } from './workload-runner.js';

const TABLE = 'bench_large';
const TABLE_SQL = `CREATE TABLE public.${TABLE} (id int PRIMARY KEY, a int NOT NULL, b text NOT NULL)`;
const MIB = 1024 * 1024;

/** Inserts ids first..last in one transaction; returns its start and commit-ack times. */
async function insertOneTransaction(server: PostgresServer, first: number, last: number): Promise<{ startedAt: number; committedAt: number }> {
  const client = await driverClient(server, 'bench_load');
  try {
    const startedAt = now();
    await client.query(`INSERT INTO public.${TABLE} (id, a, b) SELECT g, g % 1000, 'r' || g FROM generate_series($1::int, $2::int) AS g`, [first, last]);
    return { startedAt, committedAt: now() };
  } finally {
    await client.end().catch(() => undefined);
  }
}

export async function runLargeTransaction(ctx: RunContext, rec: RunRecorder): Promise<void> {
  const rows = ctx.sizes.w4Rows;
  const topology = oneTableTopology(TABLE, TABLE_SQL);
  await withReplication(ctx, rec, topology, async (repl) => {
    const a = repl.server('a');
    const b = repl.server('b');
    const inserted = await insertOneTransaction(a, 1, rows);
    rec.set('sourceInsertSeconds', (inserted.committedAt - inserted.startedAt) / 1000);
    const backlog = await RowArrivalProbe.open(b, { table: TABLE, first: 1, last: rows });
    try {
      if ((await backlog.count()) !== 0) throw new BenchError('BENCH_UNEXPECTED', 'rows reached B before replication started');
      await repl.readyToStart();
      const { arrival, triggered: started } = await watchDuring(backlog, ctx.timeoutMs, () => repl.start());
      const seconds = (arrival.allRowsAt - started.clockAt) / 1000;
      rec.set('backlog.seconds', seconds);
      rec.set('backlog.rowsPerSecond', rows / seconds);
    } finally {
      await backlog.close();
    }

    await repl.waitStreaming(ctx.timeoutMs);
    const streaming = await RowArrivalProbe.open(b, { table: TABLE, first: rows + 1, last: 2 * rows });
    try {
      const committed = await insertOneTransaction(a, rows + 1, 2 * rows);
      const arrival = await streaming.watch(ctx.timeoutMs);
      rec.set('streaming.secondsAfterCommit', Math.max(0, arrival.allRowsAt - committed.committedAt) / 1000);
    } finally {
      await streaming.close();
    }
    if (repl.engine === 'pgbidi') {
      const peak = (await repl.usage('b')).agentPeakRssBytes;
      rec.set('peakRssMiB', peak === null ? null : peak / MIB);
    }
    rec.converged(await allEqual([a, b], (server) => tableFingerprint(server, TABLE)));
  });
}
