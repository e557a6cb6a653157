import { createHash } from 'node:crypto';
import { CONFLICT_TYPES } from '../conflict/conflict-types.js';

/**
 * The live web view: one self-contained page (no build step, no external asset, no cookie) that polls
 * `view.json` next to it every two seconds and draws, per node, its links (state, lag, changes/s,
 * conflicts by type, last error), the lag of every link over the last minutes, dead letters and the
 * WAL the peers' slots hold back. The agent serves it for its own node; the demo serves it for the
 * whole group. Everything the page shows comes from `view.json` (http/node-view.ts) and is written
 * with textContent, never as HTML, so a value from the database cannot become markup.
 */
export interface WebViewPage {
  readonly html: string;
  /** Content-Security-Policy for the page: its own inline script and style (by hash), fetches to itself only. */
  readonly contentSecurityPolicy: string;
}

export function webViewPage(title: string): WebViewPage {
  const t = escapeHtml(title);
  const html = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${t}</title>
<style>${STYLE}</style>
</head>
<body>
<h1>${t}</h1>
<div id="updated">waiting for the first answer…</div>
<h2>Links</h2>
<table id="links"></table>
<h2>Lag, last 10 minutes</h2>
<div id="chart"></div>
<h2>Dead letters and slots</h2>
<table id="slots"></table>
<script>${SCRIPT}</script>
</body>
</html>
`;
  const contentSecurityPolicy = [
    "default-src 'none'",
    `script-src '${sha256(SCRIPT)}'`,
    `style-src '${sha256(STYLE)}'`,
    "connect-src 'self'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join('; ');
  return { html, contentSecurityPolicy };
}

const STYLE = `
  :root { color-scheme: light dark; --ok: #2e9e44; --warn: #c98a00; --bad: #d0342c; --muted: #888; }
  body { font: 14px/1.4 system-ui, sans-serif; margin: 1.2rem; }
  h1 { font-size: 1.3rem; margin: 0 0 .2rem; }
  h2 { font-size: 1.05rem; margin: 1.4rem 0 .4rem; }
  #updated { color: var(--muted); }
  #updated.stale { color: var(--bad); }
  table { border-collapse: collapse; margin-bottom: .6rem; }
  th, td { padding: .25rem .6rem; border-bottom: 1px solid #8884; text-align: right; white-space: nowrap; }
  th:first-child, td:first-child, td.text, th.text { text-align: left; }
  td.error { white-space: normal; max-width: 32rem; color: var(--bad); text-align: left; }
  .streaming { color: var(--ok); } .paused, .connecting, .backoff { color: var(--warn); } .error, .stopped { color: var(--bad); }
  .lagging { color: var(--warn); font-weight: 600; }
  svg { max-width: 100%; }
  .legend span { margin-right: 1rem; white-space: nowrap; }
  .legend i { display: inline-block; width: .8rem; height: .8rem; margin-right: .3rem; vertical-align: -1px; }
`;

const SCRIPT = `
"use strict";
const CONFLICT_TYPES = ${JSON.stringify(CONFLICT_TYPES)};
const SHORT = { insert_exists: 'ins exists', update_origin_differs: 'upd origin', update_exists: 'upd exists', update_missing: 'upd missing',
  update_deleted: 'upd deleted', delete_origin_differs: 'del origin', delete_missing: 'del missing', multiple_unique_conflicts: 'multi unique' };
const COLORS = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'];
const WINDOW_MS = 10 * 60 * 1000;
const POLL_MS = 2000;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}
function svg(tag, attrs) {
  const e = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  return e;
}
function bytes(n) {
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? String(n) : n.toFixed(1)) + ' ' + units[i];
}
function rate(n) { return n >= 1000 ? (n / 1000).toFixed(1) + 'k' : n.toFixed(n < 10 ? 1 : 0); }

function renderLinks(nodes) {
  const table = document.getElementById('links');
  const seen = CONFLICT_TYPES.filter((t) => nodes.some((n) => n.links.some((l) => (l.conflictsByType[t] || 0) > 0)));
  const head = el('tr', {}, el('th', {}, 'link'), el('th', { class: 'text' }, 'state'), el('th', {}, 'lag'), el('th', {}, 'changes/s'),
    el('th', {}, 'changes'), el('th', {}, 'transactions'), el('th', {}, 'conflicts'), ...seen.map((t) => el('th', { title: t }, SHORT[t])),
    el('th', { class: 'text' }, 'last error'));
  const rows = [];
  for (const n of nodes) {
    for (const l of n.links) {
      const name = l.peer + ' → ' + n.node;
      rows.push(el('tr', { 'data-link': l.peer + '->' + n.node },
        el('td', {}, name),
        el('td', { class: 'text ' + l.state, 'data-field': 'state' }, l.state),
        el('td', { class: l.lagSeconds >= 5 ? 'lagging' : '', 'data-field': 'lag', 'data-value': l.lagSeconds }, l.lagSeconds.toFixed(1) + ' s'),
        el('td', { 'data-field': 'changes-per-second', 'data-value': l.changesPerSecond }, rate(l.changesPerSecond)),
        el('td', { 'data-field': 'changes-applied', 'data-value': l.changesApplied }, l.changesApplied),
        el('td', { 'data-field': 'transactions-applied', 'data-value': l.transactionsApplied }, l.transactionsApplied),
        el('td', { 'data-field': 'conflicts', 'data-value': l.conflicts }, l.conflicts),
        ...seen.map((t) => el('td', { 'data-field': 'conflict-' + t, 'data-value': l.conflictsByType[t] || 0 }, l.conflictsByType[t] || 0)),
        el('td', { class: l.lastError ? 'error' : 'text', 'data-field': 'last-error' }, l.lastError || '–')));
    }
  }
  table.replaceChildren(head, ...rows);
}

function renderSlots(nodes) {
  const table = document.getElementById('slots');
  const head = el('tr', {}, el('th', {}, 'node'), el('th', {}, 'dead letters'), el('th', { class: 'text' }, 'slot (read by)'),
    el('th', { class: 'text' }, 'active'), el('th', {}, 'WAL held back'), el('th', { class: 'text' }, 'wal status'));
  const rows = [];
  for (const n of nodes) {
    const slots = n.localSlots.length ? n.localSlots : [null];
    for (const s of slots) {
      rows.push(el('tr', { 'data-node': n.node, 'data-slot': s ? s.slot : '' },
        el('td', {}, n.node),
        el('td', { 'data-field': 'dead-letters', 'data-value': n.deadLettersPending }, n.deadLettersPending),
        el('td', { class: 'text' }, s ? s.slot + ' (' + s.peer + ')' : '–'),
        el('td', { class: 'text ' + (s && !s.active ? 'error' : '') }, s ? (s.active ? 'yes' : 'no') : '–'),
        el('td', { 'data-field': 'retained-wal', 'data-value': s ? s.retainedWalBytes : 0 }, s ? bytes(s.retainedWalBytes) : '–'),
        el('td', { class: 'text' }, s && s.walStatus ? s.walStatus : '–')));
    }
  }
  table.replaceChildren(head, ...rows);
}

function renderChart(nodes, now) {
  const W = 900, H = 260, L = 56, R = 12, T = 10, B = 28;
  const series = [];
  for (const n of nodes) {
    const peers = new Set(n.links.map((l) => l.peer));
    for (const peer of peers) {
      series.push({ name: peer + ' → ' + n.node, points: n.history.filter((p) => p.links[peer]).map((p) => [p.at, p.links[peer].lagSeconds]) });
    }
  }
  const max = Math.max(1, ...series.flatMap((s) => s.points.map((p) => p[1])));
  const top = niceCeiling(max);
  const x = (t) => L + ((t - (now - WINDOW_MS)) / WINDOW_MS) * (W - L - R);
  const y = (v) => T + (1 - v / top) * (H - T - B);
  const root = svg('svg', { viewBox: '0 0 ' + W + ' ' + H, width: W, height: H, role: 'img', 'aria-label': 'replication lag per link' });
  for (let i = 0; i <= 4; i++) {
    const v = (top * i) / 4;
    root.append(svg('line', { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: '#8884' }));
    const label = svg('text', { x: L - 6, y: y(v) + 4, 'text-anchor': 'end', 'font-size': 11, fill: 'currentColor' });
    label.textContent = (top <= 2 ? v.toFixed(2) : top < 10 ? v.toFixed(1) : v.toFixed(0)) + ' s';
    root.append(label);
  }
  for (let m = 0; m <= 10; m += 2) {
    const label = svg('text', { x: x(now - WINDOW_MS + m * 60000), y: H - 8, 'text-anchor': 'middle', 'font-size': 11, fill: 'currentColor' });
    label.textContent = m === 10 ? 'now' : '-' + (10 - m) + ' min';
    root.append(label);
  }
  const legend = el('div', { class: 'legend' });
  series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    const pts = s.points.filter((p) => p[0] >= now - WINDOW_MS).map((p) => x(p[0]).toFixed(1) + ',' + y(p[1]).toFixed(1)).join(' ');
    if (pts) root.append(svg('polyline', { points: pts, fill: 'none', stroke: color, 'stroke-width': 1.8, 'data-series': s.name }));
    const swatch = el('i', {});
    swatch.style.background = color;
    legend.append(el('span', {}, swatch, s.name));
  });
  document.getElementById('chart').replaceChildren(root, legend);
}

function niceCeiling(v) {
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

async function poll() {
  const updated = document.getElementById('updated');
  try {
    const res = await fetch('view.json', { cache: 'no-store' });
    if (!res.ok) throw new Error('HTTP ' + res.status);
    const view = await res.json();
    renderLinks(view.nodes);
    renderChart(view.nodes, Math.max(...view.nodes.map((n) => n.at)));
    renderSlots(view.nodes);
    updated.className = '';
    updated.textContent = 'nodes ' + view.nodes.map((n) => n.node).join(', ') + ' · updated ' + new Date().toLocaleTimeString();
    document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
  } catch (err) {
    updated.className = 'stale';
    updated.textContent = 'no answer (' + (err && err.message ? err.message : err) + '); retrying';
  } finally {
    setTimeout(poll, POLL_MS);
  }
}
poll();
`;

function sha256(text: string): string {
  return `sha256-${createHash('sha256').update(text, 'utf8').digest('base64')}`;
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
