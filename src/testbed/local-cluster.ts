import { Agent } from '../agent.js';
import type { Config, RawConfig } from '../config/config-schema.js';
import { parseConfig } from '../config/load-config.js';
import { setupNode } from '../node/setup-node.js';
import type { Logger } from '../observability/logger.js';
import { createLogger } from '../observability/logger.js';
import { PostgresServer } from '../pg-server/postgres-server.js';
import type { SettingValue } from '../pg-server/postgres-server.js';
import { qualifiedName } from '../util/sql.js';

/**
 * Several local PostgreSQL servers wired as one pgbidi group: used by the demo, the benchmark and
 * the integration tests. Agents run in this process; tests that kill agents run them as processes.
 */
export interface LocalClusterOptions {
  readonly binDir: string;
  readonly nodes: readonly string[];
  readonly database?: string;
  /** Run on every node before setup (the same schema everywhere). */
  readonly schema?: readonly string[];
  readonly settings?: Record<string, SettingValue>;
  readonly replication?: RawConfig['replication'];
  readonly conflicts?: RawConfig['conflicts'];
  readonly onServerLog?: (node: string, line: string) => void;
}

export type TableFingerprint = { rows: number; md5: string };

/** Whether every node holds the same rows (same count and md5). */
export function identical(hashes: ReadonlyMap<string, TableFingerprint>): boolean {
  return new Set([...hashes.values()].map((h) => `${h.rows}:${h.md5}`)).size === 1;
}

export class LocalCluster {
  readonly agents = new Map<string, Agent>();

  private constructor(
    readonly options: LocalClusterOptions,
    readonly servers: ReadonlyMap<string, PostgresServer>,
    readonly database: string,
  ) {}

  static async start(options: LocalClusterOptions): Promise<LocalCluster> {
    const database = options.database ?? 'app';
    const servers = new Map<string, PostgresServer>();
    try {
      for (const name of options.nodes) {
        const server = await PostgresServer.start({
          binDir: options.binDir,
          name,
          ...(options.settings ? { settings: options.settings } : {}),
          ...(options.onServerLog ? { onLog: (line: string) => options.onServerLog?.(name, line) } : {}),
        });
        servers.set(name, server);
        await server.createDatabase(database);
        for (const sql of options.schema ?? []) await server.query(sql, [], database);
      }
    } catch (err) {
      await Promise.all([...servers.values()].map((s) => s.destroy().catch(() => undefined)));
      throw err;
    }
    return new LocalCluster(options, servers, database);
  }

  server(name: string): PostgresServer {
    const s = this.servers.get(name);
    if (!s) throw new Error(`no node ${name}`);
    return s;
  }

  dsn(name: string): string {
    return this.server(name).connectionString(this.database);
  }

  rawConfig(name: string, httpListen = '127.0.0.1:0'): RawConfig {
    return {
      node: { name, dsn: this.dsn(name) },
      peers: this.options.nodes.filter((n) => n !== name).map((n) => ({ name: n, dsn: this.dsn(n) })),
      ...(this.options.replication ? { replication: this.options.replication } : {}),
      ...(this.options.conflicts ? { conflicts: this.options.conflicts } : {}),
      http: { listen: httpListen },
      log: { level: 'info' },
    };
  }

  config(name: string, httpListen?: string): Config {
    return parseConfig(this.rawConfig(name, httpListen), {}, `node ${name}`);
  }

  async setupAll(): Promise<void> {
    for (const name of this.options.nodes) await setupNode(this.config(name));
  }

  async startAgent(name: string, log: Logger = createLogger('silent'), httpListen?: string, defaultMetrics = false): Promise<Agent> {
    const agent = await Agent.start({ config: this.config(name, httpListen), log, defaultMetrics });
    this.agents.set(name, agent);
    return agent;
  }

  async stopAgent(name: string): Promise<void> {
    const agent = this.agents.get(name);
    this.agents.delete(name);
    await agent?.stop();
  }

  async query<R extends Record<string, unknown> = Record<string, unknown>>(node: string, sql: string, params: unknown[] = []): Promise<R[]> {
    return this.server(node).query<R>(sql, params, this.database);
  }

  /** An order-independent fingerprint of a table's content: md5 over its rows sorted by their text. */
  async tableHash(node: string, schema: string, table: string): Promise<TableFingerprint> {
    const r = await this.query<{ rows: number; md5: string | null }>(
      node,
      `SELECT count(*)::int AS rows, md5(coalesce(string_agg(row_::text, E'\\n' ORDER BY row_::text), '')) AS md5 FROM ${qualifiedName(schema, table)} row_`,
    );
    const row = r[0];
    return { rows: row?.rows ?? 0, md5: row?.md5 ?? '' };
  }

  /** Waits until the table has the same fingerprint on every node; returns the last fingerprints seen. */
  /**
   * Waits until every link of every running agent has applied a peer transaction committed at or
   * after `sinceMs` (peers emit a heartbeat transaction every second, and each link applies in the
   * peer's commit order), so that everything written before then has been applied everywhere.
   * Returns how long that took, or null at the timeout.
   */
  async waitCaughtUp(sinceMs: number, timeoutMs: number): Promise<number | null> {
    const started = Date.now();
    for (;;) {
      const links = [...this.agents.values()].flatMap((a) => a.status());
      if (links.every((l) => l.lastAppliedCommitTime !== null && Date.parse(l.lastAppliedCommitTime) >= sinceMs)) return Date.now() - started;
      if (Date.now() - started > timeoutMs) return null;
      await new Promise((r) => setTimeout(r, 500));
    }
  }

  async waitConverged(schema: string, table: string, timeoutMs = 30_000): Promise<Map<string, TableFingerprint>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const last = new Map<string, TableFingerprint>();
      for (const n of this.options.nodes) last.set(n, await this.tableHash(n, schema, table));
      if (identical(last) || Date.now() > deadline) return last;
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  async destroy(): Promise<void> {
    await Promise.all([...this.agents.keys()].map((n) => this.stopAgent(n).catch(() => undefined)));
    await Promise.all([...this.servers.values()].map((s) => s.destroy().catch(() => undefined)));
  }
}
