/** The demo's log files: agents and servers write there, so that the terminal shows only the view. */
import { createWriteStream, type WriteStream } from 'node:fs';
import path from 'node:path';

export interface DemoLogs {
  readonly agentLogPath: string;
  readonly serverLogPath: string;
  readonly agents: WriteStream;
  serverLine(node: string, line: string): void;
  close(): Promise<void>;
}

/** Opens agents.log and postgres.log in `dir`. */
export function openLogs(dir: string): DemoLogs {
  const agentLogPath = path.join(dir, 'agents.log');
  const serverLogPath = path.join(dir, 'postgres.log');
  const agents = createWriteStream(agentLogPath);
  const servers = createWriteStream(serverLogPath);
  let closed = false;
  // A late line after close (a server printing while it exits) must not crash the demo.
  for (const s of [agents, servers]) s.on('error', () => undefined);
  const end = (s: WriteStream): Promise<void> => new Promise((resolve) => s.end(() => resolve()));
  return {
    agentLogPath,
    serverLogPath,
    agents,
    serverLine(node, line) {
      if (!closed) servers.write(`${node}: ${line}\n`);
    },
    async close() {
      closed = true;
      await Promise.all([end(agents), end(servers)]);
    },
  };
}
