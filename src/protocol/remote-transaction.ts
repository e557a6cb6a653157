import type { BeginMessage, ChangeMessage, CommitMessage } from './pgoutput-messages.js';

/**
 * A peer transaction received whole (Begin through Commit), small enough to be held in memory and
 * applied in one piece. Larger transactions are streamed to the applier in batches instead.
 */
export interface RemoteTransaction {
  readonly begin: BeginMessage;
  readonly commit: CommitMessage;
  readonly changes: readonly ChangeMessage[];
  /** Peer clock time (µs since 2000) of a pgbidi heartbeat message inside the transaction. */
  readonly heartbeat: bigint | null;
  /** W3C traceparent the writer put into the transaction, for the apply span's link. */
  readonly traceparent: string | null;
}
