import type { Config } from '../config/config-schema.js';
import { JoinError, joinNode } from './join-node.js';
import { JoinProgress, serveJoinMetrics } from './join-progress.js';
import { errorMessage } from '../util/error-message.js';

export interface JoinArgs {
  readonly from?: string | undefined;
  readonly parallel?: string | undefined;
}

interface Io {
  out: (s: string) => void;
  err: (s: string) => void;
}

const DEFAULT_PARALLEL = 4;
/** How long join waits for the donor to apply another peer's changes up to c's slot there. */
const CATCH_UP_TIMEOUT_MS = 300_000;

/** `pgbidi join --config c.yaml --from a [--parallel N]`: exit 0 joined (or already), 1 failed, 2 usage. */
export async function joinCommand(config: Config, args: JoinArgs, io: Io): Promise<number> {
  const parallel = args.parallel === undefined ? DEFAULT_PARALLEL : Number(args.parallel);
  if (!args.from || !(Number.isInteger(parallel) && parallel >= 1)) {
    io.err('pgbidi: join needs --from PEER (the donor) and, if given, --parallel N with N ≥ 1\n');
    return 2;
  }
  const progress = new JoinProgress();
  let stopMetrics: (() => Promise<void>) | null = null;
  try {
    stopMetrics = await serveJoinMetrics(config.http.listen, progress.registry);
  } catch (err) {
    io.err(`pgbidi: join metrics not served on ${config.http.listen} (${errorMessage(err)}); is this node's agent running? join goes on\n`);
  }
  try {
    const report = await joinNode(config, {
      donor: args.from,
      parallel,
      catchUpTimeoutMs: CATCH_UP_TIMEOUT_MS,
      progress,
      say: (line) => io.out(`${line}\n`),
    });
    if (report.alreadyJoined) return 0;
    io.out(`node ${config.node.name} joined from ${report.donor}${report.restarted ? ' (an unfinished earlier attempt was dropped)' : ''}\n`);
    for (const t of report.tables) io.out(`  ${t.table}: ${t.rows} rows\n`);
    io.out(`  ${report.rows} rows in ${report.seconds.toFixed(1)} s: ${Math.round(report.rowsPerSecond)} rows/s\n`);
    for (const p of report.startPositions) io.out(`  link from ${p.peer} starts at ${p.lsn}\n`);
    io.out(
      `  next: start this node's agent (pgbidi run), then restart the agents of ${config.peers.map((p) => p.name).join(', ')} with this node in their peers\n`,
    );
    return 0;
  } catch (err) {
    if (err instanceof JoinError) {
      io.err(`pgbidi: ${err.message}\n`);
      return 1;
    }
    throw err;
  } finally {
    await stopMetrics?.();
  }
}
