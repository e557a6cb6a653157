/**
 * Pure: the text report. One section per workload and version (medians, per-repetition values when
 * there are several, the ratio), the W2 statement profiles, notes on what the figures mean, and the
 * targets table. Nothing here measures or formats JSON.
 */
import type { RunResult } from './bench-results.js';
import { overheadPercent } from './bench-summary.js';
import type { SideFigure, SideRuns, WorkloadSummary } from './bench-summary.js';
import type { TargetResult } from './bench-targets.js';
import type { StatementProfile } from './statement-profile.js';
import { PROFILE_SECONDS } from './w2-oltp.js';
import { sideLabel, WORKLOADS } from './workload-specs.js';
import type { Sizes, Unit, WorkloadSpec } from './workload-specs.js';

export interface ReportHeader {
  readonly reps: number;
  readonly quick: boolean;
  readonly cpus: number;
  readonly loadavg: readonly number[];
  readonly sizes: Sizes;
}

export function formatReport(header: ReportHeader, summaries: readonly WorkloadSummary[], targets: readonly TargetResult[] | null): string {
  const out: string[] = [
    `pgbidi bench${header.quick ? ' --quick (tiny sizes: proves every figure can be measured; says nothing about speed)' : ''}: ` +
      `${header.reps} rep(s), ${header.cpus} CPUs, load average at start ${header.loadavg.map((l) => l.toFixed(2)).join(' ')}`,
    '',
  ];
  const order = Object.keys(WORKLOADS);
  const sorted = [...summaries].sort((x, y) => order.indexOf(x.workload) - order.indexOf(y.workload) || y.major - x.major);
  let lastWorkload = '';
  for (const summary of sorted) {
    const spec = WORKLOADS[summary.workload];
    if (summary.workload !== lastWorkload) {
      out.push(`== ${spec.title(header.sizes)} ==`, '');
      lastWorkload = summary.workload;
    }
    out.push(formatWorkload(spec, summary));
  }
  out.push(NOTES);
  if (targets) out.push('', formatTargets(targets));
  return `${out.join('\n')}\n`;
}

function formatWorkload(spec: WorkloadSpec, summary: WorkloadSummary): string {
  const reps = Math.max(summary.baseline.runs.length, summary.subject.runs.length);
  const b = sideLabel(spec, 'baseline');
  const s = sideLabel(spec, 'subject');
  const multi = reps > 1;
  const header = ['figure', 'unit', b, s, `${s}/${b}`, ...(spec.overhead ? ['overhead %'] : []), ...(multi ? [`${b} per rep`, `${s} per rep`] : [])];
  const body = summary.figures.map((f) => [
    f.spec.label,
    f.spec.unit,
    sideCell(f.baseline, summary.baseline, f.spec.unit),
    sideCell(f.subject, summary.subject, f.spec.unit),
    f.spec.better === 'none' || !f.baseline.applies || !f.subject.applies ? '-' : ratioText(f.ratio),
    ...(spec.overhead ? [percentText(overheadPercent(f.spec, f.ratio))] : []),
    ...(multi ? [perRep(f.baseline, f.spec.unit), perRep(f.subject, f.spec.unit)] : []),
  ]);
  const lines = [`PostgreSQL ${summary.version}, ${reps} rep(s)`, table(header, body, 2)];
  if (summary.figures.some((f) => !f.baseline.applies || !f.subject.applies)) {
    lines.push("  '-': the figure does not exist for that engine (native has no agent process, and pg_stat_statements does not see its apply worker)");
  }
  const sizes = summary.figures.find((f) => f.spec.key === 'backlog.transactions');
  const sizeRatio = sizes ? ratioOf(sizes.subject.median, sizes.baseline.median) : null;
  if (sizes && sizeRatio !== null && Math.abs(sizeRatio - 1) > BACKLOG_SIZE_TOLERANCE) {
    lines.push(
      `  note: the backlogs differ in size (${b} ${value(sizes.baseline.median ?? 0, 'txn')}, ${s} ${value(sizes.subject.median ?? 0, 'txn')} transactions: ` +
        'pgbench ran for the same time at different speeds), so the catch-up time ratio is not like for like; transactions/s applied is',
    );
  }
  lines.push(`  ${statusLine(b, summary.baseline)}; ${statusLine(s, summary.subject)}`);
  for (const [label, side] of [
    [b, summary.baseline],
    [s, summary.subject],
  ] as const) {
    for (const run of side.runs) if (run.error) lines.push(`  ${label} rep ${run.rep} FAILED: ${run.error}`);
  }
  if (spec.profile) lines.push(formatProfiles(spec, summary));
  return `${lines.join('\n')}\n`;
}

