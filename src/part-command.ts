import type { Config } from './config/config-schema.js';
import { partNode } from './node/part-node.js';
import type { PartReport } from './node/part-node.js';

type Io = { out: (s: string) => void; err: (s: string) => void };

/**
 * `pgbidi part --config FILE [--node NAME] [--force]`: prints what was dropped on each node and what
 * the operator still has to do. Exit 0 when every node was cleaned, 1 otherwise.
 */
export async function partCommand(config: Config, values: { node?: string | undefined; force?: boolean | undefined }, io: Io): Promise<number> {
  const report = await partNode(config, { ...(values.node === undefined ? {} : { node: values.node }), force: values.force ?? false });
  io.out(formatPartReport(report, config));
  return report.nodes.every((n) => n.error === null) ? 0 : 1;
}

export function formatPartReport(report: PartReport, config: Config): string {
  const lines = [`node ${report.leaving} parted`];
  for (const n of report.nodes) {
    if (n.error !== null) lines.push(`  ${n.node}: ${n.error}`);
    else lines.push(`  ${n.node}: ${n.dropped.length ? `dropped ${n.dropped.join(', ')}` : 'nothing left to drop'}`);
  }
  for (const w of report.warnings) lines.push(`  warning: ${w}`);
  const survivors =
    report.leaving === config.node.name
      ? config.peers.map((p) => p.name)
      : [config.node.name, ...config.peers.map((p) => p.name)].filter((n) => n !== report.leaving);
  lines.push(
    `  next: remove ${report.leaving} from peers in the configs of ${survivors.join(', ')} and restart their agents ` +
      `(until then their links from ${report.leaving} show 'parted')${report.leaving === config.node.name ? `; stop the agent of ${report.leaving}` : ''}`,
  );
  return `${lines.join('\n')}\n`;
}
