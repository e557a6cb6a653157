/**
 * Pure: measurements in, summary and text out. Medians over repetitions; the pgbidi/native ratio
 * is the median of per-repetition ratios (runs of one repetition are measured back to back, so
 * the ratio cancels most of the machine's drift, as in the baselines' interleaved comparison).
 */
import type { Measurement, Mode, Variant } from './bench-workload.js';

/** The medians of one (version, engine, mode, variant) over its repetitions. */
export type SummaryRow = Omit<Measurement, 'rep' | 'transactionsApplied'> & {
  readonly reps: number;
  /** rows/s of every repetition, in order. */
  readonly runs: readonly number[];
};

export interface RatioRow {
  readonly version: string;
  readonly mode: Mode;
  readonly variant: Variant;
  /** Median over repetitions of pgbidi rows/s ÷ native rows/s. */
  readonly rowsPerSecond: number;
  /** The same for the apply rate (first row → all rows). */
  readonly applyRowsPerSecond: number;
}

export interface BenchSummary {
  readonly rows: readonly SummaryRow[];
  readonly ratios: readonly RatioRow[];
}

export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((x, y) => x - y);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? (sorted[mid] as number) : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

export function summarize(measurements: readonly Measurement[]): BenchSummary {
  const groups = groupBy(measurements, (m) => [m.version, m.engine, m.mode, m.variant].join('|'));
  const rows: SummaryRow[] = [...groups.values()].map((group) => {
    const first = group[0] as Measurement;
    const tails = group.map((m) => m.tailSeconds).filter((t): t is number => t !== null);
    return {
      version: first.version,
      engine: first.engine,
      mode: first.mode,
      variant: first.variant,
      reps: group.length,
      rows: first.rows,
      txnRows: first.txnRows,
      seconds: median(group.map((m) => m.seconds)),
      rowsPerSecond: median(group.map((m) => m.rowsPerSecond)),
      firstRowSeconds: median(group.map((m) => m.firstRowSeconds)),
      applyRowsPerSecond: median(group.map((m) => m.applyRowsPerSecond)),
      sourceInsertSeconds: median(group.map((m) => m.sourceInsertSeconds)),
      tailSeconds: tails.length ? median(tails) : null,
      converged: group.every((m) => m.converged),
      runs: [...group].sort((x, y) => x.rep - y.rep).map((m) => m.rowsPerSecond),
    };
  });

  const ratios: RatioRow[] = [];
  for (const group of groupBy(measurements, (m) => [m.version, m.mode].join('|')).values()) {
    const native = new Map(group.filter((m) => m.engine === 'native').map((m) => [m.rep, m]));
    const byVariant = groupBy(
      group.filter((m) => m.engine === 'pgbidi'),
      (m) => m.variant,
    );
    for (const runs of byVariant.values()) {
      const pairs = runs.flatMap((p) => {
        const n = native.get(p.rep);
        return n ? [[p, n] as const] : [];
      });
      const first = runs[0];
      if (!first || pairs.length === 0) continue;
      ratios.push({
        version: first.version,
        mode: first.mode,
        variant: first.variant,
        rowsPerSecond: median(pairs.map(([p, n]) => p.rowsPerSecond / n.rowsPerSecond)),
        applyRowsPerSecond: median(pairs.map(([p, n]) => p.applyRowsPerSecond / n.applyRowsPerSecond)),
      });
    }
  }
  return { rows, ratios };
}

/** Two plain-text tables: the measurements (medians) and the ratios. */
export function formatReport(summary: BenchSummary): string {
  const multiRep = summary.rows.some((r) => r.reps > 1);
  const header = [
    'version',
    'engine',
    'mode',
    'variant',
    'rows',
    'txn rows',
    'reps',
    'seconds',
    'rows/s',
    'first row s',
    'apply rows/s',
    'source insert s',
    'tail s',
    'converged',
    ...(multiRep ? ['rows/s per rep'] : []),
  ];
  const body = summary.rows.map((r) => [
    r.version,
    r.engine,
    r.mode,
    r.variant,
    integer(r.rows),
    integer(r.txnRows),
    String(r.reps),
    secs(r.seconds),
    integer(r.rowsPerSecond),
    secs(r.firstRowSeconds),
    integer(r.applyRowsPerSecond),
    secs(r.sourceInsertSeconds),
    r.tailSeconds === null ? '-' : secs(r.tailSeconds),
    r.converged ? 'yes' : 'NO',
    ...(multiRep ? [r.runs.map(integer).join(', ')] : []),
  ]);
  const ratioHeader = ['version', 'mode', 'variant', 'pgbidi/native rows/s', 'pgbidi/native apply rows/s'];
  const ratioBody = summary.ratios.map((r) => [r.version, r.mode, r.variant, ratio(r.rowsPerSecond), ratio(r.applyRowsPerSecond)]);
  return `${table(header, body, 4)}\n${table(ratioHeader, ratioBody, 3)}`;
}

const NOTES = `seconds: backlog = from ALTER SUBSCRIPTION ENABLE / agent start to all rows on the target;
streaming = from the source's first commit to all rows on the target. rows/s = rows / seconds.
first row s: from the same start to the first row seen. apply rows/s = rows / (first row -> all rows).
tail s: from the source's last commit to all rows on the target. Every time has 20 ms probe resolution.`;

export function formatNotes(): string {
  return `${NOTES}\n`;
}

/** Columns before `textColumns` are left-aligned, the numeric ones after it right-aligned. */
function table(header: readonly string[], body: readonly (readonly string[])[], textColumns: number): string {
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((row) => (row[i] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    cells
      .map((c, i) => (i < textColumns ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0)))
      .join('  ')
      .trimEnd();
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...body.map(line)].join('\n') + '\n';
}

function integer(n: number): string {
  return Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : 'n/a';
}

function secs(n: number): string {
  return n.toFixed(3);
}

function ratio(n: number): string {
  return Number.isFinite(n) ? n.toFixed(2) : 'n/a';
}

function groupBy<T>(items: readonly T[], key: (item: T) => string): Map<string, T[]> {
  const groups = new Map<string, T[]>();
  for (const item of items) {
    const k = key(item);
    const group = groups.get(k);
    if (group) group.push(item);
    else groups.set(k, [item]);
  }
  return groups;
}