/** Backlogs whose sizes differ by more than this fraction get a note beside their catch-up ratio. */
const BACKLOG_SIZE_TOLERANCE = 0.1;

function ratioOf(a: number | null, b: number | null): number | null {
  return a === null || b === null || b === 0 ? null : a / b;
}

function statusLine(label: string, side: SideRuns): string {
  if (side.skipped) return `${label}: n/a (${side.skipped})`;
  return `${label}: converged ${side.converged}/${side.runs.length}${side.failed ? `, ${side.failed} failed` : ''}`;
}

function sideCell(figure: SideFigure, side: SideRuns, unit: Unit): string {
  if (!figure.applies) return '-';
  if (side.skipped) return 'n/a';
  return figure.median === null ? 'failed' : value(figure.median, unit);
}

function perRep(figure: SideFigure, unit: Unit): string {
  if (!figure.applies) return '-';
  return figure.runs.map((v) => (v === null ? 'x' : value(v, unit))).join(', ');
}

/**
 * The statement profile of W2's profiled backlog on B, per side, from the last repetition that has one
 * (the per-transaction medians over all repetitions are in the table above).
 */
function formatProfiles(spec: WorkloadSpec, summary: WorkloadSummary): string {
  const lines = [
    '  statement profile on B during a backlog of its own, after the live phase (pg_stat_statements, track = all, applier role only; ' +
      "the timed phases run with track = none, since tracking runs once per statement in executor hooks that native's apply worker does not call):",
  ];
  for (const which of ['baseline', 'subject'] as const) {
    const side = summary[which];
    const label = sideLabel(spec, which);
    const run = [...side.runs].reverse().find((r): r is RunResult & { profile: StatementProfile } => r.profile !== null);
    if (!run) {
      lines.push(`    ${label}: no profile${side.skipped ? ` (${side.skipped})` : ' (the backlog did not finish)'}`);
      continue;
    }
    lines.push(...profileLines(label, run.rep, side.side.engine === 'native', run.profile));
  }
  return lines.join('\n');
}

/** The per-transaction profile and its top statements, as report lines. */
export function profileLines(label: string, rep: number, native: boolean, p: StatementProfile): string[] {
  const per = p.perTransaction;
  const lines = [
    `    ${label} (rep ${rep}): ${integer(p.transactions)} transactions applied; per applied transaction: ` +
      `${fixed(per.statements, 2)} statements, ${fixed(per.calls, 2)} calls, ${fixed(per.plans, 3)} plans, ${fixed(per.serverUs, 1)} server µs (exec+plan); ` +
      `in total ${integer(p.total.statements)} statements, ${integer(p.total.calls)} calls, ${integer(p.total.plans)} plans, ${integer(p.total.serverUs)} µs`,
  ];
  if (p.total.nestedUs > p.total.topLevelUs) {
    lines.push(
      `      nested statements took longer (${integer(p.total.nestedUs)} µs) than the top-level ones that ran them (${integer(p.total.topLevelUs)} µs): ` +
        'pg_stat_statements records a statement only when it completes, so top-level statements that ended in an error are missing; server µs counts the nested sum',
    );
  }
  if (native) {
    lines.push(
      `      native shows only what is visible: its apply worker calls the executor directly, which pg_stat_statements does not see` +
        (p.distinct === 0 ? ' (nothing was)' : ''),
    );
  }
  if (p.top.length) {
    const header = ['calls', 'plans', 'exec+plan µs', 'µs/call', 'level', 'statement'];
    const body = p.top.map((l) => [
      integer(l.calls),
      integer(l.plans),
      integer(l.serverUs),
      perCall(l.calls ? l.serverUs / l.calls : Number.NaN),
      l.toplevel ? 'top' : 'nested',
      l.query.length > 110 ? `${l.query.slice(0, 107)}...` : l.query,
    ]);
    lines.push(`      top ${p.top.length} of ${p.distinct} statements by time:`);
    lines.push(
      ...table(header, body, 0, 4)
        .trimEnd()
        .split('\n')
        .map((l) => `      ${l}`),
    );
  }
  return lines;
}

