/**
 * The demo's group: which nodes exist, their databases and pgbidi setup, the agent of each node
 * (all in this process) and one monitoring session per node for the live view's row hashes.
 */
import pg from 'pg';
import { Agent } from '../agent.js';
import type { Config, RawConfig } from '../config/config-schema.js';
import { parseConfig } from '../config/load-config.js';
import { setupNode } from '../node/setup-node.js';
import { createLogger } from '../observability/logger.js';
import type { PostgresServer } from '../pg-server/postgres-server.js';
import { settlesWithin } from '../util/settles-within.js';
import type { DemoLogs } from './demo-logs.js';
import { DEMO_DATABASE, DEMO_SCHEMA_SQL, DEMO_TABLES } from './demo-workload.js';

const AGENT_STOP_TIMEOUT_MS = 15_000;

export interface DemoNode {
  readonly name: string;
  readonly server: PostgresServer;
  /** Connection string of the demo database on this node. */
  readonly dsn: string;
}

/** What the demo started, filled in as it goes so that the teardown sees every piece. */
export interface DemoGroup {
  readonly names: readonly string[];
  readonly servers: Map<string, PostgresServer>;
  /** Every node with its server, once all of them are up. */
  nodes: readonly DemoNode[];
  readonly agents: Map<string, Agent>;
  readonly monitors: Map<string, pg.Client>;
}

/** Node names n1..nN: short, valid as slot and origin name parts. */
export function demoNodeNames(count: number): string[] {
  return Array.from({ length: count }, (_, i) => `n${i + 1}`);
}

/** An empty group of `count` nodes: nothing started yet. */
export function createGroup(count: number): DemoGroup {
  return { names: demoNodeNames(count), servers: new Map(), nodes: [], agents: new Map(), monitors: new Map() };
}

/** Creates the demo database and tables on every node, then runs pgbidi setup on each. */
export async function prepareNodes(group: DemoGroup, say: (line: string) => void): Promise<void> {
  const started = Date.now();
  for (const { server } of group.nodes) {
    await server.createDatabase(DEMO_DATABASE);
    for (const sql of DEMO_SCHEMA_SQL) await server.query(sql, [], DEMO_DATABASE);
  }
  // Every node's publication and slots exist before any agent starts, so no change is missed.
  for (const node of group.nodes) await setupNode(nodeConfig(group, node));
  say(`group set up: database '${DEMO_DATABASE}', tables ${DEMO_TABLES.map((t) => t.name).join(', ')} (${secondsSince(started)})`);
}

function nodeConfig(group: DemoGroup, node: DemoNode): Config {
  const raw: RawConfig = {
    node: { name: node.name, dsn: node.dsn },
    peers: group.nodes.filter((n) => n !== node).map((n) => ({ name: n.name, dsn: n.dsn })),
    // Port 0: the kernel picks a free port per agent; the demo prints the real address.
    http: { listen: '127.0.0.1:0' },
    log: { level: 'info' },
  };
  // An empty environment: the demo's settings must not change with PGBIDI_* variables of the shell.
  return parseConfig(raw, {}, `demo node ${node.name}`);
}

export async function startAgents(group: DemoGroup, logs: DemoLogs, say: (line: string) => void): Promise<void> {
  const log = createLogger('info', logs.agents);
  for (const node of group.nodes) {
    const agent = await Agent.start({ config: nodeConfig(group, node), log: log.child({ node: node.name }), defaultMetrics: false });
    group.agents.set(node.name, agent);
  }
  say(`agents started in this process, one per node`);
}

export async function stopAgents(group: DemoGroup, say: (line: string) => void): Promise<void> {
  await Promise.all(
    [...group.agents.entries()].map(async ([name, agent]) => {
      const stopped = await settlesWithin(agent.stop(), AGENT_STOP_TIMEOUT_MS);
      // The servers stop next and end the agent's sessions, which ends its links too.
      if (!stopped) say(`pgbidi demo: agent ${name} did not stop within ${AGENT_STOP_TIMEOUT_MS / 1000} s; stopping its server`);
    }),
  );
  group.agents.clear();
}

/** One session per node for the row hashes of the live view and the divergence report. */
export async function openMonitors(group: DemoGroup): Promise<void> {
  for (const n of group.nodes) group.monitors.set(n.name, await connect(n.dsn, 'pgbidi_demo_monitor'));
}

export async function closeMonitors(group: DemoGroup): Promise<void> {
  await Promise.all([...group.monitors.values()].map((c) => c.end().catch(() => undefined)));
  group.monitors.clear();
}

async function connect(dsn: string, applicationName: string): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: dsn, application_name: applicationName });
  client.on('error', () => undefined);
  await client.connect();
  return client;
}

/** "2.3 s" since `since` (ms), for the start-up progress lines. */
export function secondsSince(since: number): string {
  return `${((Date.now() - since) / 1000).toFixed(1)} s`;
}
