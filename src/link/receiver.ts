/**
 * The receive stage of a link: replication messages in, apply queue items out. Synchronous: it runs
 * inside the replication stream's copyData callback.
 *
 *   message ─► StreamedTransactions (transactions streamed before their commit: spooled, or applied
 *   early) ─► TransactionAssembler (order check, loop filter, whole small transactions or batches of
 *   large ones) ─► ApplyQueue
 *
 * Along the way it moves the received position (ProgressTracker), answers keepalives through the
 * control channel, prepares a large transaction's batch while the apply loop waits for the server on
 * the one before, and keeps the queue short: reading pauses at max_queued_changes and resumes at half
 * of it (the link's state says paused meanwhile), and at START_QUEUED_CHANGES until the attempt is
 * under way (backpressure()).
 */
import type { Config } from '../config/config-schema.js';
import type { TransactionApplier } from '../apply/transaction-applier.js';
import type { LinkMetrics, LinkState } from '../observability/metrics.js';
import { formatPgTimestamp } from '../protocol/pg-time.js';
import type { ChangeMessage } from '../protocol/pgoutput-messages.js';
import type { ReplicationMessage } from '../protocol/replication-messages.js';
import type { ApplyQueue } from './apply-queue.js';
import type { ControlChannel } from './control-channel.js';
import { EarlyApplyFeed } from './early-apply-feed.js';
import type { ProgressTracker } from './progress-tracker.js';
import { StreamedTransactions } from './streamed-transactions.js';
import { TransactionAssembler } from './transaction-assembler.js';
import type { AssemblerSink } from './transaction-assembler.js';

/**
 * Where reading pauses until an attempt has applied a transaction or its apply loop has taken a full
 * queue's worth of changes. At an agent's start its code is still interpreted: in a W5 backlog
 * (one-row transactions) the answer to the table's catalog query was read 181 ms after the query
 * left (a socket trace of the agent), behind the decoding of the 2,000 changes ahead, and the apply
 * procedure waited for it. With this limit W5's first row reached the node 0.21 / 0.24 s after the
 * start instead of 0.33 / 0.43 s, W1's 0.14 / 0.15 s instead of 0.17 / 0.19 s (18, two interleaved
 * pairs).
 */
export const START_QUEUED_CHANGES = 200;

/** Reading from the peer, paused and resumed by backpressure. */
export interface FlowControl {
  pause(): void;
  resume(): void;
}

export interface ReceiverDeps {
  readonly peer: string;
  readonly replication: Config['replication'];
  readonly metrics: LinkMetrics;
  readonly queue: ApplyQueue;
  readonly progress: ProgressTracker;
  /** The current attempt's replication stream; null between attempts. */
  readonly source: () => FlowControl | null;
  /** The current attempt's multi-row statements, to prepare batches ahead; null between attempts. */
  readonly statements: () => TransactionApplier | null;
  /** The current attempt's feedback; null between attempts. */
  readonly channel: () => ControlChannel | null;
  /** The link's state: backpressure moves it between streaming and paused, and in no other. */
  readonly state: () => LinkState;
  readonly setState: (state: 'streaming' | 'paused') => void;
  /** Whether a streamed transaction may be applied while it streams (EarlyApplyFeed). */
  readonly earlyApplyAllowed: (xid: number) => boolean;
  /** The attempt fails with this error. */
  readonly failed: (err: unknown) => void;
}

export class Receiver {
  private readonly assembler: TransactionAssembler;
  /** Transactions the peer streams before their commit (protocol 2), until they reach the assembler. */
  private readonly streamed: StreamedTransactions;
  // Where in its transaction the next batch is.
  private batchesInTransaction = 0;
  private receivingCommitTime: bigint | null = null;
  private skippedFromOthers = 0;
  // The slow start of the attempt (START_QUEUED_CHANGES): on until something is applied after `startedAt`.
  private starting = true;
  private startedAt: bigint;

  constructor(private readonly deps: ReceiverDeps) {
    const { replication, queue, progress, metrics } = deps;
    this.startedAt = progress.applied;
    this.assembler = new TransactionAssembler(this.sink(), metrics, {
      batchSize: replication.apply_batch_size,
      // Up to apply_procedure_max_changes a transaction is received whole and goes through the apply
      // procedure (a row at a time, statements planned once: cheaper for small transactions); larger
      // ones stream to multi-row statements in batches. 0: every transaction takes the statements.
      smallTransactionChanges: replication.apply_procedure_max_changes,
    });
    this.streamed = new StreamedTransactions({
      accept: (msg) => this.assembler.accept(msg),
      hasRoom: () => queue.changes < this.maxQueuedChanges(),
      pauseSource: () => deps.source()?.pause(),
      resumeSource: () => {
        if (deps.state() !== 'paused') deps.source()?.resume();
      },
      release: (m) => this.receive(m),
      failed: (err) => deps.failed(err),
      early: new EarlyApplyFeed({
        push: (item) => {
          queue.push(item);
          this.backpressure();
        },
        batchSize: replication.apply_batch_size,
        enabled: (xid) => deps.earlyApplyAllowed(xid),
        received: (c, counts) => {
          progress.queued(c.commitTime);
          this.receivedUpTo(c.endLsn);
          for (const [op, n] of counts) metrics.received(op, n);
        },
      }),
    });
  }

  /** Transactions skipped because they came from another node (loop prevention). */
  get filtered(): number {
    return this.skippedFromOthers;
  }

