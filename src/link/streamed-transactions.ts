import { decodeStreamedBody } from '../protocol/pgoutput-decoder.js';
import type { PgoutputMessage, StreamCommitMessage, StreamControlMessage } from '../protocol/pgoutput-messages.js';
import type { ReplicationMessage } from '../protocol/replication-messages.js';
import { StreamSpool } from './stream-spool.js';
import type { SpooledTransaction } from './stream-spool.js';

/** What the stage needs from the link around it. */
export interface StreamedTransactionsDeps {
  /** The next stage (the transaction assembler): a committed transaction arrives there as if whole. */
  readonly accept: (msg: PgoutputMessage) => void;
  /** Whether the apply queue has room; when not, the read-back waits for roomMade(). */
  readonly hasRoom: () => boolean;
  /** Stops reading from the peer while a committed transaction is read back. */
  readonly pauseSource: () => void;
  /** Reading may go on (the link decides whether its own backpressure allows it). */
  readonly resumeSource: () => void;
  /** A message held during a read-back, given back in arrival order once it is done. */
  readonly release: (m: ReplicationMessage) => void;
  /** A read-back failed (a spool file could not be read): the attempt fails. */
  readonly failed: (err: unknown) => void;
  /** Where spool files go (tests); the system's temporary directory by default. */
  readonly spoolParent?: string;
  /** Applies a streamed transaction while it streams; absent, every one waits in the spool for its commit. */
  readonly early?: EarlyApply;
}

/**
 * The link's side of applying a streamed transaction while it streams, as PostgreSQL's parallel
 * apply does (streaming = parallel, applyparallelworker.c), but in the one apply session: only while
 * it is the only transaction the session has to apply. It is spooled all the same, so that whatever
 * stops it early (another transaction to apply first, an aborted subtransaction, a change that needs
 * the commit time) only costs the work done so far: that is rolled back, and at its commit the
 * spool is read back as for any streamed transaction.
 */
export interface EarlyApply {
  /** Whether `xid`, whose first block starts with no other streamed transaction open, may go early. */
  allowed(xid: number): boolean;
  begin(xid: number): void;
  /** A message of its blocks, decoded; false when it cannot be applied before its commit. */
  message(xid: number, m: PgoutputMessage): boolean;
  /** It stops going early: what was applied of it is rolled back. */
  abandon(xid: number): void;
  /** Its Stream Commit: the apply loop answers with `done`; done(false) reads the spool back. */
  commit(c: StreamCommitMessage, done: (committed: boolean) => void): void;
}

const STREAM_TAGS: ReadonlySet<string> = new Set([
  'stream-start',
  'stream-stop',
  'streamed',
  'stream-abort',
  'stream-commit',
] satisfies StreamControlMessage['tag'][]);

function isStreamControl(m: PgoutputMessage | StreamControlMessage): m is StreamControlMessage {
  return STREAM_TAGS.has(m.tag);
}

/**
 * The receive stage of protocol 2's streamed transactions (protocol.sgml, "Logical Streaming
 * Replication Protocol", streaming = on): the peer sends a large transaction in blocks before it
 * commits; they are kept in the spool until Stream Commit, and then handed to the assembler as
 * Begin, (Origin), the transaction's messages, Commit, read back lazily as the apply queue makes
 * room. While a read-back runs, reading from the peer pauses, and what the driver had already
 * parsed is held and given back afterwards, so nothing overtakes the committed transaction.
 * A transaction that starts with no other one open may also go to the apply loop as it arrives
 * (EarlyApply); the spool is then read back only when that could not commit it.
 */
export class StreamedTransactions {
  private readonly spool: StreamSpool;
  private reading = false;
  private held: ReplicationMessage[] = [];
  /** Counts resets: a read-back of an earlier attempt stops at its next step. */
  private epoch = 0;
  private roomWaiter: (() => void) | null = null;
  /** The transaction of the open Stream Start … Stop block. */
  private block: number | null = null;
  /** The streamed transaction being applied early, while it can go on so. */
  private early: number | null = null;

  constructor(private readonly deps: StreamedTransactionsDeps) {
    this.spool = new StreamSpool(deps.spoolParent);
  }

  /** A streamed transaction has begun and not yet committed or aborted (it counts as one being received). */
  get pending(): boolean {
    return this.spool.pending;
  }

  /** A committed streamed transaction is being read back. */
  get replaying(): boolean {
    return this.reading;
  }

  /** Keeps `m` for later when a read-back runs; false when the caller handles it now. */
  hold(m: ReplicationMessage): boolean {
    if (!this.reading) return false;
    this.held.push(m);
    return true;
  }

