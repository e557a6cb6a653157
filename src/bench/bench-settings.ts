/**
 * Constants every workload and engine shares: the database, the role the bench's own probes use,
 * the probe cadence of research/baselines.md, and the server settings of every node.
 */
import { performance } from 'node:perf_hooks';
import pg from 'pg';
import type { PostgresServer, SettingValue } from '../pg-server/postgres-server.js';
import { BenchError } from './bench-error.js';

export const BENCH_DATABASE = 'bench';

/**
 * The role of the bench's own connections (probes, heartbeats, control statements on the applying
 * node). The appliers connect as `postgres`; keeping the bench under another role keeps its
 * statements out of the applier's pg_stat_statements profile.
 */
export const DRIVER_ROLE = 'bench_driver';
export const APPLIER_ROLE = 'postgres';

/** Target poll interval: every lag and arrival figure is an upper bound with this resolution. */
export const POLL_MS = 20;
/** A heartbeat row is committed on the source this often while a live workload runs. */
export const HEARTBEAT_MS = 100;

/**
 * Server settings for every node of every engine, on top of DEFAULT_SETTINGS: the values the
 * baselines ran with where they differ (shared_buffers 128 MB; everything else default).
 */
export const BENCH_SERVER_SETTINGS: Readonly<Record<string, SettingValue>> = Object.freeze({
  shared_buffers: '128MB',
  max_worker_processes: 24,
  max_logical_replication_workers: 10,
});

/**
 * Added for the workloads that profile statements (W2 and the observability comparison), on every
 * node of both engines. Loaded but not tracking: tracking is switched on (trackStatements) only for
 * the phase that profiles. Tracking is not a cost both engines share: it runs in the executor's
 * hooks, once per statement, and native's apply worker calls the executor directly, so only
 * pgbidi's backend pays (measured: 2.3 to 3.5 us per pgbench transaction, 5 to 8 % of it, with
 * track = all on 15 and 18).
 */
export const STATEMENT_STATS_SETTINGS: Readonly<Record<string, SettingValue>> = Object.freeze({
  shared_preload_libraries: 'pg_stat_statements',
  'pg_stat_statements.track': 'none',
  'pg_stat_statements.track_planning': true,
});

/**
 * pg_stat_statements.track for every session of the bench database that starts from now on: 'all'
 * as a database setting, which outranks the server's command line; 'none' by resetting it. Returns
 * once a new session sees it.
 */
export async function trackStatements(server: PostgresServer, level: 'all' | 'none'): Promise<void> {
  const client = await driverClient(server);
  try {
    await client.query(
      level === 'all'
        ? `ALTER DATABASE ${BENCH_DATABASE} SET pg_stat_statements.track = 'all'`
        : `ALTER DATABASE ${BENCH_DATABASE} RESET pg_stat_statements.track`,
    );
  } finally {
    await client.end().catch(() => undefined);
  }
  const fresh = await driverClient(server);
  try {
    const r = await fresh.query<{ track: string }>("SELECT current_setting('pg_stat_statements.track') AS track");
    if (r.rows[0]?.track !== level)
      throw new BenchError('BENCH_UNEXPECTED', `pg_stat_statements.track is ${r.rows[0]?.track ?? '?'} on ${server.name}, not ${level}`);
  } finally {
    await fresh.end().catch(() => undefined);
  }
}

/** The table of heartbeat and fence rows, on every node, replicated like the workload's tables. */
export const MARKS_TABLE = 'bench_marks';
export const MARKS_TABLE_SQL = `CREATE TABLE public.${MARKS_TABLE} (id bigint PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())`;

/** Statements every node runs before the engine is wired: the driver role and the marks table. */
export function commonNodeSql(statementStats: boolean): string[] {
  return [`CREATE ROLE ${DRIVER_ROLE} LOGIN SUPERUSER`, MARKS_TABLE_SQL, ...(statementStats ? ['CREATE EXTENSION pg_stat_statements'] : [])];
}

/** An open connection to the bench database as DRIVER_ROLE; errors after connect are ignored (the caller's query fails instead). */
export async function driverClient(server: PostgresServer, applicationName = 'bench_driver'): Promise<pg.Client> {
  const client = new pg.Client({
    connectionString: server.connectionString(BENCH_DATABASE, DRIVER_ROLE),
    application_name: applicationName,
    connectionTimeoutMillis: 10_000,
  });
  client.on('error', () => undefined);
  await client.connect();
  return client;
}

export function now(): number {
  return performance.now();
}
