/**
 * Whether every node holds the same rows: an order-independent fingerprint per table and node, the
 * wait for it to match once the workload stops, and the rows that differ when it does not.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { qualifiedName } from '../util/sql.js';
import type { DemoGroup } from './demo-group.js';
import type { StopSignal } from './demo-shutdown.js';
import { renderDivergentRow, tableConverged } from './demo-view.js';
import type { NodeHash, TableView } from './demo-view.js';
import { DEMO_TABLES } from './demo-workload.js';
import type { DemoTable } from './demo-workload.js';

/** Bound on the wait for convergence after the workload stops. */
const CONVERGENCE_TIMEOUT_MS = 20_000;
/** How long a matching read must stay the same before the group counts as converged. */
const CONVERGENCE_STABLE_MS = 1_000;
/** How many differing rows the divergence report lists per table. */
const DIVERGENCE_EXAMPLES = 10;

/** An order-independent fingerprint of each demo table on each node (like LocalCluster.tableHash). */
export async function readHashes(group: DemoGroup): Promise<TableView[]> {
  return Promise.all(
    DEMO_TABLES.map(async (t) => ({
      table: t.name,
      nodes: await Promise.all(group.names.map((n) => readHash(group, n, t))),
    })),
  );
}

async function readHash(group: DemoGroup, node: string, table: DemoTable): Promise<NodeHash> {
  const client = group.monitors.get(node);
  if (!client) return { node, rows: undefined, md5: undefined };
  try {
    const r = await client.query<{ rows: number; md5: string }>(
      `SELECT count(*)::int AS rows, md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) AS md5 FROM ${qualifiedName('public', table.name)} t`,
    );
    const row = r.rows[0];
    return { node, rows: row?.rows, md5: row?.md5 };
  } catch {
    return { node, rows: undefined, md5: undefined };
  }
}

/** How the wait shows progress: `redraw` at most once per `redrawEveryMs`. */
export interface ConvergenceProgress {
  readonly redraw: () => Promise<unknown>;
  readonly redrawEveryMs: number;
}

/**
 * Reads the hashes until every table matches on every node and stays so for CONVERGENCE_STABLE_MS
 * (a match while a change is still in flight would be luck), or until the bound. A second signal
 * ends the wait at once.
 */
export async function waitForConvergence(group: DemoGroup, stop: StopSignal, progress: ConvergenceProgress): Promise<TableView[]> {
  const deadline = Date.now() + CONVERGENCE_TIMEOUT_MS;
  let lastDraw = Date.now();
  let matchedSince: number | undefined;
  let matchedKey = '';
  for (;;) {
    const tables = await readHashes(group);
    const key = tables.map((t) => t.nodes.map((n) => `${n.rows}:${n.md5}`).join(',')).join('|');
    if (tables.every(tableConverged)) {
      if (matchedSince === undefined || key !== matchedKey) {
        matchedSince = Date.now();
        matchedKey = key;
      } else if (Date.now() - matchedSince >= CONVERGENCE_STABLE_MS) {
        return tables;
      }
    } else {
      matchedSince = undefined;
    }
    if (Date.now() >= deadline || stop.hurry) return tables;
    if (Date.now() - lastDraw >= progress.redrawEveryMs) {
      await progress.redraw();
      lastDraw = Date.now();
    }
    await sleep(250);
  }
}

/** For each table that differs: how many rows differ and a few of them, node by node, within `width` columns. */
export async function describeDivergence(group: DemoGroup, tables: readonly TableView[], width: number): Promise<string[]> {
  const lines: string[] = [];
  for (const view of tables) {
    if (tableConverged(view)) continue;
    const table = DEMO_TABLES.find((t) => t.name === view.table);
    if (!table) continue;
    const perNode = new Map<string, Map<string, string>>();
    for (const node of group.names) {
      const client = group.monitors.get(node);
      const rows = new Map<string, string>();
      if (client) {
        const r = await client.query<{ key: string; row: string }>(
          `SELECT ${table.keyExpression} AS key, t::text AS row FROM ${qualifiedName('public', table.name)} t`,
        );
        for (const row of r.rows) rows.set(row.key, row.row);
      }
      perNode.set(node, rows);
    }
    const keys = new Set<string>();
    for (const rows of perNode.values()) for (const k of rows.keys()) keys.add(k);
    const differing = [...keys].filter((k) => new Set(group.names.map((n) => perNode.get(n)?.get(k) ?? '(missing)')).size > 1).sort();
    lines.push(
      `${view.table}: ${differing.length} of ${keys.size} rows differ between nodes${differing.length > DIVERGENCE_EXAMPLES ? `, first ${DIVERGENCE_EXAMPLES}` : ''}:`,
    );
    for (const k of differing.slice(0, DIVERGENCE_EXAMPLES)) {
      lines.push(
        ...renderDivergentRow(
          k,
          group.names.map((n) => ({ node: n, row: perNode.get(n)?.get(k) ?? '(missing)' })),
          width,
        ),
      );
    }
  }
  return lines;
}
