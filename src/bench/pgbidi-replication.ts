/**
 * pgbidi on a fresh two-node LocalCluster (a, b), set up with `setupAll()`; only b's agent runs,
 * so only the link a → b is measured. The agent runs in this process with a silent logger.
 *
 *   backlog:   setup → rows inserted on a (no agent running) → clock starts → b's agent starts →
 *              b holds all rows. Nothing is subtracted: the agent's connect and slot start are part
 *              of the figure, and firstRowSeconds shows how much of it they are.
 *   streaming: b's agent streaming → clock starts at a's first commit → b holds all rows
 */
import type { RawConfig } from '../config/config-schema.js';
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
  try {
    await cluster.setupAll();
    const a = cluster.server(SOURCE);
    const b = cluster.server(TARGET);
    // The variant picks agent options; 'default' is the agent as `pgbidi run` starts it. The
    // observability on/off comparison maps its variants to agent options here.
    const startAgent = (): Promise<unknown> => cluster.startAgent(TARGET);
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
