/**
 * W5 single-row transactions: N one-row INSERT transactions committed on A while nothing applies,
 * then the applier starts: transactions/s from the first row visible on B to the last, and from start.
 *
 * A generates them in one DO block that commits after every row (synchronous_commit off in that
 * session only, so that A writes them in seconds rather than paying a WAL flush each; the applier
 * sees the same N transactions either way).
 */
import type { PostgresServer } from '../pg-server/postgres-server.js';
import { BenchError } from './bench-error.js';
import type { RunRecorder } from './bench-results.js';
import { driverClient, now } from './bench-settings.js';
import { RowArrivalProbe, watchDuring } from './row-arrival-probe.js';
import { allEqual, oneTableTopology, tableFingerprint, withReplication } from './workload-runner.js';
import type { RunContext } from './workload-runner.js';

const TABLE = 'bench_single';
const TABLE_SQL = `CREATE TABLE public.${TABLE} (id bigint PRIMARY KEY, v int NOT NULL)`;

async function commitRows(server: PostgresServer, transactions: number): Promise<number> {
  const client = await driverClient(server, 'bench_load');
  try {
    await client.query('SET synchronous_commit = off');
    const startedAt = now();
    // Simple-protocol statement outside a transaction block: the DO block may COMMIT.
    await client.query(`DO $$ BEGIN FOR i IN 1..${transactions} LOOP INSERT INTO public.${TABLE} (id, v) VALUES (i, i % 1000); COMMIT; END LOOP; END $$`);
    return (now() - startedAt) / 1000;
  } finally {
    await client.end().catch(() => undefined);
  }
}

export async function runSingleRow(ctx: RunContext, rec: RunRecorder): Promise<void> {
  const n = ctx.sizes.w5Transactions;
  const topology = oneTableTopology(TABLE, TABLE_SQL);
  await withReplication(ctx, rec, topology, async (repl) => {
    const a = repl.server('a');
    const b = repl.server('b');
    rec.set('sourceSeconds', await commitRows(a, n));
    const probe = await RowArrivalProbe.open(b, { table: TABLE, first: 1, last: n });
    try {
      if ((await probe.count()) !== 0) throw new BenchError('BENCH_UNEXPECTED', 'rows reached B before replication started');
      await repl.readyToStart();
      const { arrival, triggered: started } = await watchDuring(probe, ctx.timeoutMs, () => repl.start());
      const start = started.clockAt;
      const applySeconds = (arrival.allRowsAt - arrival.firstRowAt) / 1000;
      rec.set('txnPerSecond', applySeconds > 0 ? n / applySeconds : null);
      rec.set('txnPerSecondFromStart', n / ((arrival.allRowsAt - start) / 1000));
      rec.set('firstRowSeconds', Math.max(0, arrival.firstRowAt - start) / 1000);
    } finally {
      await probe.close();
    }
    rec.converged(await allEqual([a, b], (server) => tableFingerprint(server, TABLE)));
  });
}
