/**
 * pgbench, the load of W2, W3 and the mesh: initialises identical data on every node and runs the
 * `-N` (simple update) transaction on a source, optionally on a slice of the accounts only.
 *
 * Debian's pgbench is used for every server build (a PG 15 pgbench drives a PG 18 server). Every
 * node runs the same deterministic `pgbench -i`, so no initial copy is needed; pgbench_history then
 * gets `hid bigserial PRIMARY KEY` with disjoint sequences (node i of n: i+1, i+1+n, …) so that it
 * can be replicated in every direction.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { PostgresServer } from '../pg-server/postgres-server.js';
import { BenchError } from './bench-error.js';
import { APPLIER_ROLE, BENCH_DATABASE } from './bench-settings.js';

export const PGBENCH_TABLES = ['pgbench_accounts', 'pgbench_branches', 'pgbench_tellers', 'pgbench_history'] as const;

/** Each pgbench table with its key, for the convergence fingerprint. */
export const PGBENCH_KEYS: Readonly<Record<(typeof PGBENCH_TABLES)[number], string>> = {
  pgbench_accounts: 'aid',
  pgbench_branches: 'bid',
  pgbench_tellers: 'tid',
  pgbench_history: 'hid',
};

/** Accounts per scale unit (pgbench's naccounts). */
export const ACCOUNTS_PER_SCALE = 100_000;

/** Debian's pgbench: a versioned client binary first, the pg_wrapper in /usr/bin last. */
export function pgbenchBinary(): string | undefined {
  const versioned = (() => {
    try {
      return readdirSync('/usr/lib/postgresql')
        .filter((d) => /^\d+$/.test(d))
        .sort((x, y) => Number(y) - Number(x))
        .map((d) => `/usr/lib/postgresql/${d}/bin/pgbench`);
    } catch {
      return [];
    }
  })();
  return [...versioned, '/usr/bin/pgbench'].find((p) => existsSync(p));
}

export interface PgbenchResult {
  /** pgbench's "tps = … (without initial connection time)". */
  readonly tps: number;
  /** "number of transactions actually processed". */
  readonly transactions: number;
  /** "number of failed transactions" (PG 15+ clients), 0 when not printed. */
  readonly failed: number;
}

/** Pure: the figures of pgbench's summary on stdout. */
export function parsePgbenchSummary(stdout: string): PgbenchResult {
  const tps = /^tps = ([\d.]+) \(without initial connection time\)$/m.exec(stdout)?.[1];
  const transactions = /^number of transactions actually processed: (\d+)/m.exec(stdout)?.[1];
  const failed = /^number of failed transactions: (\d+)/m.exec(stdout)?.[1];
  if (tps === undefined || transactions === undefined) {
    throw new BenchError('BENCH_TOOL_FAILED', `pgbench printed no summary:\n${stdout.slice(-800)}`);
  }
  return { tps: Number(tps), transactions: Number(transactions), failed: failed === undefined ? 0 : Number(failed) };
}

export interface PgbenchLoad {
  readonly seconds: number;
  readonly clients: number;
  readonly threads: number;
  /** --rate: transactions per second over all clients; null runs unthrottled. */
  readonly rate: number | null;
  /** Only these accounts (W3's disjoint halves); absent: all of them (the builtin -N script). */
  readonly aids?: { readonly from: number; readonly to: number };
}

/**
 * The builtin `-N` transaction with the account drawn from [lo, hi] instead of every account
 * (pgbench's builtin script text, src/bin/pgbench/pgbench.c, with only the range changed).
 */
const SLICE_SCRIPT = `\\set aid random(:lo, :hi)
\\set bid random(1, :nbranches)
\\set tid random(1, :ntellers)
\\set delta random(-5000, 5000)
BEGIN;
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (:tid, :bid, :aid, :delta, CURRENT_TIMESTAMP);
END;
`;

/** `pgbench -i -s scale` and the history key of node `index` of `count`. */
export async function initPgbench(server: PostgresServer, scale: number, index: number, count: number, timeoutMs: number): Promise<void> {
  await pgbench(server, ['-i', '-s', String(scale), '-q'], timeoutMs);
  await server.query(`ALTER TABLE pgbench_history ADD COLUMN hid bigserial PRIMARY KEY`, [], BENCH_DATABASE);
  await server.query(`ALTER SEQUENCE pgbench_history_hid_seq INCREMENT BY ${count} RESTART WITH ${index + 1}`, [], BENCH_DATABASE);
}

/** Runs the load on `server` and returns pgbench's summary. */
export async function runPgbench(server: PostgresServer, load: PgbenchLoad, scale: number): Promise<PgbenchResult> {
  const args = ['-n', '-c', String(load.clients), '-j', String(load.threads), '-T', String(load.seconds)];
  if (load.rate !== null) args.push('-R', String(load.rate));
  let dir: string | undefined;
  if (load.aids) {
    dir = mkdtempSync(join(tmpdir(), 'pgbidi-bench-pgbench-'));
    const script = join(dir, 'slice.sql');
    writeFileSync(script, SLICE_SCRIPT);
    args.push('-f', script, '-D', `lo=${load.aids.from}`, '-D', `hi=${load.aids.to}`, '-D', `nbranches=${scale}`, '-D', `ntellers=${10 * scale}`);
  } else {
    args.push('-N');
  }
  try {
    // pgbench ends itself after -T; the margin covers connection and a slow last transaction.
    const stdout = await pgbench(server, args, (load.seconds + 120) * 1000);
    const result = parsePgbenchSummary(stdout);
    if (result.failed > 0) throw new BenchError('BENCH_TOOL_FAILED', `pgbench on ${server.name}: ${result.failed} failed transactions`);
    return result;
  } finally {
    if (dir) rmSync(dir, { recursive: true, force: true });
  }
}

async function pgbench(server: PostgresServer, args: readonly string[], timeoutMs: number): Promise<string> {
  const binary = pgbenchBinary();
  if (!binary) throw new BenchError('BENCH_TOOL_FAILED', 'pgbench not found (install postgresql-client, e.g. Debian postgresql-client-15)');
  const all = [...args, '-h', server.host, '-p', String(server.port), '-U', APPLIER_ROLE, BENCH_DATABASE];
  const child = spawn(binary, all, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, PGAPPNAME: 'bench_pgbench' } });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
  child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr = (stderr + s).slice(-4000)));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  try {
    const status = await new Promise<number | string>((resolve) => {
      child.once('error', (err) => resolve(err.message));
      child.once('close', (code, signal) => resolve(code ?? signal ?? 'unknown'));
    });
    if (status !== 0) {
      throw new BenchError('BENCH_TOOL_FAILED', `pgbench ${args.join(' ')} on ${server.name} failed (${status}):\n${stderr.slice(-1500)}`);
    }
    return stdout;
  } finally {
    clearTimeout(timer);
  }
}

/** md5 of each pgbench table's rows in key order, joined: equal on two nodes iff their data is. */
export async function pgbenchFingerprint(server: PostgresServer): Promise<string> {
  const parts: string[] = [];
  for (const table of PGBENCH_TABLES) {
    const key = PGBENCH_KEYS[table];
    const rows = await server.query<{ n: number; md5: string | null }>(
      `SELECT count(*)::int AS n, md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t.${key}), '')) AS md5 FROM public.${table} t`,
      [],
      BENCH_DATABASE,
    );
    parts.push(`${table}:${rows[0]?.n ?? 0}:${rows[0]?.md5 ?? ''}`);
  }
  return parts.join(' ');
}
