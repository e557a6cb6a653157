import { maxLsn, ZERO_LSN } from '../protocol/lsn.js';
import type { Lsn } from '../protocol/lsn.js';
import { pgMicrosToUnixMs } from '../protocol/pg-time.js';

/**
 * Where one link stands, as positions in the peer's WAL, and the lag they imply. Pure: the link
 * feeds it events and reads what to confirm.
 *
 *   received ≥ applied ≥ durable ≥ … ; confirmed only ever takes durable positions, or positions
 *   that needed no local commit (transactions filtered by origin or that wrote nothing, keepalives)
 *   once every transaction received before them is done and durable: like worker.c send_feedback
 *   without pending transactions, or the peer would retain WAL forever on idle or filtered traffic.
 *   Such a position waits for the transactions ahead of it, not for a moment when nothing at all is
 *   pending: with heartbeats arriving in step with feedback there may never be one.
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
  /** Highest position without a local commit whose predecessors are all durable: confirmable. */
  private idle: Lsn = ZERO_LSN;
  /** Such positions whose predecessors are done; `needs`: what must be durable first (applied then). */
  private ready: { readonly lsn: Lsn; readonly needs: Lsn }[] = [];
  /** Such positions behind transactions not yet done: `seq` transactions received before them. */
  private waiting: { readonly lsn: Lsn; readonly seq: number }[] = [];
  /** Commit times of received transactions not yet applied, oldest first. */
  private pending: bigint[] = [];
  private head = 0;
  /** Transactions dropped from the front of `pending`: base + head are done, base + length received. */
  private base = 0;
  /** The oldest unapplied commit time across a reconnect, until apply resumes. */
  private oldestUnapplied: bigint | null = null;

  constructor(private readonly clock: () => number) {}

  /** A connection attempt streams from `origin`, the local origin's progress. */
  startAttempt(origin: Lsn): void {
    this.applied = maxLsn(this.applied, origin);
    this.durable = origin;
    this.restartCount();
  }

  /** The attempt ended: what was received and not applied is received again, and still lags. */
  endAttempt(): void {
    this.oldestUnapplied = this.pending[this.head] ?? this.oldestUnapplied;
    this.restartCount();
  }

  /** What was received and not done is received again: positions waiting behind it, too. */
  private restartCount(): void {
    this.pending = [];
    this.head = 0;
    this.base = 0;
    this.waiting = [];
  }

  receivedUpTo(lsn: Lsn): void {
    this.received = maxLsn(this.received, lsn);
  }

  /** A keepalive: its walEnd needs no local commit when no transaction is being received. */
  keepalive(walEnd: Lsn, receiving: boolean): void {
    this.received = maxLsn(this.received, walEnd);
    if (!receiving) this.noCommitAt(walEnd);
  }

  /** A transaction that will be applied was received. */
  queued(commitTime: bigint): void {
    this.pending.push(commitTime);
  }

  /** A transaction received and dropped without a local commit (filtered by origin). */
  processed(endLsn: Lsn): void {
    this.noCommitAt(endLsn);
  }

  /** A position that needs no local commit, behind every transaction received so far. */
  private noCommitAt(lsn: Lsn): void {
    const seq = this.base + this.pending.length;
    if (seq <= this.base + this.head) {
      this.readyAt(lsn);
      return;
    }
    const last = this.waiting[this.waiting.length - 1];
    // Positions behind the same transactions wait as one.
    if (last?.seq === seq) this.waiting[this.waiting.length - 1] = { lsn: maxLsn(last.lsn, lsn), seq };
    else this.waiting.push({ lsn, seq });
  }

  private readyAt(lsn: Lsn): void {
    const last = this.ready[this.ready.length - 1];
    // Positions that need the same commits durable are confirmable together.
    if (last?.needs === this.applied) this.ready[this.ready.length - 1] = { lsn: maxLsn(last.lsn, lsn), needs: last.needs };
    else this.ready.push({ lsn, needs: this.applied });
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
      this.base += this.head;
      this.head = 0;
    }
    if (advancedOrigin) this.applied = maxLsn(this.applied, endLsn);
    else this.readyAt(endLsn);
    const done = this.base + this.head;
    let n = 0;
    for (let w = this.waiting[n]; w !== undefined && w.seq <= done; w = this.waiting[++n]) this.readyAt(w.lsn);
    if (n > 0) this.waiting.splice(0, n);
  }

  durableUpTo(lsn: Lsn): void {
    this.durable = maxLsn(this.durable, lsn);
  }

  /**
   * What to confirm now. Never beyond `applied`: the origin's progress is read on another connection
   * and moves inside RecordTransactionCommit, before the applying transaction is visible
   * (ProcArrayEndTransaction comes after), so a durable position read during a commit in flight
   * would release a synchronous committer on the peer before its rows can be read here.
   */
  confirm(): Lsn {
    // In order of position and of what they need: what is confirmable now is a run at the front.
    let n = 0;
    for (let r = this.ready[n]; r !== undefined && r.needs <= this.durable; r = this.ready[++n]) this.idle = maxLsn(this.idle, r.lsn);
    if (n > 0) this.ready.splice(0, n);
    const done = this.durable < this.applied ? this.durable : this.applied;
    this.confirmed = maxLsn(this.confirmed, maxLsn(done, this.idle));
    return this.confirmed;
  }

  /** now − commit time of the oldest received but unapplied transaction; 0 when caught up. */
  lagSeconds(): number {
    const oldest = this.oldestUnapplied ?? this.pending[this.head];
    if (oldest === undefined) return 0;
    return Math.max(0, (this.clock() - pgMicrosToUnixMs(oldest)) / 1000);
  }
}
