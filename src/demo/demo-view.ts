/**
 * Pure rendering of the demo's terminal view: a snapshot in, lines of text out. No I/O and no
 * terminal control here; the caller decides whether to redraw in place (TTY) or to print the
 * compact one-line form (pipes, CI logs).
 */
import type { ConflictType } from '../conflict/conflict-types.js';
import { CONFLICT_TYPES } from '../conflict/conflict-types.js';
import type { LinkState } from '../observability/metrics.js';
import { assertNever } from '../util/assert-never.js';
import type { RaceKind, WorkloadStats } from './demo-workload.js';
import { RACE_KINDS } from './demo-workload.js';

/** One directed link: `source`'s changes applied on `target` (the agent of `target` runs it). */
export interface LinkView {
  readonly source: string;
  readonly target: string;
  readonly state: LinkState;
  readonly lagSeconds: number;
  readonly changesPerSecond: number;
  readonly changesApplied: number;
  readonly conflicts: Readonly<Partial<Record<ConflictType, number>>>;
  readonly lastError: string | null;
}

export interface NodeHash {
  readonly node: string;
  /** undefined when the node could not be read. */
  readonly rows: number | undefined;
  readonly md5: string | undefined;
}

export interface TableView {
  readonly table: string;
  readonly nodes: readonly NodeHash[];
}

export type DemoPhase = 'running' | 'stopping' | 'converging';

export interface DemoSnapshot {
  readonly phase: DemoPhase;
  readonly elapsedSeconds: number;
  /** undefined: runs until Ctrl-C. */
  readonly durationSeconds: number | undefined;
  readonly links: readonly LinkView[];
  readonly tables: readonly TableView[];
  readonly workload: WorkloadStats;
  readonly writesPerSecond: number;
  /** Why the run is ending, e.g. the signal received. */
  readonly notice?: string;
}

export interface RenderOptions {
  /** ANSI colours (only on a terminal). */
  readonly color: boolean;
  /** Lines are cut to this many visible characters, so that a redraw never wraps. */
  readonly width: number;
}

/** Short column titles; the full names are in the legend and in the metrics. */
const CONFLICT_LABELS: Readonly<Record<ConflictType, string>> = {
  insert_exists: 'ins_exists',
  update_origin_differs: 'upd_differs',
  update_exists: 'upd_exists',
  update_missing: 'upd_missing',
  update_deleted: 'upd_deleted',
  delete_origin_differs: 'del_differs',
  delete_missing: 'del_missing',
  multiple_unique_conflicts: 'multi_unique',
};

const STATE_COLORS: Readonly<Record<LinkState, string>> = {
  streaming: '32',
  paused: '33',
  connecting: '33',
  backoff: '33',
  error: '31',
  stopped: '2',
};

/** Every node read, and all report the same row count and hash. */
export function tableConverged(t: TableView): boolean {
  const first = t.nodes[0];
  if (!first || first.md5 === undefined) return false;
  return t.nodes.every((n) => n.md5 === first.md5 && n.rows === first.rows);
}

export function allConverged(tables: readonly TableView[]): boolean {
  return tables.length > 0 && tables.every(tableConverged);
}

/** Conflict types seen on any link, in the catalogue's order (columns appear as conflicts do). */
function seenConflictTypes(links: readonly LinkView[]): ConflictType[] {
  return CONFLICT_TYPES.filter((t) => links.some((l) => (l.conflicts[t] ?? 0) > 0));
}

function totalConflicts(l: LinkView): number {
  return CONFLICT_TYPES.reduce((sum, t) => sum + (l.conflicts[t] ?? 0), 0);
}

interface Cell {
  readonly text: string;
  readonly align?: 'left' | 'right';
  readonly sgr?: string;
}

function paint(text: string, sgr: string | undefined, options: RenderOptions): string {
  return options.color && sgr ? `\u001b[${sgr}m${text}\u001b[0m` : text;
}

/** Lays out rows of cells in columns; colour codes are added after padding and cutting. */
function grid(rows: readonly (readonly Cell[])[], options: RenderOptions): string[] {
  const widths: number[] = [];
  for (const row of rows) row.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.text.length)));
  return rows.map((row) => {
    let out = '';
    let used = 0;
    for (const [i, cell] of row.entries()) {
      const sep = i === 0 ? '' : '  ';
      const w = widths[i] ?? 0;
      let text = cell.align === 'right' ? cell.text.padStart(w) : cell.text.padEnd(w);
      if (i === row.length - 1) text = text.trimEnd();
      const room = options.width - used - sep.length;
      if (room <= 0) break;
      if (text.length > room) text = text.slice(0, room);
      out += sep + paint(text, cell.sgr, options);
      used += sep.length + text.length;
    }
    return out;
  });
}

function cut(line: string, width: number): string {
  return line.length > width ? line.slice(0, width) : line;
}

function formatDuration(seconds: number): string {
  const s = Math.floor(seconds);
  const m = Math.floor(s / 60);
  return m > 0 ? `${m}m${String(s % 60).padStart(2, '0')}s` : `${s}s`;
}

function formatRate(perSecond: number): string {
  return perSecond >= 100 ? perSecond.toFixed(0) : perSecond.toFixed(1);
}

function shortHash(h: NodeHash): string {
  if (h.md5 === undefined) return `${h.node}: unreadable`;
  return `${h.node}: ${h.rows ?? '?'} rows ${h.md5.slice(0, 8)}`;
}

