import { maxLsn, ZERO_LSN } from '../protocol/lsn.js';
import type { Lsn } from '../protocol/lsn.js';
import { pgMicrosToUnixMs } from '../protocol/pg-time.js';

/**
 * Where one link stands, as positions in the peer's WAL, and the lag they imply. Pure: the link
 * feeds it events and reads what to confirm.
 *
 *   received ≥ applied ≥ durable ≥ … ; confirmed only ever takes durable positions, or, when nothing
 *   received is pending, the positions of transactions that needed no local commit (filtered by
 *   origin, empty, or keepalives): like worker.c send_feedback without pending transactions, or the
 *   peer would retain WAL forever on idle or filtered traffic.
 */
export class ProgressTracker {
  /** Highest position received (commit end or keepalive walEnd). */
  received: Lsn = ZERO_LSN;
  /** End of the last peer transaction committed here under the origin. */
  applied: Lsn = ZERO_LSN;
  /** The origin's progress after a WAL flush (pg_replication_origin_progress(…, true)). */
  durable: Lsn = ZERO_LSN;
  /** Last position confirmed to the peer. */
  confirmed: Lsn = ZERO_LSN;
  /** Positions processed without a local commit: confirmable once nothing is pending. */
  private idle: Lsn = ZERO_LSN;
  /** Commit times of received transactions not yet applied, oldest first. */
  private pending: bigint[] = [];
  private head = 0;
  /** The oldest unapplied commit time across a reconnect, until apply resumes. */
  private oldestUnapplied: bigint | null = null;

  constructor(private readonly clock: () => number) {}

  /** A connection attempt streams from `origin`, the local origin's progress. */
  startAttempt(origin: Lsn): void {
    this.applied = maxLsn(this.applied, origin);
    this.durable = origin;
    this.pending = [];
    this.head = 0;
  }

  /** The attempt ended: what was received and not applied is received again, and still lags. */
  endAttempt(): void {
    this.oldestUnapplied = this.pending[this.head] ?? this.oldestUnapplied;
    this.pending = [];
    this.head = 0;
  }

  receivedUpTo(lsn: Lsn): void {
    this.received = maxLsn(this.received, lsn);
  }

  /** A keepalive: its walEnd needs no local commit when no transaction is being received. */
  keepalive(walEnd: Lsn, receiving: boolean): void {
    this.received = maxLsn(this.received, walEnd);
    if (!receiving) this.idle = maxLsn(this.idle, walEnd);
  }

  /** A transaction that will be applied was received. */
  queued(commitTime: bigint): void {
    this.pending.push(commitTime);
  }

  /** A transaction processed without a local commit (filtered, or nothing to write). */
  processed(endLsn: Lsn, nothingPending: boolean): void {
    if (nothingPending) this.idle = maxLsn(this.idle, endLsn);
  }

  /** Apply picked up where the last attempt left: lag counts from the queue again. */
  resumed(): void {
    this.oldestUnapplied = null;
  }

  /** A queued transaction is done: committed under the origin, or (wrote nothing) processed. */
  applyDone(endLsn: Lsn, advancedOrigin: boolean): void {
    if (this.head < this.pending.length) this.head++;
    if (this.head > 1024 && this.head * 2 > this.pending.length) {
      this.pending = this.pending.slice(this.head);
      this.head = 0;
    }
    if (advancedOrigin) this.applied = maxLsn(this.applied, endLsn);
    else this.idle = maxLsn(this.idle, endLsn);
  }

  durableUpTo(lsn: Lsn): void {
    this.durable = maxLsn(this.durable, lsn);
  }

  /**
   * What to confirm now; `idle`: nothing received is pending anywhere in the link. Never beyond
   * `applied`: the origin's progress is read on another connection and moves inside RecordTransactionCommit,
   * before the applying transaction is visible (ProcArrayEndTransaction comes after), so a durable
   * position read during a commit in flight would release a synchronous committer on the peer before
   * its rows can be read here.
   */
  confirm(idle: boolean): Lsn {
    const done = this.durable < this.applied ? this.durable : this.applied;
    const flushed = idle && this.durable >= this.applied ? maxLsn(done, this.idle) : done;
    this.confirmed = maxLsn(this.confirmed, flushed);
    return this.confirmed;
  }

  /** now − commit time of the oldest received but unapplied transaction; 0 when caught up. */
  lagSeconds(): number {
    const oldest = this.oldestUnapplied ?? this.pending[this.head];
    if (oldest === undefined) return 0;
    return Math.max(0, (this.clock() - pgMicrosToUnixMs(oldest)) / 1000);
  }
}
