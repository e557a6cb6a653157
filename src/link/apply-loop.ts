import type { ApplySession } from '../apply/apply-session.js';
import { conflictLogStatement } from '../apply/conflict-log.js';
import { QUERY_CANCELED, sqlState } from '../apply/error-kind.js';
import { rejectionType } from '../apply/rejected-row.js';
import { OUT_OF_ORDER } from '../apply/apply-procedure-sql.js';
import type { GroupResult, ProcedureApplier, TransactionOutcome } from '../apply/procedure-applier.js';
import type { EncodedGroup } from '../apply/step-encoder.js';
import type { RelationCache } from '../apply/relation-cache.js';
import type { RemoteVersion } from '../apply/statements.js';
import { ConflictHaltError, FastPathFailedError } from '../apply/transaction-applier.js';
import type { BatchOutcome, PreparedBatch, TransactionApplier } from '../apply/transaction-applier.js';
import type { Config } from '../config/config-schema.js';
import type { ConflictRecord } from '../conflict/conflict-types.js';
import { HEARTBEAT_PREFIX, TRACEPARENT_PREFIX } from '../node/names.js';
import { conflictLogger } from '../observability/logger.js';
import type { Logger } from '../observability/logger.js';
import { CHANGE_OPS } from '../observability/metrics.js';
import type { ChangeOp, LinkMetrics } from '../observability/metrics.js';
import { formatLsn, ZERO_LSN } from '../protocol/lsn.js';
import type { Lsn } from '../protocol/lsn.js';
import { formatPgTimestamp, pgMicrosToUnixMs, pgMicrosToUnixSeconds } from '../protocol/pg-time.js';
import type { BeginMessage, ChangeMessage, CommitMessage, LogicalDecodingMessage, StreamCommitMessage } from '../protocol/pgoutput-messages.js';
import type { RemoteTransaction } from '../protocol/remote-transaction.js';
import type { ApplyQueue, EarlyCommit } from './apply-queue.js';
import type { OperatorActions } from './operator-actions.js';
import type { ProgressTracker } from './progress-tracker.js';
import type { TransactionObserver } from './transaction-observer.js';
import { parseHeartbeat } from './transaction-assembler.js';
import { errorMessage } from '../util/error-message.js';

/**
 * The apply stage: takes what the receive stage queued, in order, and commits it on this node.
 *
 * Small transactions that arrive whole go in groups through the apply procedure (one CALL, one local
 * commit each); everything else takes the statement path: multi-row statements per batch of changes,
 * one local transaction per remote one, its COMMIT pipelined behind the next transaction's
 * statements. A transaction the procedure hands back, or fails on, is applied alone on the statement
 * path, which has every rule (a unique violation on another key goes change by change into the dead
 * letters; the error policy halts the link). Either way one transaction commits only after the one
 * before it did: the statement path takes each COMMIT's answer before the next COMMIT is sent, and
 * a CALL checks that the origin's progress is where the transactions before it ended.
 */

/** Most transactions taken from the queue ahead of the CALLs that apply them. */
const MAX_GROUP_TRANSACTIONS = 1000;

/** CALLs sent before the first one's answer: one executing, one ready behind it. */
const MAX_CALLS_IN_FLIGHT = 2;

/**
 * Batches of one transaction sent before the answer of the first of them: one executing, one ready
 * behind it, so that the server does not wait for the agent between batches.
 */
const MAX_BATCHES_AHEAD = 2;

/** Fewer transactions than this wait GATHER_MS for others before a CALL takes them. */
const GATHER_TRANSACTIONS = 50;
const GATHER_MS = 10;

interface InFlight {
  readonly group: EncodedGroup;
  readonly result: Promise<GroupResult>;
  readonly startedAt: number;
}

/** End of the last transaction of the group that commits under the origin (has changes), if any. */
function advancedTo(group: EncodedGroup): Lsn | null {
  for (let i = group.txns.length - 1; i >= 0; i--) if ((group.nsteps[i] ?? 0) > 0) return (group.txns[i] as RemoteTransaction).commit.endLsn;
  return null;
}

/**
 * A failure that one row of the transaction may cause alone (SQLSTATE 23505 on another unique key, a
 * row the schema refuses): the transaction is applied again change by change, each in a savepoint,
 * so that the row is set aside by its policy and the rest applies.
 */
