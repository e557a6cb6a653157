/**
 * Pure rendering of the demo's terminal view: a snapshot in, lines of text out. No I/O and no
 * terminal control here; the caller decides whether to redraw in place (TTY) or to print the
 * compact one-line form (pipes, CI logs).
 */
import type { ConflictType } from '../conflict/conflict-types.js';
import { CONFLICT_TYPES } from '../conflict/conflict-types.js';
import type { LinkState } from '../observability/metrics.js';
import { assertNever } from '../util/assert-never.js';
import type { LinkHealth } from '../util/link-triage.js';
import { hiddenLinksLine, LAGGING_SECONDS, needsAttention, pickLinks } from '../util/link-triage.js';
import type { TextCell } from '../util/text-layout.js';
import { cutText, firstFitting, firstFittingFrame, layoutTable, paint, tableWidth, wrapItems } from '../util/text-layout.js';
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
  /** Lines never pass this many visible characters, so that a redraw never wraps. */
  readonly width: number;
  /** The view never has more lines than this, so that a redraw never scrolls (default: no limit). */
  readonly height?: number;
}

/** The closing report's width: it goes to terminals, logs and CI output alike, read in 120 columns. */
export const REPORT_WIDTH = 120;

/** Column titles while they fit; the full names are in the metrics and the final report. */
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

/** Column titles when the labels do not fit; a legend under the table names them. */
const CONFLICT_CODES: Readonly<Record<ConflictType, string>> = {
  insert_exists: 'IE',
  update_origin_differs: 'UOD',
  update_exists: 'UE',
  update_missing: 'UM',
  update_deleted: 'UD',
  delete_origin_differs: 'DOD',
  delete_missing: 'DM',
  multiple_unique_conflicts: 'MUC',
};

const RACE_LABELS: Readonly<Record<RaceKind, string>> = {
  insert_insert: 'ins/ins',
  update_update: 'upd/upd',
  update_delete: 'upd/del',
  delete_delete: 'del/del',
};

const STATE_COLORS: Readonly<Record<LinkState, string>> = {
  streaming: '32',
  paused: '33',
  connecting: '33',
  backoff: '33',
  error: '31',
  stopped: '2',
  parted: '2',
};

/**
 * The link table's shapes, from the richest to the narrowest; the first whose fixed columns fit
 * the width is drawn. What goes first: the cumulative 'applied' count (changes/s shows activity),
 * then the conflict labels (codes with a legend), then title length and spacing. The last error
 * stays a column while it has room to say something, else it moves under the table.
 */
interface LinkTableShape {
  readonly conflictTitles: 'labels' | 'codes';
  readonly applied: boolean;
  readonly shortTitles: boolean;
  readonly gap: number;
}

const NARROWEST_SHAPE: LinkTableShape = { conflictTitles: 'codes', applied: false, shortTitles: true, gap: 1 };

const LINK_TABLE_SHAPES: readonly LinkTableShape[] = [
  { conflictTitles: 'labels', applied: true, shortTitles: false, gap: 2 },
  { conflictTitles: 'labels', applied: false, shortTitles: false, gap: 2 },
  { conflictTitles: 'codes', applied: true, shortTitles: false, gap: 2 },
  { conflictTitles: 'codes', applied: false, shortTitles: false, gap: 2 },
  NARROWEST_SHAPE,
];

/** Below this many columns of room the last error is listed under the table rather than beside it. */
const MIN_ERROR_COLUMN = 24;

/**
 * What a frame shows besides the links, from the most to the least. A view taller than the
 * terminal first drops the blank line and says in one line that every table is equal, then leaves
 * out links that need no attention (one line sums them up), then the legend of the conflict codes;
 * only as a last resort the notice, the workload's errors and links that are not streaming or lag.
 */
interface FrameDetail {
  readonly blankLine: boolean;
  readonly convergence: 'per table' | 'one line when equal';
  readonly legend: boolean;
  readonly notices: boolean;
  /** Links that need attention (see needsAttention) may be left out too. */
  readonly hideUrgent: boolean;
}

const FULL_DETAIL: FrameDetail = { blankLine: true, convergence: 'per table', legend: true, notices: true, hideUrgent: false };

