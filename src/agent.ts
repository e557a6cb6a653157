import type { Server } from 'node:http';
import type { Config } from './config/config-schema.js';
import { adminAccess } from './http/admin-auth.js';
import { createHttpApp, listen } from './http/http-server.js';
import { buildNodeView } from './http/node-view.js';
import type { NodeView, Sample } from './http/node-view.js';
import { Link } from './link/link.js';
import type { LinkStatus, TransactionObserver } from './link/link.js';
import type { Logger } from './observability/logger.js';
import { HISTORY_INTERVAL_MS, LinkHistory } from './observability/link-history.js';
import { Metrics } from './observability/metrics.js';
import { TombstoneJanitor } from './node/tombstone-janitor.js';
import { PeerCollectors } from './observability/peer-collectors.js';
import { Tracing } from './observability/tracing.js';
import type { TracingEnv } from './observability/tracing.js';
import { VERSION } from './version.js';
import { SchemaWatch } from './node/schema-watch.js';
import { errorMessage } from './util/error-message.js';

/**
 * The composition root of `pgbidi run`: one Link per peer, one metrics registry, one HTTP server.
 * It is the only place that knows the concrete pieces and the config as a whole.
 */
export interface AgentOptions {
  readonly config: Config;
  readonly log: Logger;
  readonly observer?: TransactionObserver;
  /**
   * OTEL_* variables (process.env in `pgbidi run`). When they enable tracing (observability/tracing.ts)
   * the agent starts the OpenTelemetry SDK, uses it as the observer unless `observer` is given, and
   * shuts it down in stop(). Absent: no tracing.
   */
  readonly tracingEnv?: TracingEnv;
  /** Off in tests that start several agents in one process. */
  readonly defaultMetrics?: boolean;
}

export class Agent {
  private constructor(
    readonly config: Config,
    readonly metrics: Metrics,
    private readonly links: readonly Link[],
    private readonly server: Server,
    private readonly log: Logger,
    private readonly peerCollectors: PeerCollectors,
    readonly tracing: Tracing,
    readonly tombstones: TombstoneJanitor,
    private readonly history: LinkHistory,
    private readonly sampler: NodeJS.Timeout,
    readonly schema: SchemaWatch,
  ) {}