function changeByChange(err: unknown): boolean {
  const code = sqlState(err);
  return code === '23505' || rejectionType(code) !== null;
}

/** The reason of the first of these promises (in order) that rejects, or null when none does. */
async function firstFailure(outcomes: readonly Promise<unknown>[]): Promise<unknown> {
  for (const s of await Promise.allSettled(outcomes)) if (s.status === 'rejected') return s.reason as unknown;
  return null;
}

const OP_OF: Record<ChangeMessage['tag'], ChangeOp> = { insert: 'insert', update: 'update', delete: 'delete', truncate: 'truncate' };

/**
 * The apply loop lost track of where it is (a bug, never expected): the attempt ends, and the next one
 * resumes from the origin's progress, which is always right.
 */
export class ApplyOrderError extends Error {
  readonly code = 'PGBIDI_APPLY_ORDER';
  constructor(message: string) {
    super(message);
    this.name = 'ApplyOrderError';
  }
}

export interface ApplyLoopDeps {
  readonly peer: string;
  /** The peer's committers wait for this node (a synchronous link): no waiting to gather transactions. */
  readonly synchronous: boolean;
  readonly replication: Config['replication'];
  readonly log: Logger;
  readonly metrics: LinkMetrics;
  readonly observer?: TransactionObserver | undefined;
  readonly clock: () => number;
  readonly queue: ApplyQueue;
  readonly progress: ProgressTracker;
  readonly operator: OperatorActions;
  readonly stopping: () => boolean;
  /** Items left the queue: reading may resume. */
  readonly drained: () => void;
  /** Stop (true) or go on (false) reading from the peer while transactions gather (small()). */
  readonly gathering: (on: boolean) => void;
  /** A transaction ending at this position is done (committed, or had nothing to commit). */
  readonly advanced: (endLsn: Lsn) => void;
}

/** The per-attempt pieces apply works with. */
export interface ApplyAttempt {
  readonly session: ApplySession;
  readonly relations: RelationCache;
  readonly statements: TransactionApplier;
  readonly procedure: ProcedureApplier;
  /** The origin's progress when the attempt began. */
  readonly origin: Lsn;
}

type Batch = { table: string; op: ChangeOp; rows: number; startedAtMs: number; endedAtMs: number };

/** The remote transaction open on the statement path. */
interface OpenTransaction {
  readonly begin: BeginMessage;
  readonly version: RemoteVersion;
  readonly startedAt: number;
  readonly begun: Promise<unknown>;
  changes: number;
  readonly applied: Record<ChangeOp, number>;
  readonly conflicts: ConflictRecord[];
  heartbeat: bigint | null;
  traceparent: string | null;
  readonly tables: Set<string>;
  readonly batches: Batch[];
  /** Batches on the wire whose answers are not read yet, oldest first (see TransactionApplier.sendsAhead). */
  readonly ahead: { readonly outcome: Promise<BatchOutcome>; readonly startedAt: number }[];
}

/** A transaction done, as the link accounts for it. */
interface Settled {
  readonly begin: BeginMessage;
  readonly commit: CommitMessage;
  readonly changes: number;
  readonly applied: Record<ChangeOp, number>;
  readonly conflicts: readonly ConflictRecord[];
  readonly tables: Iterable<string>;
  readonly batches: readonly Batch[];
  readonly heartbeat: bigint | null;
  readonly traceparent: string | null;
  readonly startedAt: number;
  readonly committedAt: number;
  /** Committed with an xid, so the origin moved to its end (else processed like a filtered one). */
  readonly advanced: boolean;
}

const NOTHING: TransactionOutcome = { applied: { insert: 0, update: 0, delete: 0, truncate: 0 }, conflicts: [], tables: [], committedAtMs: null };

export class ApplyLoop {
  transactionsApplied = 0;
  changesApplied = 0;
  conflicts = 0;
  lastAppliedCommit: bigint | null = null;
  lastHeartbeat: bigint | null = null;

