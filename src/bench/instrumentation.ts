/**
 * Everything observability costs, switched on, for the observability comparison: the agent's info
 * logs written to a file, a trace per applied transaction exported over OTLP/HTTP to a sink in this
 * process (which reads and drops the bodies), and a Prometheus-style scrape of /metrics (OpenMetrics,
 * with exemplars) every second.
 */
import { createServer } from 'node:http';
import type { Server } from 'node:http';

const SCRAPE_MS = 1000;

export class Instrumentation {
  private readonly timers: NodeJS.Timeout[] = [];

  private constructor(
    private readonly sink: Server,
    /** OTEL_* for the agent process: every transaction traced, exported to the sink. */
    readonly agentEnv: Readonly<Record<string, string>>,
  ) {}

  static async start(): Promise<Instrumentation> {
    const sink = createServer((req, res) => {
      req.resume();
      // An empty body is an empty ExportTraceServiceResponse: everything accepted.
      req.on('end', () => res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end());
    });
    await new Promise<void>((resolve) => sink.listen(0, '127.0.0.1', resolve));
    const address = sink.address();
    const port = typeof address === 'object' && address ? address.port : 0;
    return new Instrumentation(sink, {
      OTEL_TRACES_EXPORTER: 'otlp',
      // The SDK's default protocol, and what collectors are usually fed.
      OTEL_EXPORTER_OTLP_PROTOCOL: 'http/protobuf',
      OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${port}`,
      OTEL_TRACES_SAMPLER: 'always_on',
      // The SDK reports spans its batch processor dropped only through its diagnostic logger
      // (dropped-spans.ts): a run that dropped any does not count.
      OTEL_LOG_LEVEL: 'warn',
    });
  }

  /** Scrapes http://<address>/metrics every second until close(). */
  scrape(httpAddress: string): void {
    this.timers.push(
      setInterval(() => {
        fetch(`http://${httpAddress}/metrics`, { headers: { accept: 'application/openmetrics-text; version=1.0.0' } })
          .then((r) => r.text())
          .catch(() => undefined);
      }, SCRAPE_MS),
    );
  }

  async close(): Promise<void> {
    for (const t of this.timers) clearInterval(t);
    await new Promise<void>((resolve) => this.sink.close(() => resolve()));
    this.sink.closeAllConnections();
  }
}
