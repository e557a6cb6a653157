import type { PreparedBatch } from '../apply/transaction-applier.js';
import type { RemoteTransaction } from '../protocol/remote-transaction.js';
import type {
  BeginMessage,
  ChangeMessage,
  CommitMessage,
  LogicalDecodingMessage,
  RelationMessage,
  StreamCommitMessage,
} from '../protocol/pgoutput-messages.js';

/** How the apply loop answers the Stream Commit of a transaction it applied while it streamed. */
export interface EarlyCommit {
  /** It commits it now: the receive side accounts for the transaction as received (progress, counters). */
  committing(): void;
  /** Committed (the spooled copy is not needed), or not (the spool is read back as for any streamed transaction). */
  done(committed: boolean): void;
}

/**
 * What the receiver hands to the applier, in stream order. The `early-` items are a transaction the
 * peer streams before its commit, applied while it streams (StreamedTransactions): its changes
 * before its commit time is known, so only what needs no commit time (plain INSERTs).
 */
export type ApplyItem =
  | { readonly kind: 'transaction'; readonly txn: RemoteTransaction }
  | { readonly kind: 'begin'; readonly begin: BeginMessage }
  | { readonly kind: 'relation'; readonly relation: RelationMessage }
  | { readonly kind: 'changes'; readonly changes: readonly ChangeMessage[]; readonly prepared: PreparedBatch | null }
  | { readonly kind: 'message'; readonly message: LogicalDecodingMessage }
  | { readonly kind: 'commit'; readonly commit: CommitMessage }
  | { readonly kind: 'early-begin'; readonly xid: number }
  | { readonly kind: 'early-changes'; readonly xid: number; readonly changes: readonly ChangeMessage[] }
  | { readonly kind: 'early-message'; readonly xid: number; readonly message: LogicalDecodingMessage }
  | { readonly kind: 'early-abandon'; readonly xid: number }
  | { readonly kind: 'early-commit'; readonly commit: StreamCommitMessage; readonly outcome: EarlyCommit };

function changesOf(item: ApplyItem): number {
  if (item.kind === 'changes' || item.kind === 'early-changes') return item.changes.length;
  return item.kind === 'transaction' ? item.txn.changes.length : 0;
}

function isCommit(item: ApplyItem): boolean {
  return item.kind === 'commit' || item.kind === 'early-commit';
}

/**
 * A FIFO between the synchronous receive callback and the asynchronous applier. It counts queued
 * changes (for backpressure) and queued commits (so a draining applier knows whether the open
 * transaction can still finish).
 */
export class ApplyQueue {
  private items: (ApplyItem | undefined)[] = [];
  private head = 0;
  private waiter: (() => void) | null = null;
  changes = 0;
  commits = 0;
  /** Relation messages the applier has not seen yet (batches built ahead would use older mappings). */
  relations = 0;
  /** Changes the applier has taken since the queue was last cleared (the receiver's slow start). */
  taken = 0;

  push(item: ApplyItem): void {
    this.items.push(item);
    this.changes += changesOf(item);
    if (isCommit(item)) this.commits++;
    if (item.kind === 'relation') this.relations++;
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }

  get length(): number {
    return this.items.length - this.head;
  }

  shift(): ApplyItem | undefined {
    if (this.head >= this.items.length) return undefined;
    const item = this.items[this.head] as ApplyItem;
    // The slot lets go of the item at once: a large transaction passes through here as a thousand
    // batches, and slots kept until the next compaction held every one of them (617 MiB for
    // 1,000,000 rows, issue measurement).
    this.items[this.head++] = undefined;
    if (this.head >= this.items.length) {
      this.items = [];
      this.head = 0;
    } else if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    const n = changesOf(item);
    this.changes -= n;
    this.taken += n;
    if (isCommit(item)) this.commits--;
    if (item.kind === 'relation') this.relations--;
    return item;
  }

  /** The next item, left in the queue. */
  peek(): ApplyItem | undefined {
    return this.items[this.head];
  }

  /** Resolves when an item is available or `wake()` is called. */
  wait(): Promise<void> {
    if (this.length > 0) return Promise.resolve();
    return new Promise((resolve) => {
      this.waiter = resolve;
    });
  }

  wake(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }

  clear(): void {
    this.items = [];
    this.head = 0;
    this.changes = 0;
    this.commits = 0;
    this.relations = 0;
    this.taken = 0;
  }
}
