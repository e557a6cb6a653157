/**
 * pgbidi on fresh servers: `setup` on every node (it replicates public.* and creates every node's
 * slots and origins for every other node), then one agent process per node that applies (the
 * targets of the topology's links), started by start(). Every agent has every other node as a peer;
 * an agent that is not started applies nothing, so `a → b` alone runs only b's agent.
 *
 * Variants: 'default' and 'observability-off' run the agents with a silent logger, no tracing and
 * nobody scraping; 'observability-on' writes info logs to a file, traces every transaction over
 * OTLP/HTTP to a local sink, and scrapes /metrics every second (instrumentation.ts); its usage()
 * fails when the agent reported dropped spans (dropped-spans.ts). The conflict storm's two variants
 * run everything on too: a conflict is paid for with its log line, its span event and its metric.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { RawConfig } from '../config/config-schema.js';
import { parseConfig } from '../config/load-config.js';
import { applicationName } from '../node/names.js';
import { setupNode } from '../node/setup-node.js';
import { freePort } from '../pg-server/free-port.js';
import type { PostgresServer } from '../pg-server/postgres-server.js';
import type { LocalCluster } from '../testbed/local-cluster.js';
import { AgentProcess } from './agent-process.js';
import { BenchError } from './bench-error.js';
import type { Variant } from './bench-results.js';
import { APPLIER_ROLE, driverClient } from './bench-settings.js';
import { Instrumentation } from './instrumentation.js';
import { backendCpuSeconds } from './proc-stats.js';
import { waitForWalsender } from './replication.js';
import type { ApplierUsage, Replication, Started, Topology } from './replication.js';

/** The variants that run with observability fully on. */
const OBSERVED: ReadonlySet<Variant> = new Set<Variant>(['observability-on', 'conflict-free', 'conflict-storm']);

export class PgbidiReplication implements Replication {
  readonly engine = 'pgbidi' as const;
  private readonly agents = new Map<string, AgentProcess>();

  private constructor(
    private readonly cluster: LocalCluster,
    private readonly topology: Topology,
    private readonly dir: string,
    private readonly instrumentation: Instrumentation | null,
    private readonly variant: Variant,
  ) {}

  static async open(cluster: LocalCluster, topology: Topology, variant: Variant): Promise<PgbidiReplication> {
    await cluster.setupAll();
    // The synchronous variant: every applying node's setup lists its agent in its sources'
    // synchronous_standby_names (node/synchronous-links.ts).
    if (variant === 'synchronous') for (const node of targets(topology)) await setupNode(parseConfig(synchronousConfig(cluster.rawConfig(node)), {}, node));
    const dir = mkdtempSync(join(tmpdir(), 'pgbidi-bench-agents-'));
    const instrumentation = OBSERVED.has(variant) ? await Instrumentation.start() : null;
    return new PgbidiReplication(cluster, topology, dir, instrumentation, variant);
  }

  server(node: string): PostgresServer {
    return this.cluster.server(node);
  }

  async readyToStart(): Promise<void> {
    // An agent starts applying as soon as it runs: nothing to wait for.
  }

  async start(): Promise<Started> {
    const on = this.instrumentation;
    let clockAt = 0;
    let startupSeconds = 0;
    for (const node of targets(this.topology)) {
      if (this.agents.has(node)) continue;
      const listen = `127.0.0.1:${await freePort()}`;
      const raw = this.variant === 'synchronous' ? synchronousConfig(this.cluster.rawConfig(node, listen)) : this.cluster.rawConfig(node, listen);
      const agent = await AgentProcess.start({
        name: node,
        config: { ...raw, log: { level: on ? 'info' : 'silent' } },
        dir: this.dir,
        ...(on ? { logFile: join(this.dir, `${node}.log`), env: on.agentEnv } : {}),
      });
      this.agents.set(node, agent);
      on?.scrape(agent.httpAddress);
      clockAt = Math.max(clockAt, agent.readyAt);
      startupSeconds = Math.max(startupSeconds, (agent.readyAt - agent.spawnedAt) / 1000);
    }
    return { clockAt, startupSeconds };
  }

  async stop(): Promise<void> {
    // AgentProcess.stop returns once the process is gone (SIGTERM, SIGKILL after a grace period).
    await Promise.all([...this.agents.values()].map((a) => a.stop()));
    this.agents.clear();
  }

  async waitStreaming(timeoutMs: number): Promise<void> {
    for (const link of this.topology.links) await waitForWalsender(this.server(link.source), applicationName(link.source, link.target), timeoutMs);
  }

  async usage(node: string): Promise<ApplierUsage> {
    const agent = this.agents.get(node);
    // Spans dropped are spans not paid for: the observability-on figures would understate its cost.
    if (this.instrumentation && agent && agent.droppedSpans > 0) {
      throw new BenchError('BENCH_UNEXPECTED', `agent ${node} dropped ${agent.droppedSpans} spans (its batch span processor's queue was full)`);
    }
    const agentCpuSeconds = agent?.cpuSeconds() ?? null;
    const client = await driverClient(this.server(node));
    let backendCpu: number | null;
    try {
      // The agent's sessions on this node: the only client backends of the applier role in the bench database.
      const r = await client.query<{ pid: number }>(
        `SELECT pid FROM pg_stat_activity WHERE usename = $1 AND datname = current_database() AND backend_type = 'client backend'`,
        [APPLIER_ROLE],
      );
      const cpu = r.rows.map((row) => backendCpuSeconds(row.pid));
      backendCpu = cpu.every((c) => c !== null) ? cpu.reduce<number>((s, c) => s + (c ?? 0), 0) : null;
    } finally {
      await client.end().catch(() => undefined);
    }
    return {
      applyCpuSeconds: agentCpuSeconds === null || backendCpu === null ? null : agentCpuSeconds + backendCpu,
      agentCpuSeconds,
      agentPeakRssBytes: agent?.peakRssBytes() ?? null,
    };
  }

  async describe(): Promise<string> {
    const parts = await Promise.all([...this.agents.values()].map((a) => a.describe()));
    return parts.join('; ');
  }

  async destroy(): Promise<void> {
    await Promise.all([...this.agents.values()].map((a) => a.stop()));
    this.agents.clear();
    await this.cluster.destroy();
    await this.instrumentation?.close();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** The nodes that apply something: the targets of the topology's links. */
function targets(topology: Topology): Set<string> {
  return new Set(topology.links.map((l) => l.target));
}

/** The config with every peer's link synchronous. */
function synchronousConfig(raw: RawConfig): RawConfig {
  return { ...raw, peers: raw.peers.map((p) => ({ ...p, synchronous: true })) };
}
