/**
 * pgbidi on a fresh two-node LocalCluster (a, b), set up with `setupAll()`; only b's agent runs,
 * so only the link a → b is measured. The agent runs in this process with a silent logger.
 *
 *   backlog:   setup → rows inserted on a (no agent running) → clock starts → b's agent starts →
 *              b holds all rows. Nothing is subtracted: the agent's connect and slot start are part
 *              of the figure, and firstRowSeconds shows how much of it they are.
 *   streaming: b's agent streaming → clock starts at a's first commit → b holds all rows
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { Agent } from '../agent.js';
import type { RawConfig } from '../config/config-schema.js';
import { createLogger } from '../observability/logger.js';
import type { Logger } from '../observability/logger.js';
import type { TracingEnv } from '../observability/tracing.js';
import { applicationName } from '../node/names.js';
import type { PostgresServer } from '../pg-server/postgres-server.js';
import { LocalCluster } from '../testbed/local-cluster.js';
import {
  BENCH_DATABASE,
  BENCH_SERVER_SETTINGS,
  BENCH_TABLE_SQL,
  fingerprint,
  insertRows,
  measureBacklog,
  measureStreaming,
  RowArrivalProbe,
  versionLabel,
  waitForWalsender,
} from './bench-workload.js';
import type { Measurement, Mode, Timing, Variant, WorkloadSize } from './bench-workload.js';

const SOURCE = 'a';
const TARGET = 'b';

export interface PgbidiRunOptions {
  readonly binDir: string;
  readonly size: WorkloadSize;
  readonly mode: Mode;
  readonly rep: number;
  readonly timeoutMs: number;
  readonly variant?: Variant;
  /** Overrides of the agents' `replication` config (apply_batch_size, …); defaults otherwise. */
  readonly replication?: RawConfig['replication'];
}

export async function runPgbidi(options: PgbidiRunOptions): Promise<Measurement> {
  const cluster = await LocalCluster.start({
    binDir: options.binDir,
    nodes: [SOURCE, TARGET],
    database: BENCH_DATABASE,
    schema: [BENCH_TABLE_SQL],
    settings: BENCH_SERVER_SETTINGS,
    ...(options.replication ? { replication: options.replication } : {}),
  });
  let instrumented: Instrumentation | null = null;
  try {
    await cluster.setupAll();
    const a = cluster.server(SOURCE);
    const b = cluster.server(TARGET);
    // The variant picks agent options. 'default' and 'observability-off': silent logs, no tracing,
    // nobody scrapes. 'observability-on': info logs to a file, every transaction traced and exported
    // over OTLP/HTTP to a local sink, default process metrics, /metrics scraped every second.
    instrumented = options.variant === 'observability-on' ? await Instrumentation.start() : null;
    const on = instrumented;
    const startAgent = async (): Promise<unknown> => {
      if (!on) return cluster.startAgent(TARGET);
      const agent = await Agent.start({ config: cluster.config(TARGET), log: on.logger, tracingEnv: on.tracingEnv, defaultMetrics: true });
      cluster.agents.set(TARGET, agent);
      on.scrape(agent.httpAddress);
      return agent;
    };
    const probe = new RowArrivalProbe(b);
    try {
      const measured = await measure(a, probe, options, startAgent);
      const converged = (await fingerprint(a)) === (await fingerprint(b));
      const link = cluster.agents.get(TARGET)?.status().find((l) => l.peer === SOURCE);
      return {
        version: versionLabel(a.versionNum),
        engine: 'pgbidi',
        mode: options.mode,
        variant: options.variant ?? 'default',
        rep: options.rep,
        rows: options.size.rows,
        txnRows: options.size.txnRows,
        transactionsApplied: link?.transactionsApplied ?? null,
        converged,
        ...measured,
      };
    } finally {
      await probe.close();
    }
  } finally {
    await cluster.destroy();
    await instrumented?.close();
  }
}

async function measure(
  a: PostgresServer,
  probe: RowArrivalProbe,
  options: PgbidiRunOptions,
  startAgent: () => Promise<unknown>,
): Promise<Timing> {
  if (options.mode === 'backlog') {
    const inserted = await insertRows(a, options.size);
    return measureBacklog(probe, options.size, inserted, options.timeoutMs, startAgent);
  }
  await startAgent();
  await waitForWalsender(a, applicationName(SOURCE, TARGET));
  return measureStreaming(a, probe, options.size, options.timeoutMs);
}

/**
 * Everything observability costs, switched on: info logs written to a file, a trace per applied
 * transaction exported over OTLP/HTTP (to a sink in this process that reads and drops the bodies),
 * and a Prometheus-style scrape of /metrics (OpenMetrics, with exemplars) every second.
 */
class Instrumentation {
  private timer: NodeJS.Timeout | null = null;

  private constructor(
    readonly logger: Logger,
    readonly tracingEnv: TracingEnv,
    private readonly sink: Server,
    private readonly dir: string,
  ) {}

  static async start(): Promise<Instrumentation> {
    const dir = mkdtempSync(join(tmpdir(), 'pgbidi-bench-obs-'));
    const sink = createServer((req, res) => {
      req.resume();
      req.on('end', () => res.writeHead(200, { 'content-type': 'application/json' }).end('{}'));
    });
    await new Promise<void>((resolve) => sink.listen(0, '127.0.0.1', resolve));
    const address = sink.address();
    const port = typeof address === 'object' && address ? address.port : 0;
    const logger = createLogger('info', pino.destination({ dest: join(dir, 'agent.log'), sync: false }));
    const tracingEnv: TracingEnv = {
      OTEL_TRACES_EXPORTER: 'otlp',
      OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
      OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${port}`,
      OTEL_TRACES_SAMPLER: 'always_on',
    };
    return new Instrumentation(logger, tracingEnv, sink, dir);
  }

  scrape(httpAddress: string): void {
    this.timer = setInterval(() => {
      fetch(`http://${httpAddress}/metrics`, { headers: { accept: 'application/openmetrics-text; version=1.0.0' } })
        .then((r) => r.text())
        .catch(() => undefined);
    }, 1000);
  }

  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await new Promise<void>((resolve) => this.sink.close(() => resolve()));
    this.sink.closeAllConnections();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
