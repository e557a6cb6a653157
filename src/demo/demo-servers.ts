/**
 * The demo's PostgreSQL servers. They are started here with PostgresServer rather than through
 * LocalCluster because the demo needs their data inside its own directory and progress per node
 * while they start.
 */
import path from 'node:path';
import { PostgresServer } from '../pg-server/postgres-server.js';
import type { DemoGroup } from './demo-group.js';
import { secondsSince } from './demo-group.js';
import type { DemoLogs } from './demo-logs.js';
import type { StopSignal } from './demo-shutdown.js';
import { DEMO_DATABASE } from './demo-workload.js';

/** Starts one server per node in parallel, each with its data in `dir/<node>`; fills group.servers and group.nodes. */
export async function startServers(
  group: DemoGroup,
  binDir: string,
  dir: string,
  logs: DemoLogs,
  say: (line: string) => void,
  stop: StopSignal,
): Promise<void> {
  say(`starting ${group.names.length} PostgreSQL servers (initdb on first start takes a few seconds each)`);
  const started = Date.now();
  const results = await Promise.allSettled(
    group.names.map(async (name) => {
      if (stop.stopping) return;
      const server = await PostgresServer.start({
        binDir,
        name,
        dataDir: path.join(dir, name),
        onLog: (line) => logs.serverLine(name, line),
      });
      group.servers.set(name, server);
      say(`  ${name}: PostgreSQL ${formatVersion(server.versionNum)} on ${server.host}:${server.port} (${secondsSince(started)})`);
    }),
  );
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
  stop.throwIfStopping(); // a server may have been skipped
  group.nodes = group.names.flatMap((name) => {
    const server = group.servers.get(name);
    return server ? [{ name, server, dsn: server.connectionString(DEMO_DATABASE) }] : [];
  });
}

export async function stopServers(group: DemoGroup): Promise<void> {
  await Promise.all([...group.servers.values()].map((s) => s.stop()));
  group.servers.clear();
}

function formatVersion(num: number): string {
  return `${Math.floor(num / 10_000)}.${num % 10_000}`;
}