  /** Takes the messages that belong to a stream (its control messages, an Origin inside a block) and returns the rest. */
  take(msg: PgoutputMessage | StreamControlMessage): PgoutputMessage | null {
    if (isStreamControl(msg)) {
      this.control(msg);
      return null;
    }
    if (msg.tag === 'origin' && this.spool.inBlock) {
      this.spool.origin();
      if (this.early === this.block) this.interrupt(); // replicated from elsewhere: dropped at its commit
      return null;
    }
    return msg;
  }

  /**
   * The apply session is needed for something else first (a transaction that commits before the
   * one applied early, or a Relation message outside its blocks): that one goes back to the spool.
   */
  interrupt(): void {
    const xid = this.early;
    if (xid === null) return;
    this.early = null;
    this.deps.early?.abandon(xid);
  }

  /** The apply queue has room again: a read-back waiting for it goes on. */
  roomMade(): void {
    const w = this.roomWaiter;
    this.roomWaiter = null;
    w?.();
  }

  /** A new attempt: streamed transactions not committed yet come again, whole, from the peer. */
  reset(): void {
    this.epoch++;
    this.spool.reset();
    this.block = null;
    this.early = null;
    this.reading = false;
    this.held = [];
    this.roomMade();
  }

  private control(msg: StreamControlMessage): void {
    switch (msg.tag) {
      case 'stream-start': {
        const alone = !this.spool.pending;
        this.spool.start(msg);
        this.block = msg.xid;
        if (this.early !== null && this.early !== msg.xid) this.interrupt();
        else if (this.early === null && msg.first && alone && this.deps.early?.allowed(msg.xid) === true) {
          this.early = msg.xid;
          this.deps.early.begin(msg.xid);
        }
        return;
      }
      case 'stream-stop':
        this.block = null;
        return this.spool.stop();
      case 'streamed':
        this.spool.add(msg);
        if (this.early !== null && this.early === this.block && this.deps.early?.message(this.early, decodeStreamedBody(msg.messageTag, msg.body)) === false) {
          this.interrupt();
        }
        return;
      case 'stream-abort':
        // A subtransaction's changes may already be applied: the whole transaction goes back to the spool.
        if (this.early === msg.xid) this.interrupt();
        return this.spool.abort(msg);
      case 'stream-commit':
        return this.early === msg.xid ? this.commitEarly(msg) : this.readBack(msg);
    }
  }

  private readBack(c: StreamCommitMessage): void {
    const t = this.spool.commit(c.xid);
    const epoch = this.epoch;
    this.reading = true;
    this.deps.pauseSource();
    this.replay(t, c, epoch);
  }

  /** Reading pauses while the apply loop commits it, or reads the spool back when it cannot. */
  private commitEarly(c: StreamCommitMessage): void {
    const early = this.deps.early as EarlyApply;
    this.early = null;
    const t = this.spool.commit(c.xid);
    const epoch = this.epoch;
    this.reading = true;
    this.deps.pauseSource();
    early.commit(c, (committed) => {
      if (epoch !== this.epoch) return;
      if (!committed) return this.replay(t, c, epoch);
      t?.discard();
      this.doneReading();
    });
  }

  private replay(t: SpooledTransaction | null, c: StreamCommitMessage, epoch: number): void {
    this.feed(t, c, epoch).then(
      () => {
        if (epoch === this.epoch) this.doneReading();
      },
      (err: unknown) => {
        if (epoch === this.epoch) this.deps.failed(err);
      },
    );
  }

  private doneReading(): void {
    this.reading = false;
    // A held message may be the next Stream Commit: it starts a read-back of its own.
    while (!this.reading && this.held.length > 0) this.deps.release(this.held.shift() as ReplicationMessage);
    if (!this.reading) this.deps.resumeSource();
  }

  private async feed(t: SpooledTransaction | null, c: StreamCommitMessage, epoch: number): Promise<void> {
    const { accept } = this.deps;
    try {
      accept({ tag: 'begin', finalLsn: c.commitLsn, commitTime: c.commitTime, xid: c.xid });
      // The Origin message's fields are not used: its presence drops the transaction.
      if (t?.origin) accept({ tag: 'origin', originLsn: 0n, originName: '' });
      if (t) {
        for await (const chunk of t.chunks()) {
          for (const msg of chunk) {
            if (epoch !== this.epoch) return;
            accept(msg);
            if (!this.deps.hasRoom()) await new Promise<void>((resolve) => (this.roomWaiter = resolve));
          }
        }
      }
      if (epoch !== this.epoch) return;
      accept({ tag: 'commit', flags: c.flags, commitLsn: c.commitLsn, endLsn: c.endLsn, commitTime: c.commitTime });
    } finally {
      t?.discard();
    }
  }
}
