import type { ChangeOp } from '../observability/metrics.js';
import type { ChangeMessage, PgoutputMessage, StreamCommitMessage } from '../protocol/pgoutput-messages.js';
import type { ApplyItem } from './apply-queue.js';
import type { EarlyApply } from './streamed-transactions.js';

/** What the feed needs from the link around it. */
export interface EarlyApplyFeedDeps {
  /** Onto the apply queue (with the link's backpressure). */
  readonly push: (item: ApplyItem) => void;
  readonly batchSize: number;
  /** Whether a streamed transaction that starts now may be applied while it streams. */
  readonly enabled: (xid: number) => boolean;
  /** The apply loop commits it: it counts as received now, with the changes it had per operation. */
  readonly received: (c: StreamCommitMessage, changes: ReadonlyMap<ChangeOp, number>) => void;
}

/**
 * The receive side of applying a streamed transaction while it streams: its decoded messages become
 * `early-` items on the apply queue, changes in batches of `batchSize` like any large transaction.
 * Plain INSERTs alone can go before the commit time is known (they decide nothing by it; a key that
 * exists fails the INSERT, and the transaction is then applied from the spool with every rule), so
 * any other change stops the early apply at once, before the apply loop would.
 */
export class EarlyApplyFeed implements EarlyApply {
  private batch: ChangeMessage[] = [];
  private counts = new Map<ChangeOp, number>();

  constructor(private readonly deps: EarlyApplyFeedDeps) {}

  allowed(xid: number): boolean {
    return this.deps.enabled(xid);
  }

  begin(xid: number): void {
    this.batch = [];
    this.counts = new Map();
    this.deps.push({ kind: 'early-begin', xid });
  }

  message(xid: number, m: PgoutputMessage): boolean {
    switch (m.tag) {
      case 'insert':
        this.counts.set('insert', (this.counts.get('insert') ?? 0) + 1);
        this.batch.push(m);
        if (this.batch.length >= this.deps.batchSize) this.flush(xid);
        return true;
      case 'relation':
        // The changes before it were decoded with the relation's previous definition: they go first.
        this.flush(xid);
        this.deps.push({ kind: 'relation', relation: m });
        return true;
      case 'message':
        if (m.transactional) this.deps.push({ kind: 'early-message', xid, message: m });
        return true;
      case 'type':
        return true; // values are text and cast by local type names
      case 'update':
      case 'delete':
      case 'truncate':
        return false; // last-update-wins decides them by the commit time, which comes with Stream Commit
      case 'begin':
      case 'commit':
      case 'origin':
        return false; // not sent inside a stream block (Origin is taken by StreamedTransactions)
    }
  }

  abandon(xid: number): void {
    this.batch = [];
    this.deps.push({ kind: 'early-abandon', xid });
  }

  commit(c: StreamCommitMessage, done: (committed: boolean) => void): void {
    this.flush(c.xid);
    const counts = this.counts;
    this.counts = new Map();
    this.deps.push({ kind: 'early-commit', commit: c, outcome: { committing: () => this.deps.received(c, counts), done } });
  }

  private flush(xid: number): void {
    if (this.batch.length === 0) return;
    const changes = this.batch;
    this.batch = [];
    this.deps.push({ kind: 'early-changes', xid, changes });
  }
}