const LEANER_DETAILS: readonly FrameDetail[] = [
  { blankLine: false, convergence: 'one line when equal', legend: true, notices: true, hideUrgent: false },
  { blankLine: false, convergence: 'one line when equal', legend: false, notices: true, hideUrgent: false },
  { blankLine: false, convergence: 'one line when equal', legend: false, notices: false, hideUrgent: true },
];

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

function linkHealth(l: LinkView): LinkHealth {
  return { state: l.state, lagSeconds: l.lagSeconds, hasError: l.lastError !== null, conflicts: totalConflicts(l) };
}

function formatDuration(seconds: number): string {
  const s = Math.floor(seconds);
  const m = Math.floor(s / 60);
  return m > 0 ? `${m}m${String(s % 60).padStart(2, '0')}s` : `${s}s`;
}

function formatRate(perSecond: number): string {
  return perSecond >= 100 ? perSecond.toFixed(0) : perSecond.toFixed(1);
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

/** The columns of a shape, without the last error. */
function linkRows(links: readonly LinkView[], types: readonly ConflictType[], shape: LinkTableShape): TextCell[][] {
  const titles: TextCell[] = [
    { text: 'link' },
    { text: 'state' },
    { text: 'lag', align: 'right' },
    { text: shape.shortTitles ? 'chg/s' : 'changes/s', align: 'right' },
    ...(shape.applied ? [{ text: 'applied', align: 'right' } as const] : []),
    { text: shape.shortTitles ? 'confl' : 'conflicts', align: 'right' },
    ...types.map((t): TextCell => ({ text: shape.conflictTitles === 'labels' ? CONFLICT_LABELS[t] : CONFLICT_CODES[t], align: 'right' })),
  ];
  const rows = links.map((l): TextCell[] => [
    { text: `${l.source} -> ${l.target}` },
    { text: l.state, sgr: STATE_COLORS[l.state] },
    { text: `${l.lagSeconds.toFixed(1)}s`, align: 'right', ...(l.lagSeconds >= LAGGING_SECONDS ? { sgr: '33' } : {}) },
    { text: formatRate(l.changesPerSecond), align: 'right' },
    ...(shape.applied ? [{ text: String(l.changesApplied), align: 'right' } as const] : []),
    { text: String(totalConflicts(l)), align: 'right' },
    ...types.map((t): TextCell => ({ text: String(l.conflicts[t] ?? 0), align: 'right' })),
  ]);
  return [titles.map((c): TextCell => ({ ...c, sgr: '1' })), ...rows];
}

/** The richest shape whose columns (the last error aside) fit the width, or else the narrowest. */
function chooseShape(links: readonly LinkView[], types: readonly ConflictType[], width: number): { shape: LinkTableShape; rows: TextCell[][] } {
  for (const shape of LINK_TABLE_SHAPES) {
    const rows = linkRows(links, types, shape);
    if (tableWidth(rows, shape.gap) <= width) return { shape, rows };
  }
  return { shape: NARROWEST_SHAPE, rows: linkRows(links, types, NARROWEST_SHAPE) };
}

/**
 * One row per shown link, in the richest shape that fits, then one line for the hidden ones; errors
 * beside the rows or under them; a legend (when `legend`) when codes stand for the conflict types.
 */
function renderLinkTable(links: readonly LinkView[], hidden: readonly LinkView[], options: RenderOptions, legend: boolean): string[] {
  const types = seenConflictTypes(links);
  const { shape, rows } = chooseShape(links, types, options.width);
  const room = options.width - tableWidth(rows, shape.gap) - shape.gap;
  const anyError = links.some((l) => l.lastError);
  const errorsBeside = room >= MIN_ERROR_COLUMN || (!anyError && room >= 'last error'.length);
  if (errorsBeside) {
    rows[0]?.push({ text: 'last error', sgr: '1' });
    links.forEach((l, i) => rows[i + 1]?.push({ text: l.lastError ?? '-', ...(l.lastError ? { sgr: '31' } : {}) }));
  }
  // A table of titles alone says nothing when every link is summed up below.
  const lines = links.length > 0 || hidden.length === 0 ? layoutTable(rows, { width: options.width, color: options.color, gap: shape.gap }) : [];
  if (hidden.length > 0) lines.push(hiddenLinksLine(hidden.map(linkHealth), links.length > 0, options.width));
  if (!errorsBeside) {
    // One line per message: a node that is down fails all of its links with the same error.
    const byMessage = new Map<string, string[]>();
    for (const l of links) if (l.lastError) byMessage.set(l.lastError, [...(byMessage.get(l.lastError) ?? []), `${l.source} -> ${l.target}`]);
    for (const [message, names] of byMessage) {
      const head = `error ${names.join(', ')}:`;
      const text = cutText(`${head} ${message}`, options.width);
      lines.push(text.startsWith(head) ? `${paint(head, '31', options.color)}${text.slice(head.length)}` : text);
    }
  }
  if (legend && shape.conflictTitles === 'codes' && types.length) {
    lines.push(...wrapItems(['conflicts:', ...types.map((t) => `${CONFLICT_CODES[t]} ${t}`)], options.width, '  ', ' '.repeat('conflicts:  '.length)));
  }
  return lines;
}

/** A node's rows and hash in form 0 (fullest) to 3 (rows only). */
function nodeCell(h: NodeHash, form: number): string {
  if (h.md5 === undefined) return form < 2 ? `${h.node}: unreadable` : `${h.node}: ?`;
  const rows = h.rows ?? '?';
  switch (form) {
    case 0:
      return `${h.node}: ${rows} rows ${h.md5.slice(0, 8)}`;
    case 1:
      return `${h.node}: ${rows} rows ${h.md5.slice(0, 4)}`;
    case 2:
      return `${h.node}: ${rows} ${h.md5.slice(0, 4)}`;
    default:
      return `${h.node}: ${rows}`;
  }
}

/**
 * Whether every node holds the same rows, with each node's count and hash. When that does not fit,
 * an equal table is said once for all nodes, and a differing one keeps every node with a shorter
 * hash, then without it.
 */
function renderConvergenceLine(t: TableView, options: RenderOptions): string {
  const ok = tableConverged(t);
  const prefix = `convergence ${t.table.padEnd(9)} `;
  const verdict = ok ? 'equal ' : 'differ';
  const head = `${prefix}${verdict}  `;
  const perNode = (form: number): string => `${head}${t.nodes.map((h) => nodeCell(h, form)).join('  ')}`;
  const first = t.nodes[0];
  const candidates =
    ok && first
      ? [
          perNode(0),
          `${head}all ${t.nodes.length} nodes: ${first.rows ?? '?'} rows ${first.md5?.slice(0, 8) ?? ''}`,
          `${head}all ${t.nodes.length} nodes: ${first.rows ?? '?'} rows`,
        ]
      : [perNode(0), perNode(1), perNode(2), perNode(3)];
  const plain = firstFitting(candidates, options.width);
  // Colour the verdict when it is there whole.
  const end = prefix.length + verdict.length;
  return plain.length >= end ? `${prefix}${paint(verdict, ok ? '32' : '33', options.color)}${plain.slice(end)}` : plain;
}

/** A line per table, or when `oneLineWhenEqual` and every table is equal on every node, one line for them all. */
function renderConvergence(tables: readonly TableView[], options: RenderOptions, oneLineWhenEqual: boolean): string[] {
  const nodes = tables[0]?.nodes.length ?? 0;
  if (!oneLineWhenEqual || !allConverged(tables)) return tables.map((t) => renderConvergenceLine(t, options));
  const head = 'convergence all tables ';
  const counts = tables.map((t) => `${t.table} ${t.nodes[0]?.rows ?? '?'} rows`).join(', ');
  const plain = firstFitting([`${head}equal on ${nodes} nodes: ${counts}`, `${head}equal on ${nodes} nodes`, `${head}equal`], options.width);
  return [plain.startsWith(`${head}equal`) ? `${head}${paint('equal', '32', options.color)}${plain.slice(head.length + 'equal'.length)}` : plain];
}

function renderWorkloadLine(s: DemoSnapshot, width: number): string {
  const w = s.workload;
  const head = `workload: ${formatRate(s.writesPerSecond)} writes/s, ${w.writes} writes`;
  const races = (label: (k: RaceKind) => string): string => RACE_KINDS.map((k) => `${label(k)} ${w.races[k]}`).join(', ');
  const total = RACE_KINDS.reduce((sum, k) => sum + w.races[k], 0);
  return firstFitting([`${head}; races ${races((k) => k)}`, `${head}; races ${races((k) => RACE_LABELS[k])}`, `${head}, ${total} races`], width);
}

/**
 * The view: links with their conflicts by type, convergence per table, the workload; within
 * `options.width` columns and `options.height` lines (see FrameDetail for what gives way first).
 */
export function renderLiveView(s: DemoSnapshot, options: RenderOptions): string[] {
  return firstFittingFrame(liveViewFrames(s, options), options.height ?? Number.POSITIVE_INFINITY);
}

/** The view in full, then leaner and leaner: at each detail level, from every link down to those it must keep. */
function* liveViewFrames(s: DemoSnapshot, options: RenderOptions): Generator<string[]> {
  yield renderFrame(s, options, FULL_DETAIL, s.links, []);
  const urgent = s.links.filter((l) => needsAttention(linkHealth(l))).length;
  for (const detail of LEANER_DETAILS) {
    for (let shown = s.links.length; shown >= (detail.hideUrgent ? 0 : urgent); shown--) {
      const picked = pickLinks(s.links, shown, linkHealth);
      yield renderFrame(s, options, detail, picked.shown, picked.hidden);
    }
  }
}

function renderFrame(s: DemoSnapshot, options: RenderOptions, detail: FrameDetail, links: readonly LinkView[], hidden: readonly LinkView[]): string[] {
  const lines: string[] = [cutText(`pgbidi demo: ${phaseText(s)}`, options.width)];
  if (s.notice && detail.notices) lines.push(cutText(s.notice, options.width));
  lines.push(...renderLinkTable(links, hidden, options, detail.legend));
  if (detail.blankLine) lines.push('');
  lines.push(...renderConvergence(s.tables, options, detail.convergence === 'one line when equal'));
  lines.push(renderWorkloadLine(s, options.width));
  const w = s.workload;
  if (w.errors > 0 && detail.notices) lines.push(cutText(`workload errors: ${w.errors} (last: ${w.lastError ?? '?'})`, options.width));
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

/** Conflicts over the whole run, summed over links, with their full names, wrapped at `width`. */
export function renderConflictTotals(links: readonly LinkView[], width: number): string[] {
  const head = 'conflicts over the run:';
  const totals = CONFLICT_TYPES.map((t) => [t, links.reduce((sum, l) => sum + (l.conflicts[t] ?? 0), 0)] as const).filter(([, n]) => n > 0);
  if (totals.length === 0) return [`${head} none`];
  const items = totals.map(([t, n], i) => `${t} ${n}${i < totals.length - 1 ? ',' : ''}`);
  return wrapItems([head, ...items], width, ' ', ' '.repeat(2));
}

/**
 * The closing report: every table's verdict, and each node's row count and full hash on a line of
 * its own (all nodes of a table on one line passed 120 columns at 3 nodes).
 */
export function renderFinalHashes(tables: readonly TableView[], waitedSeconds: number): string[] {
  const rows: TextCell[][] = [];
  for (const t of tables) {
    const verdict = tableConverged(t) ? 'equal' : 'DIFFER';
    t.nodes.forEach((n, i) =>
      rows.push([
        { text: i === 0 ? t.table : '' },
        { text: i === 0 ? verdict : '' },
        { text: n.node },
        ...(n.md5 === undefined ? [{ text: 'unreadable' }] : [{ text: `${n.rows ?? '?'} rows`, align: 'right' } as const, { text: `md5 ${n.md5}` }]),
      ]),
    );
  }
  return [
    `final row hashes (after ${waitedSeconds.toFixed(1)} s of convergence wait):`,
    ...layoutTable(rows, { width: Number.POSITIVE_INFINITY, color: false }).map((line) => `  ${line}`),
    allConverged(tables) ? 'converged: yes, every node holds the same rows' : 'converged: NO, the nodes hold different rows',
  ];
}

/**
 * One row that differs between nodes, in the divergence report: each node's version of it on one
 * line when that fits `width`, else one line per node under the key (a row is cut only when it is
 * wider than the whole line).
 */
export function renderDivergentRow(key: string, versions: readonly { readonly node: string; readonly row: string }[], width: number): string[] {
  const head = `  ${key}:`;
  const oneLine = `${head} ${versions.map((v) => `${v.node} ${v.row}`).join('  ')}`;
  if (oneLine.length <= width) return [oneLine];
  return [head, ...versions.map((v) => cutText(`    ${v.node} ${v.row}`, width))];
}