  /** Transactions (by commit LSN) to apply change by change after a unique violation. */
  private readonly careful = new Set<bigint>();
  /** Large transactions (by commit LSN) whose plain INSERTs failed in a later batch: no fast path. */
  private readonly slow = new Set<bigint>();
  /** The transaction being applied, to attribute a failure to. */
  private current: { readonly begin: BeginMessage; readonly startedAt: number } | null = null;
  private open: OpenTransaction | null = null;
  /** A COMMIT sent on the statement path and not yet answered. */
  private committing: { readonly result: Promise<{ wrote: boolean }>; readonly commit: CommitMessage; readonly txn: OpenTransaction } | null = null;
  /** The origin's progress once everything sent so far has committed. */
  private expected: Lsn = ZERO_LSN;
  /** The streamed transaction applied while it streams (its commit LSN and time come last), while it can go on so. */
  private early: { readonly xid: number; live: boolean } | null = null;
  /** Streamed transactions (by xid) whose early COMMIT failed: spooled until their commit next time. */
  private readonly spoolOnly = new Set<number>();

  /** Conflict lines only (see conflictLogger). */
  private readonly conflictLog: Logger;

  constructor(private readonly deps: ApplyLoopDeps) {
    this.conflictLog = conflictLogger(deps.log);
  }

  /** Applies until the link stops (resolves) or something fails (rejects). */
  async run(a: ApplyAttempt): Promise<void> {
    this.expected = a.origin;
    const { queue, operator } = this.deps;
    for (;;) {
      if (this.deps.stopping() && (this.open === null || queue.commits === 0)) {
        await this.settle();
        if (this.open) await a.session.rollback();
        return;
      }
      if (this.open === null && operator.pendingTasks > 0) {
        await this.settle();
        await operator.runNextTask(a.session, a.relations, a.statements, this.deps.progress.applied);
        continue;
      }
      const item = queue.peek();
      if (!item) {
        await this.settle();
        await queue.wait();
        continue;
      }
      if (item.kind === 'transaction') {
        await this.small(a);
        continue;
      }
      queue.shift();
      switch (item.kind) {
        case 'early-begin':
          this.earlyBegin(a, item.xid);
          break;
        case 'early-changes':
          await this.earlyChanges(a, item.xid, item.changes);
          break;
        case 'early-message':
          if (this.early?.xid === item.xid && this.early.live && this.open) this.message(this.open, item.message);
          break;
        case 'early-abandon':
          if (this.early?.xid === item.xid) await this.earlyStop(a);
          this.early = null;
          break;
        case 'early-commit':
          await this.earlyCommit(a, item.commit, item.outcome);
          break;
        case 'relation':
          a.relations.relation(item.relation);
          break;
        case 'begin':
          this.begin(a, item.begin);
          break;
        case 'changes':
          await this.changes(a, item.changes, item.prepared);
          break;
        case 'message':
          if (this.open) this.message(this.open, item.message);
          break;
        case 'commit':
          await this.commit(a, item.commit);
          break;
      }
      this.deps.drained();
    }
  }

  /**
   * After a failed attempt: a conflict under the error policy halts the link at the transaction; a
   * unique violation on another key sends it change by change next time. Returns whether the next
   * attempt can start at once.
   */
  failed(err: unknown, error: { message: string; code: string | null }): boolean {
    const current = this.current;
    let again = false;
    if (current && err instanceof ConflictHaltError) {
      this.deps.operator.halt({ finalLsn: current.begin.finalLsn, message: err.message, conflicts: err.conflicts });
    } else if (current && err instanceof FastPathFailedError) {
      this.slow.add(current.begin.finalLsn);
      again = true;
    } else if (current && changeByChange(err) && !this.careful.has(current.begin.finalLsn)) {
      this.careful.add(current.begin.finalLsn);
      again = true;
    }
    if (current) {
      this.deps.observer?.failed?.({ peer: this.deps.peer, begin: current.begin, startedAtMs: current.startedAt, failedAtMs: this.deps.clock(), error });
    }
    return again;
  }

  /** Whether streamed transaction `xid` may be applied while it streams (its early COMMIT never failed). */
  earlyAllowed(xid: number): boolean {
    return !this.spoolOnly.has(xid);
  }

  /** The attempt is over: a COMMIT still in flight is durable or not, the next attempt reads the origin. */
  endAttempt(): void {
    this.early = null;
    this.open = null;
    this.committing = null;
    this.current = null;
  }

  // ---- small transactions: the apply procedure ----

