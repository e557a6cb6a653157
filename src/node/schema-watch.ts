import { agentClient } from '../util/agent-client.js';
import { Gauge } from 'prom-client';
import type { Registry } from 'prom-client';
import type { Logger } from '../observability/logger.js';
import { compareTableDefs, describeDifference, readTableDefs } from './schema-compare.js';
import type { SchemaDifference } from './schema-compare.js';
import { resolveTables } from './table-selection.js';
import { errorMessage } from '../util/error-message.js';

/**
 * The agent's periodic comparison of the replicated tables' definitions with every peer's
 * (schema-compare.ts): pgbidi_schema_differences{peer} counts them, /status lists each with its table
 * and column, and the PgbidiSchemaDiffers alert fires while any stays. A peer that cannot be read
 * keeps its last result.
 */
export interface SchemaDrift extends SchemaDifference {
  readonly peer: string;
  readonly description: string;
}

export interface SchemaWatchOptions {
  readonly node: string;
  readonly dsn: string;
  readonly peers: readonly { name: string; dsn: string }[];
  readonly tables: readonly string[];
  readonly excludeTables: readonly string[];
  readonly registries: readonly Registry[];
  readonly log: Logger;
  /** Bound of each catalog read (SCHEMA_QUERY_TIMEOUT_MS unless a test sets it). */
  readonly queryTimeoutMs?: number;
}

export const SCHEMA_CHECK_INTERVAL_MS = 30_000;
export const SCHEMA_FIRST_CHECK_MS = 2_000;

/**
 * How long a catalog read of the check may go unanswered (node-postgres' client-side query_timeout;
 * the connection is then destroyed). A peer whose network drops packets without a reset leaves a
 * sent query unanswered until TCP gives up: 924.6 s with Linux's default tcp_retries2 of 15 (ip-sysctl);
 * until then the check never ended, no later check started (one runs at a time), and the agent's
 * stop, which awaits the check in flight, waited as long.
 */
export const SCHEMA_QUERY_TIMEOUT_MS = 10_000;

export class SchemaWatch {
  private readonly byPeer = new Map<string, SchemaDrift[]>();
  /** The first comparison's timeout, then the interval of the next ones. */
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;

  constructor(private readonly options: SchemaWatchOptions) {
    const byPeer = this.byPeer;
    const peers = options.peers.map((p) => p.name);
    for (const registry of options.registries) {
      new Gauge({
        name: 'pgbidi_schema_differences',
        help: "Differences between this node's and the peer's definitions of the replicated tables (columns, types, nullability, keys)",
        labelNames: ['peer'],
        registers: [registry],
        collect() {
          for (const p of peers) this.set({ peer: p }, byPeer.get(p)?.length ?? 0);
        },
      });
    }
  }

  /**
   * The first comparison waits `firstAfterMs`: at an agent's start its links connect, read their
   * origins and start streaming, and this check's two connections and catalog queries (on this
   * node and every peer) competed with them for the CPU. On the 2-core bench machine, starting it
   * at once held back a link's first applied row by ~25 ms (median of 7 starts: 170 ms to 144 ms).
   */
  start(intervalMs = SCHEMA_CHECK_INTERVAL_MS, firstAfterMs = SCHEMA_FIRST_CHECK_MS): void {
    const tick = (): void => {
      this.running ??= this.check().finally(() => {
        this.running = null;
      });
    };
    this.timer = setTimeout(() => {
      tick();
      this.timer = setInterval(tick, intervalMs).unref();
    }, firstAfterMs).unref();
  }

  async stop(): Promise<void> {
    // clearTimeout clears an interval too (Node's timers are one kind).
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    await this.running;
  }

  current(): SchemaDrift[] {
    return [...this.byPeer.values()].flat();
  }

  /** One comparison with every peer; exported for tests. */
  async check(): Promise<void> {
    const { node, dsn, peers, log } = this.options;
    const limits = { connectionTimeoutMillis: 5000, query_timeout: this.options.queryTimeoutMs ?? SCHEMA_QUERY_TIMEOUT_MS };
    const local = agentClient({ connectionString: dsn, application_name: 'pgbidi_schema_watch', ...limits });
    local.on('error', () => undefined);
    try {
      await local.connect();
      const tables = (await resolveTables(local, this.options.tables, this.options.excludeTables)).map((t) => `${t.schema}.${t.name}`);
      const here = await readTableDefs(local, tables);
      for (const peer of peers) {
        const remote = agentClient({ connectionString: peer.dsn, application_name: 'pgbidi_schema_watch', ...limits });
        remote.on('error', () => undefined);
        try {
          await remote.connect();
          const there = await readTableDefs(remote, tables);
          this.byPeer.set(
            peer.name,
            compareTableDefs(tables, here, there).map((d) => ({ ...d, peer: peer.name, description: describeDifference(d, node, peer.name) })),
          );
        } catch (err) {
          log.debug({ peer: peer.name, err: { message: errorMessage(err) } }, 'schema comparison: peer not readable');
        } finally {
          await remote.end().catch(() => undefined);
        }
      }
    } catch (err) {
      log.warn({ err: { message: errorMessage(err) } }, 'schema comparison failed');
    } finally {
      await local.end().catch(() => undefined);
    }
  }
}
