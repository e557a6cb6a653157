import { errorMessage } from '../util/error-message.js';
/** The benchmark's one error type; the code says what went wrong, the message says where. */
export type BenchErrorCode =
  /** Bad command line: exit code 2. */
  | 'BENCH_USAGE'
  /** A wait ran past --timeout-s: the figure it was measuring is reported as failed. */
  | 'BENCH_TIMEOUT'
  /** A tool the bench drives (pgbench, the agent process) failed or printed something unexpected. */
  | 'BENCH_TOOL_FAILED'
  /** State the measurement relies on did not hold (rows arrived before replication started, …). */
  | 'BENCH_UNEXPECTED';

export class BenchError extends Error {
  override readonly name = 'BenchError';
  constructor(
    readonly code: BenchErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** `CODE: message` for a BenchError, the message (or text) of anything else. */
export function describeError(err: unknown): string {
  if (err instanceof BenchError) return `${err.code}: ${err.message}`;
  return errorMessage(err);
}
