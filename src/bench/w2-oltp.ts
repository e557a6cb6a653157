/**
 * W2 OLTP (research/baselines.md): `pgbench -N -c 4 -j 2` on A, applied on B; also the body of the
 * observability comparison (pgbidi twice, off and on).
 *
 *   backlog: nothing applying → pgbench runs → fence row on A → clock → start → fence visible on B:
 *            catch-up, transactions/s, CPU
 *   live:    applier streaming → heartbeats on A while pgbench runs → fence → visible on B:
 *            source TPS, heartbeat lag, catch-up
 *   profile: applier stopped → pgbench runs for PROFILE_SECONDS → fence → pg_stat_statements
 *            tracking on and reset on B → start → fence visible on B: the statement profile
 *
 * The statement profile has a backlog of its own: tracking statements costs pgbidi's backend (and
 * not native's apply worker, bench-settings.ts), so the timed phases run without it.
 * "Per transaction" divides by the transactions pgbench committed on A (the fence and pgbidi's own
 * heartbeats are not counted). The nodes are compared (md5 of the 4 tables) after each phase.
 *
 * The conflict storm (workload-specs.ts storm) runs the same phases on B's accounts written again on
 * B, before the group began (conflict-free) or after (conflict-storm), and counts the conflicts each
 * phase logged. One rewrite serves every phase: pgbench -N updates one account per transaction,
 * chosen at random, so most of what a phase updates was not updated by the phases before it.
 */
import type pg from 'pg';
import { METADATA_SCHEMA } from '../node/names.js';
import type { PostgresServer } from '../pg-server/postgres-server.js';
import { BenchError } from './bench-error.js';
import type { RunRecorder } from './bench-results.js';
import { APPLIER_ROLE, BENCH_DATABASE, driverClient, MARKS_TABLE, trackStatements } from './bench-settings.js';
import { measureLive } from './live-lag.js';
import { MarkWatcher, MarkWriter } from './mark-probes.js';
import { runPgbench } from './pgbench.js';
import type { PgbenchLoad } from './pgbench.js';
import { pgbenchConverged, pgbenchTopology } from './pgbench-topology.js';
import type { Topology } from './replication.js';
import { profileStatements, readStatementStats, resetStatementStats, serverUsMatching } from './statement-profile.js';
import { microsPer, withReplication } from './workload-runner.js';
import type { RunContext } from './workload-runner.js';

const NODES = ['a', 'b'];
/** pgbench seconds of the profiled backlog (at most the workload's own): 18,000 to 33,000 transactions here (1,800 to 3,300 TPS, 36 runs). */
export const PROFILE_SECONDS = 10;

/** The nested statements that write the conflict log (apply-procedure-sql.ts and conflict-log.ts). */
const CONFLICT_LOG = new RegExp(`^\\s*INSERT INTO ${METADATA_SCHEMA}\\.conflicts\\b`);

