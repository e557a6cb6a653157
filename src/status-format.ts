/**
 * What `pgbidi status` prints from an agent's GET /status: the full table (one run, nothing cut),
 * the same table fitted to a terminal's width (`--watch` on a terminal) and one compact line per
 * refresh (`--watch` into a pipe or a CI log). Pure: a status body in, text out.
 */
import type { LinkStatus } from './link/link.js';
import type { LinkHealth } from './util/link-triage.js';
import { hiddenLinksLine, pickLinks } from './util/link-triage.js';
import type { TextCell } from './util/text-layout.js';
import { cutText, firstFittingFrame, layoutTable, tableWidth } from './util/text-layout.js';

/** The body of GET /status (src/http/http-server.ts): this node and its links (other fields are ignored). */
export interface StatusBody {
  readonly node: string;
  readonly links: readonly LinkStatus[];
}

/**
 * The fitted table's shapes, from the richest to the narrowest. The received and confirmed LSNs go
 * first (applied says where the link is), then the applied LSN, then title length and spacing.
 */
interface StatusShape {
  readonly lsns: 'all' | 'applied' | 'none';
  readonly shortTitles: boolean;
  readonly gap: number;
}

const FULL_SHAPE: StatusShape = { lsns: 'all', shortTitles: false, gap: 2 };
const NARROWEST_SHAPE: StatusShape = { lsns: 'none', shortTitles: true, gap: 1 };
const STATUS_SHAPES: readonly StatusShape[] = [
  FULL_SHAPE,
  { lsns: 'applied', shortTitles: false, gap: 2 },
  { lsns: 'none', shortTitles: false, gap: 2 },
  NARROWEST_SHAPE,
];

/** Below this many columns of room the last error is listed under the table rather than beside it. */
const MIN_ERROR_COLUMN = 24;

/** The human table of `pgbidi status`. */
export function formatStatusTable(node: string, links: readonly LinkStatus[]): string {
  const rows = statusRows(links, FULL_SHAPE);
  rows[0]?.push({ text: 'last error' });
  links.forEach((l, i) => rows[i + 1]?.push({ text: l.lastError ? `${l.lastError.at} ${l.lastError.code ?? ''} ${l.lastError.message}`.trim() : '-' }));
  return [`node ${node}`, ...layoutTable(rows, { width: Number.POSITIVE_INFINITY, color: false })].join('\n') + '\n';
}

export interface StatusFrameOptions {
  readonly width: number;
  /** At most this many lines (default: no limit). */
  readonly height?: number;
  readonly at: Date;
}

/**
 * The table of `pgbidi status --watch` on a terminal: every line within `width` columns, numbers
 * whole. The error column shows the time of day instead of the full timestamp and is cut; when it
 * has too little room, errors are listed under the table, one line per link. When the links do not
 * all fit `height` lines, those that need attention are shown and one line sums up the others.
 */
export function renderStatusFrame(body: StatusBody, options: StatusFrameOptions): string[] {
  const { width } = options;
  const title = cutText(`node ${body.node}  ${timeOfDay(options.at.toISOString())} UTC  (refreshed every second; Ctrl-C to stop)`, width);
  const frames = body.links.length === 0 ? [[title, cutText('no links (no peers configured)', width)]] : statusFrames(title, body.links, width);
  return firstFittingFrame(frames, options.height ?? Number.POSITIVE_INFINITY);
}

/** Every link, then one link fewer at a time (those needing attention kept longest), down to none. */
function* statusFrames(title: string, links: readonly LinkStatus[], width: number): Generator<string[]> {
  for (let shown = links.length; shown >= 0; shown--) {
    const picked = pickLinks(links, shown, linkHealth);
    const summary = picked.hidden.length > 0 ? hiddenLinksLine(picked.hidden.map(linkHealth), picked.shown.length > 0, width) : undefined;
    if (picked.shown.length > 0) yield [title, ...statusTable(picked.shown, width, summary)];
    else yield summary === undefined ? [title] : [title, summary];
  }
}

function linkHealth(l: LinkStatus): LinkHealth {
  return { state: l.state, lagSeconds: l.lagSeconds, hasError: l.lastError !== null, conflicts: l.conflicts };
}

/** The links in the richest shape that fits `width`, then `summary` when given, the errors beside the rows or under them. */
function statusTable(links: readonly LinkStatus[], width: number, summary: string | undefined): string[] {
  let shape = NARROWEST_SHAPE;
  let rows = statusRows(links, shape);
  for (const candidate of STATUS_SHAPES) {
    const candidateRows = statusRows(links, candidate);
    if (tableWidth(candidateRows, candidate.gap) <= width) {
      shape = candidate;
      rows = candidateRows;
      break;
    }
  }
  const room = width - tableWidth(rows, shape.gap) - shape.gap;
  const anyError = links.some((l) => l.lastError);
  const errorsBeside = room >= MIN_ERROR_COLUMN || (!anyError && room >= 'last error'.length);
  if (errorsBeside) {
    rows[0]?.push({ text: 'last error' });
    links.forEach((l, i) => rows[i + 1]?.push({ text: l.lastError ? shortError(l.lastError) : '-' }));
  }
  const lines = layoutTable(rows, { width, color: false, gap: shape.gap });
  if (summary !== undefined) lines.push(summary);
  if (!errorsBeside) {
    for (const l of links) if (l.lastError) lines.push(cutText(`error ${l.peer}: ${shortError(l.lastError)}`, width));
  }
  return lines;
}

/** One line per refresh for pipes and logs: the time, then every link's state, lag, position, counts and error. */
export function renderStatusLine(body: StatusBody, at: Date): string {
  const links = body.links.map((l) => {
    const error = l.lastError ? ` error=${JSON.stringify(`${l.lastError.code ?? ''} ${l.lastError.message}`.trim())}` : '';
    return `${l.peer} ${l.state} lag=${l.lagSeconds.toFixed(1)}s applied=${l.appliedLsn} txns=${l.transactionsApplied} conflicts=${l.conflicts}${error}`;
  });
  return [`${at.toISOString()} node ${body.node}`, ...(links.length ? links : ['no links'])].join(' | ');
}

/** The cells of every link but the last error, titles first. */
function statusRows(links: readonly LinkStatus[], shape: StatusShape): TextCell[][] {
  const lsnTitles = shape.lsns === 'all' ? ['received', 'applied', 'confirmed'] : shape.lsns === 'applied' ? ['applied'] : [];
  const lsns = (l: LinkStatus): string[] =>
    shape.lsns === 'all' ? [l.receivedLsn, l.appliedLsn, l.confirmedLsn] : shape.lsns === 'applied' ? [l.appliedLsn] : [];
  const titles = ['peer', 'state', ...lsnTitles, 'lag', shape.shortTitles ? 'txns' : 'applied txns', shape.shortTitles ? 'confl' : 'conflicts'];
  return [
    titles.map((text): TextCell => ({ text })),
    ...links.map((l) =>
      [l.peer, l.state, ...lsns(l), `${l.lagSeconds.toFixed(1)}s`, String(l.transactionsApplied), String(l.conflicts)].map((text): TextCell => ({ text })),
    ),
  ];
}

function shortError(e: NonNullable<LinkStatus['lastError']>): string {
  return `${timeOfDay(e.at)} ${e.code ?? ''} ${e.message}`.replace(/\s+/g, ' ').trim();
}

/** HH:MM:SS of an ISO timestamp (UTC, as the agent reports it); anything else as it is. */
function timeOfDay(iso: string): string {
  return /^\d{4}-\d\d-\d\dT(\d\d:\d\d:\d\d)/.exec(iso)?.[1] ?? iso;
}