function phaseText(s: DemoSnapshot): string {
  switch (s.phase) {
    case 'running':
      return s.durationSeconds === undefined
        ? `running ${formatDuration(s.elapsedSeconds)} (Ctrl-C to stop)`
        : `running ${formatDuration(s.elapsedSeconds)} of ${formatDuration(s.durationSeconds)} (Ctrl-C to stop early)`;
    case 'stopping':
      return `workload stopped at ${formatDuration(s.elapsedSeconds)}`;
    case 'converging':
      return `workload stopped at ${formatDuration(s.elapsedSeconds)}, waiting for convergence`;
    default:
      return assertNever(s.phase);
  }
}

function raceSummary(w: WorkloadStats): string {
  return RACE_KINDS.map((k: RaceKind) => `${k} ${w.races[k]}`).join(', ');
}

/** The full view: links with their conflicts by type, convergence per table, the workload. */
export function renderLiveView(s: DemoSnapshot, options: RenderOptions): string[] {
  const types = seenConflictTypes(s.links);
  const titles: Cell[] = [
    { text: 'link' },
    { text: 'state' },
    { text: 'lag', align: 'right' },
    { text: 'changes/s', align: 'right' },
    { text: 'applied', align: 'right' },
    { text: 'conflicts', align: 'right' },
    ...types.map((t): Cell => ({ text: CONFLICT_LABELS[t], align: 'right' })),
    { text: 'last error' },
  ];
  const header = titles.map((c): Cell => ({ ...c, sgr: '1' }));
  const rows: Cell[][] = s.links.map((l) => [
    { text: `${l.source} -> ${l.target}` },
    { text: l.state, sgr: STATE_COLORS[l.state] },
    { text: `${l.lagSeconds.toFixed(1)}s`, align: 'right', ...(l.lagSeconds >= 5 ? { sgr: '33' } : {}) },
    { text: formatRate(l.changesPerSecond), align: 'right' },
    { text: String(l.changesApplied), align: 'right' },
    { text: String(totalConflicts(l)), align: 'right' },
    ...types.map((t): Cell => ({ text: String(l.conflicts[t] ?? 0), align: 'right' })),
    { text: l.lastError ?? '-', ...(l.lastError ? { sgr: '31' } : {}) },
  ]);

  const lines: string[] = [cut(`pgbidi demo: ${phaseText(s)}`, options.width)];
  if (s.notice) lines.push(cut(s.notice, options.width));
  lines.push(...grid([header, ...rows], options), '');
  for (const t of s.tables) {
    const ok = tableConverged(t);
    const prefix = `convergence ${t.table.padEnd(9)} `;
    const verdict = ok ? 'equal ' : 'differ';
    // Cut the plain line first, then colour the verdict if it still fits.
    const plain = cut(`${prefix}${verdict}  ${t.nodes.map(shortHash).join('  ')}`, options.width);
    const end = prefix.length + verdict.length;
    lines.push(plain.length >= end ? `${prefix}${paint(verdict, ok ? '32' : '33', options)}${plain.slice(end)}` : plain);
  }
  const w = s.workload;
  lines.push(cut(`workload: ${formatRate(s.writesPerSecond)} writes/s, ${w.writes} writes; races ${raceSummary(w)}`, options.width));
  if (w.errors > 0) lines.push(cut(`workload errors: ${w.errors} (last: ${w.lastError ?? '?'})`, options.width));
  return lines;
}

/** One line per second for pipes and logs: every link's state, lag, rate and conflicts, then convergence. */
export function renderCompactLine(s: DemoSnapshot): string {
  const links = s.links.map((l) => {
    const byType = CONFLICT_TYPES.filter((t) => (l.conflicts[t] ?? 0) > 0)
      .map((t) => `${CONFLICT_LABELS[t]}=${l.conflicts[t] ?? 0}`)
      .join(',');
    return `${l.source}->${l.target} ${l.state} lag=${l.lagSeconds.toFixed(1)}s ${formatRate(l.changesPerSecond)}/s conflicts=${totalConflicts(l)}${byType ? `(${byType})` : ''}`;
  });
  const tables = s.tables.map((t) => `${t.table}=${tableConverged(t) ? 'equal' : 'differ'}`).join(' ');
  const races = RACE_KINDS.reduce((sum, k) => sum + s.workload.races[k], 0);
  return `[${formatDuration(s.elapsedSeconds).padStart(6)}] ${links.join(' | ')} | convergence ${tables} | writes/s=${formatRate(s.writesPerSecond)} races=${races}`;
}

/** Conflicts over the whole run, summed over links, with their full names. */
export function renderConflictTotals(links: readonly LinkView[]): string {
  const totals = CONFLICT_TYPES.map((t) => [t, links.reduce((sum, l) => sum + (l.conflicts[t] ?? 0), 0)] as const).filter(([, n]) => n > 0);
  return totals.length ? totals.map(([t, n]) => `${t} ${n}`).join(', ') : 'none';
}

/** The closing report: final hashes per table and node, and the verdict. */
export function renderFinalHashes(tables: readonly TableView[], waitedSeconds: number): string[] {
  const lines = [`final row hashes (after ${waitedSeconds.toFixed(1)} s of convergence wait):`];
  for (const t of tables) {
    const cells = t.nodes.map((n) => (n.md5 === undefined ? `${n.node} unreadable` : `${n.node} ${n.rows ?? '?'} rows md5 ${n.md5}`));
    lines.push(`  ${t.table.padEnd(9)} ${tableConverged(t) ? 'equal ' : 'DIFFER'}  ${cells.join('  ')}`);
  }
  lines.push(allConverged(tables) ? 'converged: yes, every node holds the same rows' : 'converged: NO, the nodes hold different rows');
  return lines;
}