export async function runOltp(ctx: RunContext, rec: RunRecorder): Promise<void> {
  const load: PgbenchLoad = { seconds: ctx.sizes.pgbenchSeconds, clients: 4, threads: 2, rate: ctx.sizes.pgbenchRate };
  const variant = ctx.side.variant;
  const storm = variant === 'conflict-free' || variant === 'conflict-storm';
  const topology = rewrittenBeforeGroup(pgbenchTopology(ctx, NODES, [{ source: 'a', target: 'b' }], true), variant === 'conflict-free');
  await withReplication(ctx, rec, topology, async (repl) => {
    const a = repl.server('a');
    const b = repl.server('b');
    if (variant === 'conflict-storm') await rewriteAccounts(b);
    const writer = await MarkWriter.open(a, 0);
    const watcher = await MarkWatcher.open(b, 0);
    const statements = await driverClient(b, 'bench_statements');
    // The storm's figures: conflicts logged on B by the phase that just ended, per source transaction.
    let logged = storm ? await conflictsLogged(statements) : 0;
    const conflictsPerTxn = async (key: string, transactions: number): Promise<void> => {
      if (!storm) return;
      const now = await conflictsLogged(statements);
      rec.set(key, (now - logged) / transactions);
      logged = now;
    };
    try {
      // Backlog.
      const backlog = await runPgbench(a, load, ctx.sizes.pgbenchScale);
      rec.set('backlog.transactions', backlog.transactions);
      rec.set('backlog.sourceTps', backlog.tps);
      const fence = await writer.write();
      const early = await statements.query(`SELECT 1 FROM public.${MARKS_TABLE} WHERE id = $1`, [fence.id]);
      if (early.rowCount) throw new BenchError('BENCH_UNEXPECTED', 'the fence reached B before replication started');
      watcher.start();
      await repl.readyToStart();
      const started = await repl.start();
      const seenAt = await watcher.waitFor(fence.id, ctx.timeoutMs);
      const usage = await repl.usage('b');
      const catchUp = (seenAt - started.clockAt) / 1000;
      rec.set('backlog.agentStartSeconds', started.startupSeconds);
      rec.set('backlog.catchUpSeconds', catchUp);
      rec.set('backlog.txnPerSecond', backlog.transactions / catchUp);
      rec.set('backlog.applyCpuUsPerTxn', microsPer(usage.applyCpuSeconds, backlog.transactions));
      if (repl.engine === 'pgbidi') rec.set('backlog.agentCpuUsPerTxn', microsPer(usage.agentCpuSeconds, backlog.transactions));
      await conflictsPerTxn('backlog.conflictsPerTxn', backlog.transactions);
      rec.converged(await pgbenchConverged(repl, NODES));

      // Live.
      await repl.waitStreaming(ctx.timeoutMs);
      const live = await measureLive(rec, [{ key: 'live', writer, watcher }], ctx.timeoutMs, () => runPgbench(a, load, ctx.sizes.pgbenchScale));
      rec.set('live.transactions', live.transactions);
      rec.set('live.sourceTps', live.tps);
      await conflictsPerTxn('live.conflictsPerTxn', live.transactions);
      rec.converged(await pgbenchConverged(repl, NODES));

      // Statement profile.
      await repl.stop(ctx.timeoutMs);
      const profiled = await runPgbench(a, { ...load, seconds: Math.min(PROFILE_SECONDS, load.seconds) }, ctx.sizes.pgbenchScale);
      const profileFence = await writer.write();
      await trackStatements(b, 'all');
      await resetStatementStats(statements);
      await repl.readyToStart();
      await repl.start();
      await watcher.waitFor(profileFence.id, ctx.timeoutMs);
      const stats = await readStatementStats(statements, APPLIER_ROLE);
      const profile = profileStatements(stats, profiled.transactions);
      await trackStatements(b, 'none');
      rec.profile(profile);
      await conflictsPerTxn('profile.conflictsPerTxn', profiled.transactions);
      if (storm) rec.set('profile.conflictLogUsPerTxn', serverUsMatching(stats, CONFLICT_LOG) / profiled.transactions);
      if (repl.engine === 'pgbidi') {
        rec.set('profile.serverUsPerTxn', profile.perTransaction.serverUs);
        rec.set('profile.statementsPerTxn', profile.perTransaction.statements);
        rec.set('profile.callsPerTxn', profile.perTransaction.calls);
        rec.set('profile.plansPerTxn', profile.perTransaction.plans);
      }
      rec.converged(await pgbenchConverged(repl, NODES));
    } finally {
      await Promise.all([writer.close(), watcher.close(), statements.end().catch(() => undefined)]);
    }
  });
}

/**
 * The conflict storm's data: every pgbench_accounts row on B written again on B, with the values it
 * has. Written before the group began (conflict-free), a row predates the group's epoch, which
 * pgbidi does not count as a conflict; written after (conflict-storm), it is a local change that the
 * first remote update of the row overwrites: an update_origin_differs, applied and logged. Both
 * variants rewrite and vacuum the table once, so that B's table is alike in both.
 */
async function rewriteAccounts(server: PostgresServer): Promise<void> {
  await server.query('UPDATE pgbench_accounts SET abalance = abalance', [], BENCH_DATABASE);
  await server.query('VACUUM pgbench_accounts', [], BENCH_DATABASE);
}

/** The topology, with B's accounts rewritten right after its data is loaded (before the engine is wired) when `before`. */
function rewrittenBeforeGroup(topology: Topology, before: boolean): Topology {
  if (!before) return topology;
  const b = NODES.indexOf('b');
  return {
    ...topology,
    prepare: async (server, index) => {
      await topology.prepare(server, index);
      if (index === b) await rewriteAccounts(server);
    },
  };
}

async function conflictsLogged(client: pg.ClientBase): Promise<number> {
  const r = await client.query<{ n: string }>(`SELECT count(*)::text AS n FROM ${METADATA_SCHEMA}.conflicts`);
  return Number(r.rows[0]?.n ?? 0);
}
