import type { LinkStatus } from './link/link.js';

/** The human table of `pgbidi status`. */
export function formatStatusTable(node: string, links: readonly LinkStatus[]): string {
  const header = ['peer', 'state', 'received', 'applied', 'confirmed', 'lag', 'applied txns', 'conflicts', 'last error'];
  const rows = links.map((l) => [
    l.peer,
    l.state,
    l.receivedLsn,
    l.appliedLsn,
    l.confirmedLsn,
    `${l.lagSeconds.toFixed(1)}s`,
    String(l.transactionsApplied),
    String(l.conflicts),
    l.lastError ? `${l.lastError.at} ${l.lastError.code ?? ''} ${l.lastError.message}`.trim() : '-',
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    cells
      .map((c, i) => c.padEnd(widths[i] ?? 0))
      .join('  ')
      .trimEnd();
  return [`node ${node}`, line(header), ...rows.map(line)].join('\n') + '\n';
}
