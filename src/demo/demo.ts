import type { Io } from '../cli.js';

export async function runDemo(_args: Record<string, unknown>, io: Io): Promise<number> {
  io.err('pgbidi: demo is not built yet\n');
  return 1;
}