  static async start(options: AgentOptions): Promise<Agent> {
    const { config, log } = options;
    const metrics = new Metrics({
      node: config.node.name,
      version: VERSION,
      peers: config.peers.map((p) => p.name),
      defaultMetrics: options.defaultMetrics ?? true,
    });
    const peerCollectors = new PeerCollectors({
      node: config.node.name,
      peers: config.peers,
      localDsn: config.node.dsn,
      registries: [metrics.registry, metrics.openMetrics],
      log: log.child({ component: 'peer-collectors' }),
    });
    const tracing = options.tracingEnv
      ? await Tracing.start({ env: options.tracingEnv, node: config.node.name, version: VERSION, log })
      : Tracing.off('no tracing environment given');
    const observer = options.observer ?? (tracing.enabled ? tracing : undefined);
    const links = config.peers.map(
      (peer) =>
        new Link({
          config,
          peer,
          log: log.child({ component: 'link', peer: peer.name }),
          metrics: metrics.link(peer.name),
          ...(observer ? { observer } : {}),
        }),
    );
    const janitor = new TombstoneJanitor(
      config.node.dsn,
      // A parted peer writes nothing more here: it does not hold back the tombstone purge.
      () => links.filter((l) => !l.parted).map((l) => l.lastAppliedCommitMicros()),
      config.replication.tombstone_retention_margin_ms,
      log.child({ component: 'tombstones' }),
      (s) => {
        metrics.tombstones.set(s.count);
        if (s.purgeWatermark) metrics.tombstoneWatermark.set(Date.parse(s.purgeWatermark) / 1000);
        metrics.deadLettersPending.set(s.deadLettersPending);
      },
      config.conflicts.log_retention_days,
    );
    const schema = new SchemaWatch({
      node: config.node.name,
      dsn: config.node.dsn,
      peers: config.peers,
      tables: config.replication.tables,
      excludeTables: config.replication.exclude_tables,
      registries: [metrics.registry, metrics.openMetrics],
      log: log.child({ component: 'schema-watch' }),
    });
    const history = new LinkHistory();
    const nodeView = (): Promise<NodeView> => assembleView(config.node.name, links, history, metrics);
    const app = createHttpApp(
      {
        node: config.node.name,
        nodeView,
        links: () => links.map((l) => l.status()),
        maxReadyLagSeconds: config.readiness.max_lag_ms / 1000,
        extraStatus: () =>
          Promise.resolve({ tombstones: janitor.current(), deadLetters: janitor.current().deadLettersPending, schemaDifferences: schema.current() }),
        admin: {
          access: adminAccess(config.http.listen, config.http.admin_token),
          actions: {
            resolve: (peer, action) => {
              const link = links.find((l) => l.peer === peer);
              if (!link) return 'unknown_peer';
              return link.resolve(action) ? 'resolved' : 'not_halted';
            },
            retryDeadLetter: async (id) => {
              const peer = await janitor.deadLetterPeer(id);
              const link = links.find((l) => l.peer === peer);
              return link ? link.retryDeadLetterById(id) : 'unknown';
            },
          },
        },
      },
      metrics.registry,
      metrics.openMetrics,
    );
    let server: Server;
    try {
      server = await listen(app, config.http.listen);
    } catch (err) {
      await Promise.all([peerCollectors.close(), tracing.shutdown().catch(() => undefined)]);
      throw err;
    }
    for (const l of links) l.start();
    janitor.start();
    schema.start();
    const sample = (): void =>
      history.sample(
        Date.now(),
        links.map((l) => l.status()),
      );
    sample();
    const sampler = setInterval(sample, HISTORY_INTERVAL_MS).unref();
    log.info(
      { component: 'agent', node: config.node.name, peers: config.peers.map((p) => p.name), listen: config.http.listen, version: VERSION },
      'agent started',
    );
    return new Agent(config, metrics, links, server, log, peerCollectors, tracing, janitor, history, sampler, schema);
  }

  status(): LinkStatus[] {
    return this.links.map((l) => l.status());
  }

  /** What the web view shows of this node (also what `GET /view.json` serves). */
  view(): Promise<NodeView> {
    return assembleView(this.config.node.name, this.links, this.history, this.metrics);
  }

  /** The address the HTTP server actually listens on (port 0 in config picks a free one). */
  get httpAddress(): string {
    const a = this.server.address();
    return typeof a === 'object' && a !== null ? `${a.address}:${a.port}` : String(a);
  }

  async stop(): Promise<void> {
    this.log.info({ component: 'agent' }, 'stopping: draining links');
    clearInterval(this.sampler);
    await Promise.all(this.links.map((l) => l.stop()));
    await this.tombstones.stop();
    await this.schema.stop();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeAllConnections?.();
    await this.peerCollectors.close();
    // After the links: the spans of the transactions they committed while draining are exported too.
    await this.tracing
      .shutdown()
      .catch((err: unknown) => this.log.warn({ component: 'tracing', err: { message: errorMessage(err) } }, 'tracing shutdown failed'));
    this.log.info({ component: 'agent' }, 'stopped');
  }
}

function assembleView(node: string, links: readonly Link[], history: LinkHistory, metrics: Metrics): Promise<NodeView> {
  return buildNodeView({
    node,
    at: Date.now(),
    links: links.map((l) => l.status()),
    history: history.all(),
    changesPerSecond: (peer) => history.changesPerSecond(peer),
    metric: (name) => metricSamples(metrics, name),
  });
}

/** One metric family's samples from the registry, as a scrape reads them (collect callbacks run). */
async function metricSamples(metrics: Metrics, name: string): Promise<readonly Sample[]> {
  const metric = metrics.registry.getSingleMetric(name);
  return metric ? (await metric.get()).values : [];
}
