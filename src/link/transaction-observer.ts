import type { ConflictRecord } from '../conflict/conflict-types.js';
import type { ChangeOp } from '../observability/metrics.js';
import type { Lsn } from '../protocol/lsn.js';
import type { BeginMessage } from '../protocol/pgoutput-messages.js';

/** Observes applied transactions (tracing hooks in here without the link knowing the SDK). */
export interface TransactionObserver {
  applied(t: {
    peer: string;
    begin: BeginMessage;
    endLsn: Lsn;
    changes: number;
    conflicts: readonly ConflictRecord[];
    startedAtMs: number;
    committedAtMs: number;
    traceparent: string | null;
    /** The statements of the transaction, per table and operation, with their times. */
    batches: readonly { table: string; op: ChangeOp; rows: number; startedAtMs: number; endedAtMs: number }[];
  }): string | undefined;
  /** A transaction that failed to apply (it rolled back; the link retries it). */
  failed?(t: { peer: string; begin: BeginMessage; startedAtMs: number; failedAtMs: number; error: { message: string; code: string | null } }): void;
}