  /**
   * Applies the run of whole transactions at the head of the queue through the apply procedure,
   * keeping up to MAX_CALLS_IN_FLIGHT CALLs in flight: the next group is encoded and sent while the
   * server works on the one before, so the server does not wait for the agent. Each CALL checks that
   * the origin is where the one before it ended; when one stops early, those behind it apply nothing
   * (PB003), the transaction it stopped at takes the statement path, and the rest is sent again.
   */
  private async small(a: ApplyAttempt): Promise<void> {
    const { queue, operator } = this.deps;
    const pending: RemoteTransaction[] = [];
    const take = (): void => {
      for (let item = queue.peek(); item?.kind === 'transaction' && pending.length < MAX_GROUP_TRANSACTIONS; item = queue.peek()) {
        pending.push(item.txn);
        queue.shift();
      }
      this.deps.drained();
    };
    const onStatementPath = (t: RemoteTransaction): boolean =>
      this.deps.replication.apply_procedure_max_changes === 0 || this.careful.has(t.begin.finalLsn) || operator.isSkipped(t.begin.finalLsn);
    let inflight: InFlight[] = [];
    let predicted = this.expected;
    for (;;) {
      take();
      // Caught up, a few transactions at a time: let them gather for a moment, since each CALL costs
      // the agent and the server about as much as several small transactions (a CALL with one
      // transaction took ~300 µs of agent CPU and ~200 µs of server CPU more than in a large group).
      // Not on a synchronous link: there every millisecond here is a millisecond of a commit on the peer.
      //
      // Reading stops meanwhile: what the peer sends waits in the socket and is read in one go before
      // the transactions are taken. Read as it came, every transaction woke the agent (an epoll wait,
      // a read, the driver's parse) in between. In W2's live phase on 18 (~1,700-2,200 transactions/s,
      // /proc CPU of the agent) that cost 105 and 115 µs per transaction in two runs; holding the
      // reads, 57, 63 and 72 µs in the three repetitions of a later run (docs/benchmark-history.md).
      if (inflight.length === 0 && pending.length > 0 && pending.length < GATHER_TRANSACTIONS && !this.deps.synchronous && !this.deps.stopping()) {
        this.deps.gathering(true);
        try {
          await new Promise((resolve) => setTimeout(resolve, GATHER_MS));
        } finally {
          this.deps.gathering(false);
        }
        // The socket is read in the event loop's next poll phase, which comes before setImmediate's.
        await new Promise((resolve) => setImmediate(resolve));
        take();
      }
      // A second CALL behind the running one only when it has enough to do; else the transactions
      // wait for the running one and go together.
      while (
        inflight.length < MAX_CALLS_IN_FLIGHT &&
        pending.length > 0 &&
        (inflight.length === 0 || pending.length >= GATHER_TRANSACTIONS) &&
        !this.deps.stopping()
      ) {
        if (onStatementPath(pending[0] as RemoteTransaction)) break;
        let end = 1;
        while (end < pending.length && !onStatementPath(pending[end] as RemoteTransaction)) end++;
        const group = await a.procedure.encode(pending.slice(0, end));
        if (group.txns.length === 0) break;
        if (inflight.length === 0) {
          await this.settle(); // a COMMIT of the statement path in flight: the origin must be known
          predicted = this.expected;
        }
        pending.splice(0, group.txns.length);
        inflight.push(this.send(a, group, predicted));
        predicted = advancedTo(group) ?? predicted;
        take();
      }
      const head = inflight.shift();
      if (!head) {
        const next = pending.shift();
        if (!next || this.deps.stopping()) return; // what is left is received again after a restart
        await this.whole(a, next);
        continue;
      }
      this.current = { begin: (head.group.txns[0] as RemoteTransaction).begin, startedAt: head.startedAt };
      const result = await head.result;
      const stopped = this.committed(head, result);
      if (stopped === null) continue;
      // The CALLs behind the one that stopped found the origin elsewhere than they expected and
      // applied nothing; their transactions are sent again after the one that stopped.
      const behind = inflight;
      inflight = [];
      for (const later of behind) {
        const r = await later.result;
        if (r.committed.length > 0) throw new ApplyOrderError('a CALL behind one that stopped early committed transactions');
      }
      pending.unshift(...head.group.txns.slice(result.committed.length + 1), ...behind.flatMap((f) => f.group.txns));
      await this.whole(a, stopped);
      predicted = this.expected;
    }
  }

