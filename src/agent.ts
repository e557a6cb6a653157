import type { Server } from 'node:http';
import type { Config } from './config/config-schema.js';
import { createHttpApp, listen } from './http/http-server.js';
import { Link } from './link/link.js';
import type { LinkStatus, TransactionObserver } from './link/link.js';
import type { Logger } from './observability/logger.js';
import { Metrics } from './observability/metrics.js';
import { VERSION } from './version.js';

/**
 * The composition root of `pgbidi run`: one Link per peer, one metrics registry, one HTTP server.
 * It is the only place that knows the concrete pieces and the config as a whole.
 */
export interface AgentOptions {
  readonly config: Config;
  readonly log: Logger;
  readonly observer?: TransactionObserver;
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
  ) {}

  static async start(options: AgentOptions): Promise<Agent> {
    const { config, log } = options;
    const metrics = new Metrics({
      node: config.node.name,
      version: VERSION,
      peers: config.peers.map((p) => p.name),
      defaultMetrics: options.defaultMetrics ?? true,
    });
    const links = config.peers.map(
      (peer) =>
        new Link({
          config,
          peer,
          log: log.child({ component: 'link', peer: peer.name }),
          metrics: metrics.link(peer.name),
          ...(options.observer ? { observer: options.observer } : {}),
        }),
    );
    const app = createHttpApp(
      {
        node: config.node.name,
        links: () => links.map((l) => l.status()),
        maxReadyLagSeconds: config.readiness.max_lag_ms / 1000,
      },
      metrics.registry,
      metrics.openMetrics,
    );
    const server = await listen(app, config.http.listen);
    for (const l of links) l.start();
    log.info({ component: 'agent', node: config.node.name, peers: config.peers.map((p) => p.name), listen: config.http.listen, version: VERSION }, 'agent started');
    return new Agent(config, metrics, links, server, log);
  }

  status(): LinkStatus[] {
    return this.links.map((l) => l.status());
  }

  /** The address the HTTP server actually listens on (port 0 in config picks a free one). */
  get httpAddress(): string {
    const a = this.server.address();
    return typeof a === 'object' && a !== null ? `${a.address}:${a.port}` : String(a);
  }

  async stop(): Promise<void> {
    this.log.info({ component: 'agent' }, 'stopping: draining links');
    await Promise.all(this.links.map((l) => l.stop()));
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeAllConnections?.();
    this.log.info({ component: 'agent' }, 'stopped');
  }
}
