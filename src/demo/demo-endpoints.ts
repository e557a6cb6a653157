/**
 * What the demo tells the user to look at once the agents run: each agent's /metrics and /status,
 * the shipped dashboards and rule files, the logs, and a Prometheus scrape config to paste.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';
import type { DemoGroup } from './demo-group.js';
import type { DemoLogs } from './demo-logs.js';

/** An agent's HTTP address, by node. */
export interface ScrapeTarget {
  readonly node: string;
  readonly address: string;
}

/** The package (or repository) root: dashboards/ and alerts/ ship there, beside dist/ and src/. */
const PACKAGE_ROOT = fileURLToPath(new URL('../../', import.meta.url));

export function printEndpoints(group: DemoGroup, targets: readonly ScrapeTarget[], logs: DemoLogs, say: (line: string) => void): void {
  say('');
  say('endpoints:');
  for (const [i, t] of targets.entries()) {
    say(`  ${t.node}  http://${t.address}/metrics  http://${t.address}/status  psql ${group.nodes[i]?.dsn ?? ''}`);
  }
  const dashboardsDir = path.join(PACKAGE_ROOT, 'dashboards');
  const dashboards = existsSync(dashboardsDir) ? readdirSync(dashboardsDir).filter((f) => f.endsWith('.json')) : [];
  say(
    dashboards.length
      ? `dashboards (import into Grafana): ${dashboards.map((f) => path.join(dashboardsDir, f)).join(', ')}`
      : `dashboards: none shipped in ${PACKAGE_ROOT}`,
  );
  const rules = shippedRuleFiles();
  if (rules.length) say(`alert and recording rules: ${rules.join(', ')}`);
  say(`logs: ${logs.agentLogPath}, ${logs.serverLogPath}`);
  say('');
  say('Prometheus scrape config:');
  for (const line of scrapeConfigYaml(targets).trimEnd().split('\n')) say(`  ${line}`);
  say('');
}

/**
 * A ready-to-paste `scrape_configs` block. job "pgbidi" is what the shipped rules and dashboards
 * select; no node label is added, because pgbidi_build_info carries its own and a target label of
 * the same name would rename it to exported_node.
 */
export function scrapeConfigYaml(targets: readonly { address: string }[]): string {
  const list = targets.map((t) => `'${t.address}'`).join(', ');
  return ['scrape_configs:', '  - job_name: pgbidi', '    scrape_interval: 5s', '    static_configs:', `      - targets: [${list}]`, ''].join('\n');
}

/** Files in alerts/ that are Prometheus rule files (a top-level `groups` list), not Alertmanager config. */
export function shippedRuleFiles(): string[] {
  const dir = path.join(PACKAGE_ROOT, 'alerts');
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((f) => /\.ya?ml$/.test(f))
    .map((f) => path.join(dir, f))
    .filter((file) => {
      try {
        const doc: unknown = parseYaml(readFileSync(file, 'utf8'));
        return typeof doc === 'object' && doc !== null && 'groups' in doc && Array.isArray(doc.groups);
      } catch {
        return false;
      }
    });
}