  /** Sends one group (a CALL unless it only holds transactions without changes). */
  private send(a: ApplyAttempt, group: EncodedGroup, expected: Lsn): InFlight {
    const startedAt = this.deps.clock();
    const txns = group.txns;
    // The procedure waits out a peer clock that is ahead; the metric and the warning are made here.
    this.clockSkew((txns[txns.length - 1] as RemoteTransaction).commit.commitTime);
    const result = group.nsteps.every((n) => n === 0)
      ? Promise.resolve<GroupResult>({ committed: txns.map(() => NOTHING), size: txns.length, stopped: null })
      : a.procedure.run(group, expected);
    // A CALL behind one that fails is not awaited before the attempt ends: its rejection must not
    // be an unhandled one, which would end the process (Node's default --unhandled-rejections=throw).
    result.catch(() => undefined);
    return { group, result, startedAt };
  }

  /**
   * Accounts for the transactions a CALL committed; returns the transaction it stopped at (to apply
   * on the statement path), or null.
   */
  private committed(f: InFlight, result: GroupResult): RemoteTransaction | null {
    const { group } = f;
    this.deps.progress.resumed();
    let previous = f.startedAt;
    result.committed.forEach((outcome, n) => {
      const t = group.txns[n] as RemoteTransaction;
      const advanced = (group.nsteps[n] ?? 0) > 0;
      if (advanced) this.expected = t.commit.endLsn;
      const committedAt = outcome.committedAtMs ?? this.deps.clock();
      this.accountSmall(t, outcome, Math.min(previous, committedAt), committedAt, advanced);
      previous = committedAt;
    });
    if (!result.stopped) return null;
    const stopped = group.txns[result.committed.length] as RemoteTransaction;
    if (result.stopped.kind === 'error') {
      const err = result.stopped.error;
      // The order guard firing for the first CALL in flight means the agent lost track: restart
      // from the origin's progress.
      if (sqlState(err) === OUT_OF_ORDER) throw err;
      // A stopping link does not try a cancelled transaction again (stop() cuts a drain that takes
      // too long with pg_cancel_backend): it comes again at the next start.
      if (this.deps.stopping() && sqlState(err) === QUERY_CANCELED) throw err;
      if (changeByChange(err)) this.careful.add(stopped.begin.finalLsn);
      this.deps.log.debug(
        { commitLsn: formatLsn(stopped.begin.finalLsn), err: { message: errorMessage(err), code: sqlState(err) } },
        'transaction taken from the apply procedure to the statement path',
      );
    }
    return stopped;
  }

  private accountSmall(t: RemoteTransaction, o: TransactionOutcome, startedAt: number, committedAt: number, advanced: boolean): void {
    this.account({
      begin: t.begin,
      commit: t.commit,
      changes: t.changes.length,
      applied: o.applied,
      conflicts: o.conflicts,
      tables: o.tables,
      // Child spans stand for multi-row statements; inside the procedure a transaction has none of
      // its own (one span per transaction: at tens of thousands per second the spans are the cost).
      batches: [],
      heartbeat: t.heartbeat,
      traceparent: t.traceparent,
      startedAt,
      committedAt,
      advanced,
    });
  }

  /** A transaction received whole, on the statement path. */
  private async whole(a: ApplyAttempt, t: RemoteTransaction): Promise<void> {
    this.begin(a, t.begin);
    const open = this.open as OpenTransaction;
    open.heartbeat = t.heartbeat;
    open.traceparent = t.traceparent;
    const size = this.deps.replication.apply_batch_size;
    for (let i = 0; i < t.changes.length; i += size) await this.changes(a, t.changes.slice(i, i + size), null);
    await this.commit(a, t.commit);
  }

  // ---- a streamed transaction applied while it streams (streamed-transactions.ts, early-apply-feed.ts) ----

  /**
   * Its commit LSN and time are not known before its Stream Commit: the transaction is open under a
   * Begin without them, and its batches go out only when they are plain INSERTs alone (sendsAhead),
   * which use neither.
   */
  private earlyBegin(a: ApplyAttempt, xid: number): void {
    this.begin(a, { tag: 'begin', finalLsn: ZERO_LSN, commitTime: 0n, xid });
    this.early = { xid, live: true };
  }

