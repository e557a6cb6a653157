/**
 * PostgreSQL's own logical replication on a fresh pair of servers: publication on A, subscription
 * on B WITH (copy_data = false), all other subscription options at their defaults (so the apply
 * worker commits with synchronous_commit off, as pgbidi's apply session does).
 *
 *   backlog:   subscription streaming → DISABLE → rows inserted on A → (launcher throttle waited
 *              out) → clock starts → ENABLE → B holds all rows
 *   streaming: subscription streaming → clock starts at A's first commit → B holds all rows
 *
 * The launcher starts a subscription's apply worker at most once per wal_retrieve_retry_interval
 * (5 s; per subscription since PG 16, per launcher before). Backlog waits that long after the
 * worker's first start before ENABLE, so the restart is not throttled; the time from ENABLE to the
 * first row shows whether it was.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { PostgresServer } from '../pg-server/postgres-server.js';
import {
  BENCH_DATABASE,
  BENCH_SERVER_SETTINGS,
  BENCH_TABLE,
  BENCH_TABLE_SQL,
  BenchError,
  fingerprint,
  insertRows,
  measureBacklog,
  measureStreaming,
  now,
  RowArrivalProbe,
  versionLabel,
  waitForWalsender,
} from './bench-workload.js';
import type { Measurement, Mode, Timing, WorkloadSize } from './bench-workload.js';

const PUBLICATION = 'bench_pub';
/** Also the application_name of its walsender on A. */
const SUBSCRIPTION = 'bench_sub';
/** Margin on top of wal_retrieve_retry_interval before ENABLE. */
const THROTTLE_MARGIN_MS = 500;

export interface NativeRunOptions {
  readonly binDir: string;
  readonly size: WorkloadSize;
  readonly mode: Mode;
  readonly rep: number;
  readonly timeoutMs: number;
}

export async function runNative(options: NativeRunOptions): Promise<Measurement> {
  const servers: PostgresServer[] = [];
  try {
    const a = await startNode(options.binDir, 'native-a', servers);
    const b = await startNode(options.binDir, 'native-b', servers);
    await a.query(`CREATE PUBLICATION ${PUBLICATION} FOR TABLE public.${BENCH_TABLE}`, [], BENCH_DATABASE);
    await b.query(
      `CREATE SUBSCRIPTION ${SUBSCRIPTION} CONNECTION '${a.connectionString(BENCH_DATABASE)}' PUBLICATION ${PUBLICATION} WITH (copy_data = false)`,
      [],
      BENCH_DATABASE,
    );
    await waitForWalsender(a, SUBSCRIPTION);
    // The worker started before its walsender streamed: waiting from here errs on the long side.
    const workerStartedAt = now();
    const probe = new RowArrivalProbe(b);
    try {
      const measured =
        options.mode === 'backlog'
          ? await backlog(a, b, probe, options, workerStartedAt)
          : await measureStreaming(a, probe, options.size, options.timeoutMs);
      const converged = (await fingerprint(a)) === (await fingerprint(b));
      return {
        version: versionLabel(a.versionNum),
        engine: 'native',
        mode: options.mode,
        variant: 'default',
        rep: options.rep,
        rows: options.size.rows,
        txnRows: options.size.txnRows,
        transactionsApplied: null,
        converged,
        ...measured,
      };
    } finally {
      await probe.close();
    }
  } finally {
    // Subscriber first, so its apply worker does not retry against a stopped publisher.
    for (const server of servers.reverse()) await server.destroy().catch(() => undefined);
  }
}

async function backlog(
  a: PostgresServer,
  b: PostgresServer,
  probe: RowArrivalProbe,
  options: NativeRunOptions,
  workerStartedAt: number,
): Promise<Timing> {
  await b.query(`ALTER SUBSCRIPTION ${SUBSCRIPTION} DISABLE`, [], BENCH_DATABASE);
  await waitForWorkerExit(b, options.timeoutMs);
  const inserted = await insertRows(a, options.size);
  const retryMs = await walRetrieveRetryIntervalMs(b);
  await sleep(Math.max(0, workerStartedAt + retryMs + THROTTLE_MARGIN_MS - now()));
  return measureBacklog(probe, options.size, inserted, options.timeoutMs, () =>
    b.query(`ALTER SUBSCRIPTION ${SUBSCRIPTION} ENABLE`, [], BENCH_DATABASE),
  );
}

async function startNode(binDir: string, name: string, servers: PostgresServer[]): Promise<PostgresServer> {
  const server = await PostgresServer.start({ binDir, name, settings: BENCH_SERVER_SETTINGS });
  servers.push(server);
  await server.createDatabase(BENCH_DATABASE);
  await server.query(BENCH_TABLE_SQL, [], BENCH_DATABASE);
  return server;
}

async function waitForWorkerExit(b: PostgresServer, timeoutMs: number): Promise<void> {
  const deadline = now() + timeoutMs;
  for (;;) {
    const rows = await b.query(`SELECT 1 FROM pg_stat_subscription WHERE subname = $1 AND pid IS NOT NULL`, [SUBSCRIPTION], BENCH_DATABASE);
    if (rows.length === 0) return;
    if (now() > deadline) throw new BenchError('BENCH_TIMEOUT', `apply worker of ${SUBSCRIPTION} still running after DISABLE`);
    await sleep(20);
  }
}

async function walRetrieveRetryIntervalMs(server: PostgresServer): Promise<number> {
  // pg_settings reports it in ms (unit 'ms').
  const rows = await server.query<{ ms: number }>(`SELECT setting::int AS ms FROM pg_settings WHERE name = 'wal_retrieve_retry_interval'`);
  return rows[0]?.ms ?? 5000;
}
