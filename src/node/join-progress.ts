import { createServer } from 'node:http';
import type { Server } from 'node:http';
import { Counter, Gauge, Registry } from 'prom-client';

/**
 * Progress of a join's copy: counted by the copy workers, printed once a second and exported as
 * Prometheus metrics while the join runs (the joining node's agent is not running yet, so the join
 * serves /metrics on the node's http.listen address). The clock is injected for tests.
 */
export class JoinProgress {
  readonly registry = new Registry();
  private readonly rowsCopied = new Counter({
    name: 'pgbidi_join_rows_copied_total',
    help: 'Rows copied from the donor by pgbidi join, by table',
    labelNames: ['table'],
    registers: [this.registry],
  });
  private readonly rate = new Gauge({
    name: 'pgbidi_join_rows_per_second',
    help: 'Rows copied per second by pgbidi join since the copy began',
    registers: [this.registry],
  });
  private readonly tables = new Gauge({
    name: 'pgbidi_join_tables',
    help: 'Tables of pgbidi join by state (pending, copying, done)',
    labelNames: ['state'],
    registers: [this.registry],
  });
  private readonly states = new Map<string, 'pending' | 'copying' | 'done'>();
  private started: number | null = null;
  private total = 0;

  constructor(private readonly now: () => number = () => performance.now()) {}

  begin(tables: readonly string[]): void {
    this.started = this.now();
    for (const t of tables) {
      this.states.set(t, 'pending');
      this.rowsCopied.inc({ table: t }, 0);
    }
    this.recount();
  }

  tableStarted(table: string): void {
    this.states.set(table, 'copying');
    this.recount();
  }

  tableDone(table: string): void {
    this.states.set(table, 'done');
    this.recount();
  }

  rows(table: string, n: number): void {
    this.total += n;
    this.rowsCopied.inc({ table }, n);
    this.rate.set(this.rowsPerSecond());
  }

  get rowsTotal(): number {
    return this.total;
  }

  elapsedSeconds(): number {
    return this.started === null ? 0 : (this.now() - this.started) / 1000;
  }

  rowsPerSecond(): number {
    const s = this.elapsedSeconds();
    return s > 0 ? this.total / s : 0;
  }

  /** One line for the terminal: rows, rate and tables. */
  line(): string {
    const count = (state: string): number => [...this.states.values()].filter((s) => s === state).length;
    return (
      `copied ${this.total} rows in ${this.elapsedSeconds().toFixed(1)} s (${Math.round(this.rowsPerSecond())} rows/s); ` +
      `tables: ${count('done')} done, ${count('copying')} copying, ${count('pending')} pending`
    );
  }

  private recount(): void {
    for (const state of ['pending', 'copying', 'done'] as const) {
      this.tables.set({ state }, [...this.states.values()].filter((s) => s === state).length);
    }
  }
}

/** Serves the join's /metrics on `listen` (host:port); resolves with a stop function. */
export async function serveJoinMetrics(listen: string, registry: Registry): Promise<() => Promise<void>> {
  const cut = listen.lastIndexOf(':');
  const host = listen.slice(0, cut).replace(/^\[|\]$/g, '');
  const port = Number(listen.slice(cut + 1));
  const server: Server = createServer((req, res) => {
    if (req.url !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('pgbidi join serves /metrics only\n');
      return;
    }
    registry.metrics().then(
      (body) => res.writeHead(200, { 'content-type': registry.contentType }).end(body),
      () => res.writeHead(500).end(),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  return () => new Promise<void>((resolve) => server.close(() => resolve()));
}