  private async earlyChanges(a: ApplyAttempt, xid: number, changes: readonly ChangeMessage[]): Promise<void> {
    const open = this.open;
    if (this.early?.xid !== xid || !this.early.live || !open) return;
    const options = { firstInTransaction: open.changes === 0, fast: true };
    const prepared = a.statements.prepare(changes, open.version, options) ?? (await a.statements.prepareLoaded(changes, open.version, options));
    // Anything but plain INSERTs, or a table whose plain INSERTs failed lately: from the spool.
    if (!a.statements.sendsAhead(prepared, options)) return this.earlyStop(a);
    try {
      while (open.ahead.length >= MAX_BATCHES_AHEAD) await this.readAhead(open);
    } catch {
      return this.earlyStop(a); // a plain INSERT failed: a key exists, or a newer delete left a tombstone
    }
    const outcome = a.statements.apply(changes, open.version, { ...options, ahead: true }, prepared);
    outcome.catch(() => undefined);
    open.ahead.push({ outcome, startedAt: this.deps.clock() });
    open.changes += changes.length;
  }

  /** It cannot commit early: what it applied is rolled back, and its commit reads the spool back. */
  private async earlyStop(a: ApplyAttempt): Promise<void> {
    const early = this.early;
    const open = this.open;
    if (!early?.live || !open) return;
    early.live = false;
    this.open = null;
    this.current = null;
    await Promise.allSettled([open.begun, ...open.ahead.map((b) => b.outcome)]);
    await this.settle(); // the COMMIT of the transaction before it, if still in flight
    await a.session.rollback();
    this.deps.log.debug({ xid: early.xid, changes: open.changes }, 'streamed transaction rolled back: it is applied at its commit instead');
  }

  /**
   * Its Stream Commit: every batch's answer is read first; when all applied, the transaction takes
   * its commit LSN and time and commits like any other (origin set up with them right before the
   * COMMIT), and its spooled copy is dropped. Otherwise it is rolled back and the spool read back.
   */
  private async earlyCommit(a: ApplyAttempt, c: StreamCommitMessage, outcome: EarlyCommit): Promise<void> {
    const early = this.early;
    const open = this.open;
    if (early?.xid !== c.xid || !early.live || !open) {
      this.early = null;
      outcome.done(false);
      return;
    }
    let applied = true;
    try {
      await this.readAllAhead(open);
    } catch {
      applied = false;
    }
    if (!applied || this.deps.operator.isSkipped(c.commitLsn)) {
      await this.earlyStop(a);
      this.early = null;
      outcome.done(false);
      return;
    }
    this.early = null;
    const begin: BeginMessage = { tag: 'begin', finalLsn: c.commitLsn, commitTime: c.commitTime, xid: c.xid };
    this.open = { ...open, begin, version: { commitTimestamp: formatPgTimestamp(c.commitTime), node: this.deps.peer } };
    this.current = { begin, startedAt: open.startedAt };
    outcome.committing();
    await this.commit(a, { tag: 'commit', flags: c.flags, commitLsn: c.commitLsn, endLsn: c.endLsn, commitTime: c.commitTime });
    try {
      await this.settle();
    } catch (err) {
      // The attempt ends here and the transaction comes again: from the spool this time.
      this.spoolOnly.add(c.xid);
      throw err;
    }
    this.deps.log.debug({ xid: c.xid, commitLsn: formatLsn(c.commitLsn), changes: open.changes }, 'streamed transaction applied while it streamed');
    outcome.done(true);
  }

  // ---- the statement path ----

  private begin(a: ApplyAttempt, begin: BeginMessage): void {
    if (this.open) throw new ApplyOrderError('a transaction begins inside another');
    const begun = a.session.begin();
    begun.catch(() => undefined);
    const startedAt = this.deps.clock();
    this.open = {
      begin,
      version: { commitTimestamp: formatPgTimestamp(begin.commitTime), node: this.deps.peer },
      startedAt,
      begun,
      changes: 0,
      applied: { insert: 0, update: 0, delete: 0, truncate: 0 },
      conflicts: [],
      heartbeat: null,
      traceparent: null,
      tables: new Set(),
      batches: [],
      ahead: [],
    };
    this.current = { begin, startedAt };
    this.deps.progress.resumed();
  }

  private message(open: OpenTransaction, m: LogicalDecodingMessage): void {
    if (m.prefix === HEARTBEAT_PREFIX) open.heartbeat = parseHeartbeat(m) ?? open.heartbeat;
    else if (m.prefix === TRACEPARENT_PREFIX) open.traceparent = m.content.toString('utf8');
  }