  /** Changes received and not yet queued (a large transaction's batch being filled). */
  get held(): number {
    return this.assembler.held;
  }

  receive(m: ReplicationMessage): void {
    if (this.streamed.hold(m)) return;
    if (m.kind === 'keepalive') {
      // A streamed transaction not committed yet counts as one being received.
      this.deps.progress.keepalive(m.walEnd, this.assembler.receiving || this.streamed.pending);
      if (m.replyRequested) this.deps.channel()?.feedback();
      // On a synchronous link a keepalive may stand for commits the peer's committers wait on that
      // send nothing (unpublished tables, origin-filtered or empty transactions: §8 of the research).
      else this.deps.channel()?.soon();
      return;
    }
    this.deps.metrics.receivedBytes(m.byteLength);
    const rest = this.streamed.take(m.message);
    if (rest) this.assembler.accept(rest);
  }

  /** A new attempt receives from its start position: nothing of the last one is kept, nor queued. */
  reset(): void {
    this.starting = true;
    this.startedAt = this.deps.progress.applied;
    this.streamed.reset();
    this.assembler.reset();
    this.batchesInTransaction = 0;
    this.receivingCommitTime = null;
    this.deps.queue.clear();
  }

  /**
   * Reading pauses at max_queued_changes (at least two batches, so that one is applied while the next
   * waits) and resumes at half of it. A short queue is also a faster one: what waits in it outlives
   * the young generation of the heap, and copying it there was a third of the agent's CPU in bulk
   * apply at the former default of 10,000 (W1 profile; 2,000: W1 +24 %, W4 -15 % time, -50 MiB RSS).
   * Until the attempt is under way the limit is START_QUEUED_CHANGES: the apply loop's first answers
   * are read sooner, and the server starts on the first transactions while the rest is decoded.
   */
  backpressure(): void {
    const { queue, metrics } = this.deps;
    const max = this.maxQueuedChanges();
    metrics.queue(queue.changes, max);
    if (queue.changes <= max / 2) this.streamed.roomMade();
    const state = this.deps.state();
    if (state === 'streaming' && queue.changes >= max) {
      this.deps.source()?.pause();
      this.deps.setState('paused');
    } else if (state === 'paused' && queue.changes <= max / 2) {
      if (!this.streamed.replaying) this.deps.source()?.resume();
      this.deps.setState('streaming');
    }
  }

  private receivedUpTo(lsn: bigint): void {
    this.deps.progress.receivedUpTo(lsn);
    this.deps.metrics.positions({ received: this.deps.progress.received });
  }

  /** Where the assembler's output goes: the apply queue, with positions and backpressure. */
  private sink(): AssemblerSink {
    const { queue, progress } = this.deps;
    // A transaction applied early (streamed-transactions.ts) goes back to the spool when the apply
    // session is needed first: for a transaction that commits before it (one with nothing to apply
    // does not need the session, unless every transaction takes the statement path), or for a
    // Relation message outside its blocks (the relation's definition would change under it).
    const procedureOff = this.deps.replication.apply_procedure_max_changes === 0;
    return {
      relation: (r) => {
        this.streamed.interrupt();
        queue.push({ kind: 'relation', relation: r });
      },
      transaction: (t) => {
        if (t.changes.length > 0 || procedureOff) this.streamed.interrupt();
        this.receivedUpTo(t.commit.endLsn);
        progress.queued(t.begin.commitTime);
        queue.push({ kind: 'transaction', txn: t });
        this.backpressure();
      },
      begin: (b) => {
        this.streamed.interrupt();
        progress.queued(b.commitTime);
        this.batchesInTransaction = 0;
        this.receivingCommitTime = b.commitTime;
        queue.push({ kind: 'begin', begin: b });
      },
      changes: (batch) => this.pushBatch(batch),
      message: (msg) => queue.push({ kind: 'message', message: msg }),
      commit: (c) => {
        this.receivedUpTo(c.endLsn);
        this.receivingCommitTime = null;
        queue.push({ kind: 'commit', commit: c });
        this.backpressure();
      },
      skipped: (t) => {
        this.receivedUpTo(t.endLsn);
        if (t.reason === 'origin') this.skippedFromOthers++;
        progress.processed(t.endLsn);
      },
    };
  }

  private pushBatch(batch: ChangeMessage[]): void {
    // Built here, while the apply loop waits for the server on the batch before, unless a Relation
    // message is still queued (the applier's mappings would be older than this batch).
    const { queue } = this.deps;
    const commitTime = this.receivingCommitTime;
    const statements = this.deps.statements();
    const prepared =
      queue.relations === 0 && commitTime !== null && statements
        ? statements.prepare(
            batch,
            { commitTimestamp: formatPgTimestamp(commitTime), node: this.deps.peer },
            { firstInTransaction: this.batchesInTransaction === 0, fast: true },
          )
        : null;
    this.batchesInTransaction++;
    queue.push({ kind: 'changes', changes: batch, prepared });
    this.backpressure();
  }

  private maxQueuedChanges(): number {
    const { max_queued_changes, apply_batch_size } = this.deps.replication;
    const max = Math.max(max_queued_changes, 2 * apply_batch_size);
    // A large transaction commits only at its end: for it, a queue's worth of changes taken ends it.
    if (this.starting && (this.deps.progress.applied > this.startedAt || this.deps.queue.taken >= max)) this.starting = false;
    return this.starting ? Math.min(START_QUEUED_CHANGES, max) : max;
  }
}