function formatTargets(targets: readonly TargetResult[]): string {
  const header = ['target', 'PG', 'measured', 'goal', 'result'];
  const body = targets.map((t) => [
    t.target.label,
    t.version,
    t.value === null ? 'not measured' : `${targetValue(t.value, t.target.unit)}`,
    `${t.target.op} ${targetValue(t.target.threshold, t.target.unit)}`,
    t.met ? 'met' : 'MISSED',
  ]);
  const met = targets.filter((t) => t.met).length;
  return `targets: ${met} of ${targets.length} met (a missed target does not fail the run)\n${table(header, body, 2)}`;
}

function targetValue(v: number, unit: string): string {
  if (unit === 'x') return `${ratioText(v)}x`;
  if (unit === '%') return `${v.toFixed(1)} %`;
  if (unit === 's') return `${v.toFixed(3)} s`;
  return `${v >= 1000 ? integer(v) : fixed(v, 1)} ${unit}`;
}

const NOTES = `What the figures mean:
  backlog: the load ran on the source while nothing applied (pgbidi: no agent running; native: subscription disabled). The clock
    starts right before ALTER SUBSCRIPTION ... ENABLE (native: the worker's launch and connect are measured), and for pgbidi when the
    agent process first answers /status, right before its links start (their connect and slot start are measured; spawning Node and
    loading modules, a one-off cost of each agent start, is not, and is shown in W2 as "agent process spawn -> /status").
  catch-up: until a fence row, committed on the source after the load, is visible on the target.
  live: the applier streams while the load runs; a heartbeat row is committed on the source every 100 ms and the target is polled every
    20 ms: lag = source's commit ack -> first poll that sees it (an upper bound with 20 ms resolution).
  profiled backlog: W2's statement profile comes from a backlog of its own after the live phase (the same pgbench load for up to
    ${PROFILE_SECONDS} s, the applier stopped), the only phase where pg_stat_statements tracks statements.
  per txn: divided by the transactions pgbench committed on the source. CPU of all that applies on B: pgbidi = agent process (from the
    moment it answers /status) + its backends on B; native = its apply worker(s). Server µs = pg_stat_statements total exec+plan time
    of the applier's top-level statements (nested calls counted in "calls", their time is inside their caller's), or of the nested
    ones when that is larger (a top-level statement that ended in an error is not recorded, the statements it ran are).
  per row (W1): the same CPU divided by the rows of the phase; streaming counts what the applier used from just before the first
    insert on A until all rows were on B.
  conflicts logged (storm): rows the phase added to pgbidi.conflicts on B; the conflict log INSERTs' server time is the part of
    server µs spent writing them (in the apply procedure or the statement path), against which the rest of the storm's cost is read.
  ratio: the median over repetitions of the per-repetition ratio (both runs of a repetition are back to back; the engine that goes
    first alternates). 'failed': not measured (timeout or error, see FAILED lines); 'n/a': that run cannot be made.`;

/** Columns before `textColumns` are left-aligned, the others right-aligned, except from `tailText` on. */
function table(header: readonly string[], body: readonly (readonly string[])[], textColumns: number, tailText = Number.POSITIVE_INFINITY): string {
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((row) => (row[i] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    cells
      .map((c, i) => (i < textColumns || i >= tailText ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0)))
      .join('  ')
      .trimEnd();
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...body.map(line)].join('\n') + '\n';
}

/** A figure's value in its unit's format. */
export function value(v: number, unit: Unit): string {
  switch (unit) {
    case 's':
      return v.toFixed(3);
    case 'rows/s':
    case 'txn/s':
    case 'txn':
      return integer(v);
    case 'µs/txn':
      return v >= 1000 ? integer(v) : fixed(v, 1);
    case 'µs/row':
      return v >= 1000 ? integer(v) : fixed(v, 2);
    case 'MiB':
      return fixed(v, 1);
    case 'per txn':
      return fixed(v, 3);
  }
}

export function ratioText(r: number | null): string {
  if (r === null) return 'n/a';
  return r >= 0.1 || r === 0 ? r.toFixed(2) : r.toPrecision(2);
}

function perCall(us: number): string {
  return us >= 1000 ? integer(us) : fixed(us, 1);
}

function percentText(p: number | null): string {
  return p === null ? '-' : `${p >= 0 ? '+' : ''}${p.toFixed(1)}`;
}

function integer(n: number): string {
  return Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : 'n/a';
}

function fixed(n: number, digits: number): string {
  return Number.isFinite(n) ? n.toFixed(digits) : 'n/a';
}