  private async changes(a: ApplyAttempt, changes: readonly ChangeMessage[], prepared: PreparedBatch | null): Promise<void> {
    const open = this.open;
    if (!open) throw new ApplyOrderError('changes outside a transaction');
    const finalLsn = open.begin.finalLsn;
    if (this.deps.operator.isSkipped(finalLsn)) {
      for (const c of changes) this.deps.metrics.filtered(OP_OF[c.tag], 'operator_skip');
      return;
    }
    const started = this.deps.clock();
    const options = { firstInTransaction: open.changes === 0, fast: !this.slow.has(finalLsn) };
    if (!this.careful.has(finalLsn) && a.statements.sendsAhead(prepared, options)) {
      // Nothing in this batch needs an answer before what follows it: its statements go out now,
      // and its answer is read before the next batch that needs answers, or after its transaction's
      // COMMIT (settle). A failure aborts the transaction: the batches behind it apply nothing and
      // its COMMIT answers ROLLBACK, which settle() reports with the failure that caused it.
      while (open.ahead.length >= MAX_BATCHES_AHEAD) await this.readAhead(open);
      const outcome = a.statements.apply(changes, open.version, { ...options, ahead: true }, prepared);
      outcome.catch(() => undefined);
      open.ahead.push({ outcome, startedAt: started });
      open.changes += changes.length;
      return;
    }
    await this.readAllAhead(open);
    let outcome;
    if (this.careful.has(finalLsn)) {
      await this.settle();
      outcome = await a.statements.applyCarefully(changes, open.version, { peer: this.deps.peer, commitLsn: formatLsn(finalLsn) });
    } else {
      outcome = await a.statements.apply(changes, open.version, options, prepared);
    }
    open.changes += changes.length;
    this.accountBatch(open, outcome, started);
  }

  /** Reads the answer of the oldest batch sent ahead (its failure is the transaction's). */
  private async readAhead(open: OpenTransaction): Promise<void> {
    const next = open.ahead.shift();
    if (next) this.accountBatch(open, await next.outcome, next.startedAt);
  }

  private async readAllAhead(open: OpenTransaction): Promise<void> {
    while (open.ahead.length > 0) await this.readAhead(open);
  }

  private accountBatch(open: OpenTransaction, outcome: BatchOutcome, started: number): void {
    const ended = this.deps.clock();
    const finalLsn = open.begin.finalLsn;
    for (const r of outcome.runs) open.batches.push({ ...r, startedAtMs: started, endedAtMs: ended });
    open.conflicts.push(...outcome.conflicts);
    for (const r of outcome.rejected ?? []) {
      this.deps.metrics.rowRejected(`${r.schema}.${r.table}`, r.type);
      this.deps.log.warn(
        { table: `${r.schema}.${r.table}`, column: r.column, key: r.key, sqlstate: r.sqlstate, constraint: r.constraint, commitLsn: formatLsn(finalLsn) },
        `remote row set aside as a dead letter: ${r.reason}`,
      );
    }
    for (const t of outcome.tables) open.tables.add(t);
    for (const op of CHANGE_OPS) open.applied[op] += outcome.applied[op];
  }

  private async commit(a: ApplyAttempt, commit: CommitMessage): Promise<void> {
    const open = this.open;
    if (!open) throw new ApplyOrderError('commit outside a transaction');
    // One COMMIT at a time in flight: the one before settles before this one is sent.
    await this.settle();
    if (open.conflicts.length) await a.session.run(conflictLogStatement(this.deps.peer, open.conflicts, commit.commitLsn));
    await this.waitForClock(commit.commitTime);
    await open.begun;
    if (this.deps.operator.isSkipped(open.begin.finalLsn)) await this.deps.operator.recordSkip(a.session, commit.commitLsn);
    // Not awaited here: the next transaction's statements go out behind the COMMIT, and its answer
    // is taken (settle) before anything depends on it: before the next COMMIT or CALL is sent (so a
    // transaction never commits after one that failed), before the loop idles or stops, and before
    // any other use of the session.
    const result = a.session.commit(commit.endLsn, open.version.commitTimestamp);
    result.catch(() => undefined);
    this.committing = { result, commit, txn: open };
    this.open = null;
  }

