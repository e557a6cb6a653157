/**
 * `npm run bench`: pgbidi beside PostgreSQL's native logical replication, every workload of
 * research/baselines.md and more (workload-specs.ts), on fresh servers of the same build, in one run.
 *
 * For every repetition, version and workload, one run per side (native and pgbidi, or pgbidi with
 * observability off and on), back to back; the side that goes first alternates between repetitions.
 * Progress goes to stderr, the report (text, or JSON with --json) to stdout. A run that fails
 * (a timeout included) is recorded with its figures missing and the bench goes on; every server and
 * agent process is stopped on the way out.
 */
import { writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { stopAllServers } from '../pg-server/postgres-server.js';
import { stopAllAgents } from './agent-process.js';
import { describeError } from './bench-error.js';
import { parseOptions, USAGE } from './bench-options.js';
import type { BenchOptions, Environment } from './bench-options.js';
import { formatReport, value } from './bench-report.js';
import { RunRecorder, runFailed } from './bench-results.js';
import type { RunResult, Side, WorkloadId } from './bench-results.js';
import { summarize } from './bench-summary.js';
import type { WorkloadSummary } from './bench-summary.js';
import { evaluateTargets } from './bench-targets.js';
import type { TargetResult } from './bench-targets.js';
import { HEARTBEAT_MS, POLL_MS } from './bench-settings.js';
import { runMesh } from './mesh.js';
import { runBulk } from './w1-bulk.js';
import { runOltp } from './w2-oltp.js';
import { runBidirectional } from './w3-bidirectional.js';
import { runLargeTransaction } from './w4-large-transaction.js';
import { runSingleRow } from './w5-single-row.js';
import { runSynchronousCommit } from './synchronous-commit.js';
import type { WorkloadRunner } from './workload-runner.js';
import { WORKLOADS } from './workload-specs.js';
import { errorMessage } from '../util/error-message.js';

export type Io = { out: (s: string) => void; err: (s: string) => void };

const RUNNERS: Readonly<Record<WorkloadId, WorkloadRunner>> = {
  w1: runBulk,
  w2: runOltp,
  w3: runBidirectional,
  w4: runLargeTransaction,
  w5: runSingleRow,
  mesh: runMesh,
  // The observability comparison is W2, run twice by pgbidi (its spec names the two variants).
  obs: runOltp,
  // So is the conflict storm: pgbidi on B's data written before the group began, then after.
  storm: runOltp,
  sync: runSynchronousCommit,
};

/** Everything one bench run produced: what --json prints. */
export interface BenchOutcome {
  readonly meta: {
    readonly startedAt: string;
    readonly workloads: readonly WorkloadId[];
    readonly versions: readonly number[];
    readonly reps: number;
    readonly quick: boolean;
    readonly sizes: BenchOptions['sizes'];
    readonly timeoutS: number;
    readonly pollMs: number;
    readonly heartbeatMs: number;
    readonly cpus: number;
    readonly loadavgAtStart: readonly number[];
    /** False when interrupted. */
    readonly complete: boolean;
  };
  readonly runs: readonly RunResult[];
  readonly summaries: readonly WorkloadSummary[];
  /** Null with --quick (sizes too small for any target to mean something). */
  readonly targets: readonly TargetResult[] | null;
}

export async function main(argv: readonly string[], io: Io, env?: Environment): Promise<number> {
  let options: BenchOptions | 'help';
  try {
    options = parseOptions(argv, env);
  } catch (err) {
    io.err(`bench: ${errorMessage(err)}\n\n${USAGE}\n`);
    return 2;
  }
  if (options === 'help') {
    io.out(`${USAGE}\n`);
    return 0;
  }

  let interrupted = false;
  const onSignal = (): void => {
    if (interrupted) process.exit(130); // second signal: the exit hooks SIGKILL servers and agents
    interrupted = true;
    io.err('bench: interrupted, stopping agents and servers (again to exit at once)\n');
    void stopAllAgents().then(() => stopAllServers());
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const startedAt = new Date().toISOString();
  const load = loadavg();
  const runs: RunResult[] = [];
  try {
    for (let rep = 1; rep <= options.reps && !interrupted; rep += 1) {
      for (const version of options.versions) {
        for (const workload of options.workloads) {
          const spec = WORKLOADS[workload];
          const sides: Side[] = rep % 2 === 1 ? [spec.baseline, spec.subject] : [spec.subject, spec.baseline];
          for (const side of sides) {
            if (interrupted) break;
            const label = side.variant === 'default' ? side.engine : `${side.engine} ${side.variant}`;
            io.err(`bench: rep ${rep}/${options.reps} PG ${version.major} ${workload} ${label} ... `);
            const rec = new RunRecorder(
              { workload, major: version.major, engine: side.engine, variant: side.variant, rep },
              spec.figures.map((f) => f.key),
            );
            try {
              await RUNNERS[workload]({ binDir: version.binDir, major: version.major, rep, side, sizes: options.sizes, timeoutMs: options.timeoutMs }, rec);
            } catch (err) {
              rec.fail(describeError(err));
            }
            const run = rec.result();
            runs.push(run);
            io.err(`${progressLine(run)}\n`);
          }
        }
      }
    }
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await stopAllAgents();
    await stopAllServers();
  }

  const summaries = summarize(runs);
  const outcome: BenchOutcome = {
    meta: {
      startedAt,
      workloads: options.workloads,
      versions: options.versions.map((v) => v.major),
      reps: options.reps,
      quick: options.quick,
      sizes: options.sizes,
      timeoutS: options.timeoutMs / 1000,
      pollMs: POLL_MS,
      heartbeatMs: HEARTBEAT_MS,
      cpus: cpus().length,
      loadavgAtStart: load,
      complete: !interrupted,
    },
    runs,
    summaries,
    targets: options.quick
      ? null
      : evaluateTargets(
          summaries,
          options.workloads,
          options.versions.map((v) => v.major),
        ),
  };
  const json = `${JSON.stringify(outcome, null, 2)}\n`;
  if (options.jsonOut !== null) writeFileSync(options.jsonOut, json);
  if (options.json) io.out(json);
  else if (runs.length) {
    io.out(
      formatReport({ reps: options.reps, quick: options.quick, cpus: outcome.meta.cpus, loadavg: load, sizes: options.sizes }, summaries, outcome.targets),
    );
  }
  // A run cut short by the signal fails with whatever the stopped servers answered: not news.
  if (interrupted) return 130;
  const failed = runs.filter(runFailed);
  if (failed.length) {
    io.err(`\nbench: ${failed.length} run(s) failed or did not converge:\n`);
    for (const r of failed) io.err(`  rep ${r.rep} PG ${r.version} ${r.workload} ${r.engine}/${r.variant}: ${r.error ?? 'the nodes did not converge'}\n`);
    return 1;
  }
  return 0;
}

/** "12.3 s: backlog catch-up 3.100 s, …, converged" for the progress line. */
function progressLine(run: RunResult): string {
  if (run.skipped) return `n/a: ${run.skipped}`;
  const spec = WORKLOADS[run.workload];
  const figures = spec.headline.map((key) => {
    const f = spec.figures.find((x) => x.key === key);
    const v = run.figures[key];
    return f && v !== null && v !== undefined ? `${key} ${value(v, f.unit)}${f.unit === 's' ? ' s' : ` ${f.unit}`}` : `${key} -`;
  });
  const status = run.error ? `FAILED: ${run.error}` : run.converged === false ? 'NOT CONVERGED' : run.converged ? 'converged' : '';
  return `${run.seconds.toFixed(0)} s: ${figures.join(', ')}${status ? `; ${status}` : ''}`;
}

function isEntry(): boolean {
  const script = process.argv[1];
  if (script === undefined) return false;
  try {
    return realpathSync(script) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isEntry()) {
  const io: Io = { out: (s) => process.stdout.write(s), err: (s) => process.stderr.write(s) };
  // Exit explicitly: a pool or timer left behind by a failed run must not keep the process alive.
  void main(process.argv.slice(2), io).then((code) => process.exit(code));
}