  /** Waits for the COMMIT in flight, if any, and accounts for the transaction it committed. */
  private async settle(): Promise<void> {
    const pending = this.committing;
    if (!pending) return;
    this.committing = null;
    const { commit, txn } = pending;
    const ahead = txn.ahead.map((b) => b.outcome);
    let wrote: boolean;
    try {
      ({ wrote } = await pending.result);
      // Batches sent ahead of their answers came before the COMMIT, so they are answered too.
      await this.readAllAhead(txn);
    } catch (err) {
      // The failure belongs to this transaction, not to the one that may have begun since; when a
      // batch sent ahead failed, the COMMIT only found the transaction aborted: that batch's failure
      // is the cause (a failed plain INSERT asks for the transaction again without the fast path).
      this.current = { begin: txn.begin, startedAt: txn.startedAt };
      throw (await firstFailure(ahead)) ?? err;
    }
    // Only a transaction that wrote advanced the origin; one that wrote nothing (a heartbeat, or
    // changes that all lost) is processed like a filtered one, or the peer would keep its WAL.
    if (wrote) this.expected = commit.endLsn;
    this.account({ ...txn, commit, committedAt: this.deps.clock(), advanced: wrote });
    this.careful.delete(txn.begin.finalLsn);
    this.slow.delete(txn.begin.finalLsn);
    this.deps.operator.skipDone(txn.begin.finalLsn);
  }

  /** The bookkeeping of one done transaction: positions, counters, metrics, its span, its conflicts. */
  private account(x: Settled): void {
    const { metrics, progress } = this.deps;
    progress.applyDone(x.commit.endLsn, x.advanced);
    this.transactionsApplied++;
    this.lastAppliedCommit = x.commit.commitTime;
    if (x.heartbeat !== null) {
      this.lastHeartbeat = x.heartbeat;
      metrics.heartbeat(pgMicrosToUnixSeconds(x.heartbeat));
    }
    const traceId = this.deps.observer?.applied({
      peer: this.deps.peer,
      begin: x.begin,
      endLsn: x.commit.endLsn,
      changes: x.changes,
      conflicts: x.conflicts,
      startedAtMs: x.startedAt,
      committedAtMs: x.committedAt,
      traceparent: x.traceparent,
      batches: x.batches,
    });
    const commitMs = pgMicrosToUnixMs(x.commit.commitTime);
    metrics.transactionApplied({
      commitUnixSeconds: commitMs / 1000,
      delaySeconds: (x.committedAt - commitMs) / 1000,
      durationSeconds: (x.committedAt - x.startedAt) / 1000,
      changes: x.changes,
      ...(traceId ? { traceId } : {}),
    });
    for (const op of CHANGE_OPS) {
      const n = x.applied[op];
      if (n > 0) {
        metrics.applied(op, n);
        this.changesApplied += n;
      }
    }
    for (const t of x.tables) metrics.table(t);
    for (const c of x.conflicts) {
      this.conflicts++;
      metrics.conflict(`${c.schema}.${c.table}`, c.type, c.resolution);
      this.conflictLog.warn(
        {
          conflict: c.type,
          resolution: c.resolution,
          table: `${c.schema}.${c.table}`,
          key: c.key,
          remoteCommitTs: c.remoteCommitTimestamp,
          remoteNode: c.remoteNode,
          remoteCommitLsn: formatLsn(x.commit.commitLsn),
        },
        'conflict',
      );
    }
    metrics.appliedPosition(progress.applied);
    this.deps.advanced(x.commit.endLsn);
    if (this.current?.begin === x.begin) this.current = null;
  }

  /** How far the peer's commit time is ahead of the local clock (ms); counted and warned about. */
  private clockSkew(commitTime: bigint): number {
    const aheadMs = pgMicrosToUnixMs(commitTime) - this.deps.clock();
    const exceeded = aheadMs > this.deps.replication.max_clock_skew_ms;
    this.deps.metrics.clockSkew(aheadMs / 1000, exceeded);
    if (exceeded) this.deps.log.warn({ aheadMs }, 'peer clock is ahead of this node beyond max_clock_skew_ms; waiting');
    return aheadMs;
  }

  /**
   * Clock-skew rule (PGD's maximum_clock_skew_action = WAIT): an applied transaction must not commit
   * before the local clock has passed its remote commit time, or a later local write could get an
   * older version than the row it overwrites and lose under last-update-wins.
   */
  private async waitForClock(commitTime: bigint): Promise<void> {
    const aheadMs = this.clockSkew(commitTime);
    if (aheadMs > 0) await new Promise((resolve) => setTimeout(resolve, aheadMs + 1));
  }
}
