/**
 * One directed link: a peer's changes applied to this node.
 *
 *            start()                      streaming ok
 *   stopped ────────► connecting ───────────────────────► streaming ◄──► paused (backpressure)
 *      ▲                  ▲   │ failure                      │ failure
 *      │                  │   ▼                              ▼
 *      │   delay elapsed  └─ backoff ◄───────────────────────┘
 *      └──────────────── stop() from any state (drain, final feedback)
 *
 * Pipeline: replication connection → (synchronous decode, order check, loop filter, batching) →
 * ApplyQueue → applier (one local transaction per remote transaction, bound to the peer's origin).
 * Progress is only ever confirmed from the local origin's flushed position, never on receipt.
 */
import pg from 'pg';
import type { Config, PeerConfig } from '../config/config-schema.js';
import { redactSecrets } from '../config/redact.js';
import type { ConflictRecord } from '../conflict/conflict-types.js';
import { ApplySession } from '../apply/apply-session.js';
import { errorKind, sqlState } from '../apply/error-kind.js';
import { ConflictHaltError, TransactionApplier } from '../apply/transaction-applier.js';
import { loadChange } from '../apply/dead-letter.js';
import type { StoredChange } from '../apply/dead-letter.js';
import { tablePolicy } from '../conflict/table-policies.js';
import type { RemoteVersion } from '../apply/statements.js';
import { applicationName, HEARTBEAT_PREFIX, METADATA_SCHEMA, originName, slotName } from '../node/names.js';
import type { Logger } from '../observability/logger.js';
import type { LinkMetrics, LinkState, ChangeOp } from '../observability/metrics.js';
import { formatLsn, maxLsn, parseLsn, ZERO_LSN } from '../protocol/lsn.js';
import type { Lsn } from '../protocol/lsn.js';
import { formatPgTimestamp, nowPgMicros, pgMicrosToUnixMs, pgMicrosToUnixSeconds } from '../protocol/pg-time.js';
import type { BeginMessage, ChangeMessage, CommitMessage, LogicalDecodingMessage } from '../protocol/pgoutput-messages.js';
import type { ReplicationMessage } from '../protocol/replication-messages.js';
import { TransactionSequencer } from '../protocol/transaction-sequencer.js';
import { ReplicationConnection } from '../source/replication-connection.js';
import { ApplyQueue } from './apply-queue.js';
import { Backoff } from './backoff.js';

export class LinkNotStreamingError extends Error {
  readonly code = 'PGBIDI_LINK_NOT_STREAMING';
  constructor(peer: string, state: string) {
    super(`the link from ${peer} is ${state}; it must be streaming to retry a dead letter`);
    this.name = 'LinkNotStreamingError';
  }
}

export interface LinkStatus {
  readonly peer: string;
  readonly state: LinkState;
  readonly slot: string;
  readonly origin: string;
  readonly peerServerVersionNum: number;
  readonly receivedLsn: string;
  readonly appliedLsn: string;
  readonly confirmedLsn: string;
  readonly lagSeconds: number;
  readonly lastAppliedCommitTime: string | null;
  readonly lastHeartbeatTime: string | null;
  readonly queuedChanges: number;
  readonly transactionsApplied: number;
  readonly transactionsFiltered: number;
  /** Row changes written on this node (inserts, updates, deletes, truncates). */
  readonly changesApplied: number;
  readonly conflicts: number;
  readonly reconnects: number;
  readonly lastError: { readonly message: string; readonly code: string | null; readonly at: string } | null;
  /** Set while the link waits for an operator (`pgbidi resolve`) after a conflict under the error policy. */
  readonly haltedAt: { readonly commitLsn: string; readonly conflict: string } | null;
}

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
    /** The multi-row statements of the transaction, per batch of changes, with the batch's times. */
    batches: readonly { table: string; op: ChangeOp; rows: number; startedAtMs: number; endedAtMs: number }[];
  }): string | undefined;
  /** A transaction that failed to apply (it rolled back; the link retries it). */
  failed?(t: { peer: string; begin: BeginMessage; startedAtMs: number; failedAtMs: number; error: { message: string; code: string | null } }): void;
}

interface AdminTask {
  readonly deadLetterId: number;
  readonly done: (r: DeadLetterRetry) => void;
  readonly failed: (err: unknown) => void;
}

export interface DeadLetterRetry {
  readonly id: number;
  readonly outcome: 'applied' | 'still_conflicting' | 'not_pending';
  readonly message?: string;
}

export interface LinkDeps {
  readonly config: Config;
  readonly peer: PeerConfig;
  readonly log: Logger;
  readonly metrics: LinkMetrics;
  readonly observer?: TransactionObserver;
  readonly clock?: () => number;
}

const OP_OF: Record<ChangeMessage['tag'], ChangeOp> = { insert: 'insert', update: 'update', delete: 'delete', truncate: 'truncate' };

/** The remote transaction being applied, as the apply loop accounts for it. */
interface OpenTransaction {
  begin: BeginMessage;
  version: RemoteVersion;
  startedAt: number;
  changes: number;
  conflicts: ConflictRecord[];
  heartbeat: bigint | null;
  traceparent: string | null;
  tables: Set<string>;
  batches: { table: string; op: ChangeOp; rows: number; startedAtMs: number; endedAtMs: number }[];
}

export class Link {
  private state: LinkState = 'stopped';
  private readonly slot: string;
  private readonly origin: string;
  private readonly backoff: Backoff;
  private readonly queue = new ApplyQueue();
  private readonly clock: () => number;
  private stopping = false;
  private runPromise: Promise<void> | null = null;
  private wakeBackoff: (() => void) | null = null;

  // Per-attempt resources.
  private replication: ReplicationConnection | null = null;
  private session: ApplySession | null = null;
  private control: pg.Client | null = null;
  private applier: TransactionApplier | null = null;
  private attemptFailed: ((err: unknown) => void) | null = null;

  // Receive side (per attempt).
  private sequencer = new TransactionSequencer();
  private pendingBegin: BeginMessage | null = null;
  /** The transaction being received (its Begin was queued), for building batches ahead. */
  private receivingBegin: BeginMessage | null = null;
  private batchesInTransaction = 0;
  /** Relation messages queued but not yet handed to the applier. */
  private relationsQueued = 0;
  private skipping = false;
  private batch: ChangeMessage[] = [];
  private receiving = false;

  // Positions.
  private receivedLsn: Lsn = ZERO_LSN;
  private appliedLsn: Lsn = ZERO_LSN;
  private durableLsn: Lsn = ZERO_LSN;
  private confirmedLsn: Lsn = ZERO_LSN;
  private idleLsn: Lsn = ZERO_LSN;
  private applying = false;
  /** Commit times of received transactions not yet applied, oldest first (lag survives reconnects). */
  private pendingCommitTimes: bigint[] = [];
  private oldestUnapplied: bigint | null = null;

  // Status.
  private peerVersion = 0;
  private lastAppliedCommit: bigint | null = null;
  private lastHeartbeat: bigint | null = null;
  private applied = 0;
  private filtered = 0;
  private changesApplied = 0;
  private conflictCount = 0;
  private reconnects = 0;
  private lastError: LinkStatus['lastError'] = null;

  // Conflict handling across attempts.
  /** Transactions (by commit LSN) to apply change by change after a unique violation. */
  private readonly carefulTxns = new Set<bigint>();
  /** The transaction being applied (by commit LSN), for error handling. */
  private openFinalLsn: bigint | null = null;
  /** Its Begin and start time, for the error span of a failed transaction. */
  private openBegin: { begin: BeginMessage; startedAt: number } | null = null;
  /** A transaction halted by the error policy, waiting for `resolve()`. */
  private halted: { finalLsn: bigint; message: string; conflicts: readonly ConflictRecord[] } | null = null;
  /** The conflicts of a transaction the operator skipped, recorded when it commits. */
  private skippedConflicts: readonly ConflictRecord[] = [];
  private resolution: ((action: 'retry' | 'skip') => void) | null = null;
  /** A halted transaction the operator chose to skip: applied empty, so that progress moves past it. */
  private skipFinalLsn: bigint | null = null;
  /** Operator requests run by the apply loop between transactions (they need the origin session). */
  private readonly adminTasks: AdminTask[] = [];
  /** Serializes the control connection (feedback, heartbeats): pg runs one query at a time. */
  private controlChain: Promise<unknown> = Promise.resolve();

  constructor(private readonly deps: LinkDeps) {
    this.slot = slotName(deps.peer.name, deps.config.node.name);
    this.origin = originName(deps.peer.name);
    const r = deps.config.replication.reconnect;
    this.backoff = new Backoff(r.initial_delay_ms, r.max_delay_ms);
    this.clock = deps.clock ?? Date.now;
  }

  get peer(): string {
    return this.deps.peer.name;
  }

  start(): void {
    if (this.runPromise) return;
    this.stopping = false;
    this.runPromise = this.loop();
  }

  /** Drains: the open transaction commits if it was fully received, else rolls back; then final feedback. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.wakeBackoff?.();
    this.queue.wake();
    await this.runPromise;
    this.runPromise = null;
    this.setState('stopped');
  }

  status(): LinkStatus {
    return {
      peer: this.peer,
      state: this.state,
      slot: this.slot,
      origin: this.origin,
      peerServerVersionNum: this.peerVersion,
      receivedLsn: formatLsn(this.receivedLsn),
      appliedLsn: formatLsn(this.appliedLsn),
      confirmedLsn: formatLsn(this.confirmedLsn),
      lagSeconds: this.lagSeconds(),
      lastAppliedCommitTime: this.lastAppliedCommit === null ? null : new Date(pgMicrosToUnixMs(this.lastAppliedCommit)).toISOString(),
      lastHeartbeatTime: this.lastHeartbeat === null ? null : new Date(pgMicrosToUnixMs(this.lastHeartbeat)).toISOString(),
      queuedChanges: this.queue.changes + this.batch.length,
      transactionsApplied: this.applied,
      transactionsFiltered: this.filtered,
      changesApplied: this.changesApplied,
      conflicts: this.conflictCount,
      reconnects: this.reconnects,
      lastError: this.lastError,
      haltedAt: this.halted ? { commitLsn: formatLsn(this.halted.finalLsn), conflict: this.halted.message } : null,
    };
  }

  /** Peer commit time of the last applied transaction (µs since 2000), null before the first one. */
  lastAppliedCommitMicros(): bigint | null {
    return this.lastAppliedCommit;
  }

  /** now − commit time of the oldest received but unapplied transaction; 0 when caught up. */
  lagSeconds(): number {
    const oldest = this.oldestUnapplied ?? this.pendingCommitTimes[0];
    if (oldest === undefined || oldest === null) return 0;
    return Math.max(0, (this.clock() - pgMicrosToUnixMs(oldest)) / 1000);
  }

  private setState(s: LinkState): void {
    if (this.state === s) return;
    this.state = s;
    this.deps.metrics.state(s);
    this.deps.log.info({ state: s }, 'link state');
  }

  private async loop(): Promise<void> {
    while (!this.stopping) {
      this.setState('connecting');
      try {
        await this.attempt();
      } catch (err) {
        this.recordError(err);
      }
      await this.teardown();
      if (this.stopping) break;
      if (this.halted) {
        this.setState('error');
        const action = await new Promise<'retry' | 'skip' | 'stop'>((resolve) => {
          this.resolution = resolve;
          this.wakeBackoff = () => resolve('stop');
        });
        this.resolution = null;
        this.wakeBackoff = null;
        if (action === 'stop') break;
        this.deps.log.warn({ action, commitLsn: formatLsn(this.halted.finalLsn) }, 'operator resolved a halted transaction');
        if (action === 'skip') {
          this.skipFinalLsn = this.halted.finalLsn;
          this.skippedConflicts = this.halted.conflicts;
        }
        this.halted = null;
        this.backoff.reset();
        continue;
      }
      this.setState('backoff');
      this.reconnects++;
      this.deps.metrics.reconnect();
      const delay = this.backoff.next();
      this.deps.log.info({ delayMs: delay }, 'reconnecting after backoff');
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, delay);
        this.wakeBackoff = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.wakeBackoff = null;
    }
  }

  /**
   * The operator's decision on a transaction halted by the error policy: apply it again (after fixing
   * the data) or skip it (it is committed empty, so the skip is durable and recorded).
   */
  resolve(action: 'retry' | 'skip'): boolean {
    if (!this.resolution) return false;
    this.resolution(action);
    return true;
  }

  /** Queues a dead letter of this link for another attempt; resolves with the outcome. */
  retryDeadLetterById(id: number): Promise<DeadLetterRetry> {
    if (this.state !== 'streaming' && this.state !== 'paused') {
      return Promise.reject(new LinkNotStreamingError(this.peer, this.state));
    }
    return new Promise((done, failed) => {
      this.adminTasks.push({ deadLetterId: id, done, failed });
      this.queue.wake();
    });
  }

  /**
   * Applies a stored change again under its original version (remote commit time, origin node), in a
   * transaction of its own on the origin session: origin progress stays where it is, and the row is
   * not replicated back (it carries the peer's origin).
   */
  private async retryDeadLetter(session: ApplySession, applier: TransactionApplier, task: AdminTask): Promise<void> {
    try {
      await session.begin();
      const r = await session.pg.query<{ change: StoredChange; ts: string }>(
        `SELECT change, remote_commit_ts::text AS ts FROM ${METADATA_SCHEMA}.dead_letters WHERE id = $1 AND peer = $2 AND status = 'pending' FOR UPDATE`,
        [task.deadLetterId, this.peer],
      );
      const row = r.rows[0];
      if (!row) {
        await session.rollback();
        task.done({ id: task.deadLetterId, outcome: 'not_pending' });
        return;
      }
      // A relation id no peer uses (pgoutput ids are positive OIDs).
      const { relation, change } = loadChange(row.change, -task.deadLetterId);
      applier.relation(relation);
      const version = { commitTimestamp: row.ts, node: this.peer };
      await session.pg.query('SAVEPOINT pgbidi_retry');
      let result: DeadLetterRetry;
      try {
        await applier.apply([change], version);
        await session.pg.query('RELEASE SAVEPOINT pgbidi_retry');
        result = { id: task.deadLetterId, outcome: 'applied' };
      } catch (err) {
        if (sqlState(err) !== '23505') throw err;
        await session.pg.query('ROLLBACK TO SAVEPOINT pgbidi_retry');
        result = { id: task.deadLetterId, outcome: 'still_conflicting', message: (err as Error).message };
      }
      await session.pg.query(
        `UPDATE ${METADATA_SCHEMA}.dead_letters SET attempts = attempts + 1, last_attempt_at = now(),
                status = CASE WHEN $2 THEN 'applied' ELSE status END WHERE id = $1`,
        [task.deadLetterId, result.outcome === 'applied'],
      );
      await session.commit(this.appliedLsn, row.ts);
      this.deps.log.info({ deadLetter: task.deadLetterId, outcome: result.outcome }, 'dead letter retried');
      task.done(result);
    } catch (err) {
      task.failed(err);
      throw err;
    }
  }

  private recordError(err: unknown): void {
    if (err instanceof ConflictHaltError && this.openFinalLsn !== null) {
      this.halted = { finalLsn: this.openFinalLsn, message: err.message, conflicts: err.conflicts };
    } else if (sqlState(err) === '23505' && this.openFinalLsn !== null && !this.carefulTxns.has(this.openFinalLsn)) {
      // A unique constraint other than the key: retry this transaction change by change.
      this.carefulTxns.add(this.openFinalLsn);
      this.backoff.reset();
    }
    const message = redactSecrets(err instanceof Error ? err.message : String(err));
    const code = sqlState(err) ?? ((err as { code?: unknown } | null)?.code as string | undefined) ?? null;
    this.lastError = { message, code: typeof code === 'string' ? code : null, at: new Date(this.clock()).toISOString() };
    if (this.openBegin) {
      this.deps.observer?.failed?.({
        peer: this.peer,
        begin: this.openBegin.begin,
        startedAtMs: this.openBegin.startedAt,
        failedAtMs: this.clock(),
        error: { message, code: this.lastError.code },
      });
    }
    this.deps.metrics.applyError(errorKind(err));
    this.deps.log.error({ err: { message, code } }, 'link failed');
  }

  /** One connection attempt; resolves when stopping, rejects on any failure. */
  private async attempt(): Promise<void> {
    const { config, peer, log } = this.deps;
    let fail!: (err: unknown) => void;
    const failed = new Promise<never>((_, reject) => {
      fail = reject;
    });
    failed.catch(() => undefined);
    this.attemptFailed = fail;
    const onConnError = (err: Error): void => fail(err);

    this.control = new pg.Client({ connectionString: config.node.dsn, application_name: `pgbidi_${config.node.name}_control` });
    this.control.on('error', onConnError);
    await this.control.connect();

    this.session = new ApplySession({
      dsn: config.node.dsn,
      origin: this.origin,
      applicationName: applicationName(peer.name, config.node.name),
      statementTimeoutMs: config.replication.statement_timeout_ms,
    });
    const startLsn = await this.session.connect(onConnError);
    this.applier = new TransactionApplier(this.session, (table) => tablePolicy(config.conflicts, table), config.peers.length > 1);
    await this.applier.ready();
    this.appliedLsn = maxLsn(this.appliedLsn, startLsn);
    this.durableLsn = startLsn;

    this.replication = new ReplicationConnection({
      dsn: peer.dsn,
      applicationName: applicationName(peer.name, config.node.name),
      slot: this.slot,
      publication: config.replication.publication,
    });
    await this.replication.connect(onConnError);
    this.peerVersion = this.replication.serverVersionNum;
    const slot = await this.replication.ensureSlot();
    if (slot === 'created') log.warn({ slot: this.slot }, 'created the missing slot on the peer: changes before now are not replicated');

    this.resetReceiver();
    const streaming = this.replication.start({
      startLsn,
      onMessage: (m) => {
        try {
          this.receive(m);
        } catch (err) {
          fail(err);
        }
      },
      onError: fail,
    });
    streaming.then(
      () => {
        if (!this.stopping) fail(new Error('the peer ended the replication stream'));
      },
      fail,
    );
    log.info({ startLsn: formatLsn(startLsn), peerVersion: this.peerVersion }, 'streaming');
    this.setState('streaming');

    const feedback = setInterval(() => void this.onControl(() => this.feedback()).catch(fail), config.replication.feedback_interval_ms);
    const heartbeat = setInterval(() => void this.onControl(() => this.emitHeartbeat()).catch(fail), config.replication.heartbeat_interval_ms);
    try {
      await Promise.race([this.applyLoop(), failed]);
      // Stopping: the apply loop has drained; confirm what is durable before closing the stream.
      await this.onControl(() => this.feedback());
    } finally {
      clearInterval(feedback);
      clearInterval(heartbeat);
    }
  }

  private resetReceiver(): void {
    this.sequencer = new TransactionSequencer();
    this.receivingBegin = null;
    this.batchesInTransaction = 0;
    this.relationsQueued = 0;
    this.pendingBegin = null;
    this.skipping = false;
    this.batch = [];
    this.receiving = false;
    this.queue.clear();
    this.pendingCommitTimes = [];
    this.applying = false;
  }

  private async teardown(): Promise<void> {
    this.attemptFailed = null;
    // A COMMIT still in flight is durable or not; the next attempt starts from the origin's progress.
    this.committing = null;
    this.openFinalLsn = null;
    this.openBegin = null;
    const replication = this.replication;
    const session = this.session;
    const control = this.control;
    this.replication = null;
    this.session = null;
    this.control = null;
    this.applier = null;
    if (this.stopping) await replication?.stop();
    else replication?.destroy();
    await session?.close(); // an open transaction rolls back with the session
    await control?.end().catch(() => undefined);
    this.oldestUnapplied = this.pendingCommitTimes[0] ?? this.oldestUnapplied;
  }

  // ---- receive side: synchronous, runs inside the copyData callback ----

  private receive(m: ReplicationMessage): void {
    if (m.kind === 'keepalive') {
      this.receivedLsn = maxLsn(this.receivedLsn, m.walEnd);
      if (!this.receiving) this.idleLsn = maxLsn(this.idleLsn, m.walEnd);
      if (m.replyRequested) void this.onControl(() => this.feedback()).catch((err) => this.attemptFailed?.(err));
      return;
    }
    this.deps.metrics.receivedBytes(m.byteLength);
    const msg = m.message;
    this.sequencer.accept(msg);
    switch (msg.tag) {
      case 'begin':
        this.receiving = true;
        this.pendingBegin = msg;
        this.skipping = false;
        return;
      case 'origin':
        // PostgreSQL 15 has no origin filter: a transaction that carries an Origin message was applied
        // on the peer by some replication origin (pgoutput_send_begin → send_repl_origin). Full mesh:
        // every node hears every other node directly, so nothing replicated is forwarded.
        this.skipping = true;
        this.pendingBegin = null;
        return;
      case 'relation':
        this.forwardBegin();
        this.flushBatch();
        this.relationsQueued++;
        this.queue.push({ kind: 'relation', relation: msg });
        return;
      case 'type':
        return; // values are text and cast by local type names; nothing to map
      case 'insert':
      case 'update':
      case 'delete':
      case 'truncate': {
        const op = OP_OF[msg.tag];
        this.deps.metrics.received(op);
        if (this.skipping) {
          this.deps.metrics.filtered(op, 'origin');
          return;
        }
        this.forwardBegin();
        this.batch.push(msg);
        if (this.batch.length >= this.deps.config.replication.apply_batch_size) this.flushBatch();
        return;
      }
      case 'message':
        if (!msg.transactional) return;
        if (this.skipping) return;
        this.forwardBegin();
        this.flushBatch();
        this.queue.push({ kind: 'message', message: msg });
        return;
      case 'commit':
        this.receiving = false;
        this.receivedLsn = maxLsn(this.receivedLsn, msg.endLsn);
        this.deps.metrics.positions({ received: this.receivedLsn });
        if (this.skipping || this.pendingBegin) {
          // Filtered by origin, or nothing in it to apply: processed, nothing to write.
          if (this.skipping) {
            this.filtered++;
            this.deps.metrics.transactionFiltered('origin');
          }
          this.pendingBegin = null;
          this.skipping = false;
          if (this.queue.length === 0 && !this.applying) this.idleLsn = maxLsn(this.idleLsn, msg.endLsn);
          return;
        }
        this.flushBatch();
        this.queue.push({ kind: 'commit', commit: msg });
        this.backpressure();
        return;
    }
  }

  private forwardBegin(): void {
    const begin = this.pendingBegin;
    if (!begin) return;
    this.pendingBegin = null;
    this.receivingBegin = begin;
    this.batchesInTransaction = 0;
    this.pendingCommitTimes.push(begin.commitTime);
    this.queue.push({ kind: 'begin', begin });
  }

  private flushBatch(): void {
    if (this.batch.length === 0) return;
    // Built here, while the apply loop waits for the server on the batch before, unless a Relation
    // message is still queued (the applier's mappings would be older than this batch).
    const begin = this.receivingBegin;
    const prepared =
      this.relationsQueued === 0 && begin && this.applier
        ? this.applier.prepare(this.batch, { commitTimestamp: formatPgTimestamp(begin.commitTime), node: this.peer }, { firstInTransaction: this.batchesInTransaction === 0 })
        : null;
    this.batchesInTransaction++;
    this.queue.push({ kind: 'changes', changes: this.batch, prepared });
    this.batch = [];
    this.backpressure();
  }

  private backpressure(): void {
    const max = this.deps.config.replication.max_queued_changes;
    this.deps.metrics.queue(this.queue.changes, max);
    if (this.state === 'streaming' && this.queue.changes >= max) {
      this.replication?.pause();
      this.setState('paused');
    } else if (this.state === 'paused' && this.queue.changes <= max / 2) {
      this.replication?.resume();
      this.setState('streaming');
    }
  }

  // ---- apply side ----

  /** A COMMIT sent and not yet answered (see the 'commit' case of applyLoop). */
  private committing: { result: Promise<{ wrote: boolean }>; commit: CommitMessage; txn: OpenTransaction } | null = null;

  /** Waits for the COMMIT in flight, if any, and accounts for the transaction it committed. */
  private async settleCommit(): Promise<void> {
    const pending = this.committing;
    if (!pending) return;
    this.committing = null;
    const { commit, txn } = pending;
    let wrote: boolean;
    try {
      ({ wrote } = await pending.result);
    } catch (err) {
      // The failure belongs to this transaction, not to the one that may have begun since.
      this.openFinalLsn = txn.begin.finalLsn;
      this.openBegin = { begin: txn.begin, startedAt: txn.startedAt };
      throw err;
    }
    const committedAt = this.clock();
    // Only a transaction that wrote advanced the origin; one that wrote nothing (a heartbeat, or
    // changes that all lost) is processed like a filtered one, or the peer would keep its WAL.
    if (wrote) this.appliedLsn = commit.endLsn;
    else this.idleLsn = maxLsn(this.idleLsn, commit.endLsn);
    this.pendingCommitTimes.shift();
    this.applied++;
    this.lastAppliedCommit = commit.commitTime;
    if (txn.heartbeat !== null) {
      this.lastHeartbeat = txn.heartbeat;
      this.deps.metrics.heartbeat(pgMicrosToUnixSeconds(txn.heartbeat));
    }
    const traceId = this.deps.observer?.applied({
      peer: this.peer,
      begin: txn.begin,
      endLsn: commit.endLsn,
      changes: txn.changes,
      conflicts: txn.conflicts,
      startedAtMs: txn.startedAt,
      committedAtMs: committedAt,
      traceparent: txn.traceparent,
      batches: txn.batches,
    });
    this.deps.metrics.transactionApplied({
      commitUnixSeconds: pgMicrosToUnixSeconds(commit.commitTime),
      delaySeconds: (committedAt - pgMicrosToUnixMs(commit.commitTime)) / 1000,
      durationSeconds: (committedAt - txn.startedAt) / 1000,
      changes: txn.changes,
      ...(traceId ? { traceId } : {}),
    });
    for (const t of txn.tables) this.deps.metrics.table(t);
    for (const c of txn.conflicts) {
      this.conflictCount++;
      this.deps.metrics.conflict(`${c.schema}.${c.table}`, c.type, c.resolution);
      this.deps.log.warn(
        { conflict: c.type, resolution: c.resolution, table: `${c.schema}.${c.table}`, key: c.key, remoteCommitTs: c.remoteCommitTimestamp, remoteNode: c.remoteNode, remoteCommitLsn: formatLsn(commit.commitLsn) },
        'conflict',
      );
    }
    this.deps.metrics.positions({ applied: this.appliedLsn });
    this.backoff.reset();
    this.carefulTxns.delete(txn.begin.finalLsn);
    if (this.skipFinalLsn === txn.begin.finalLsn) this.skipFinalLsn = null;
    // The next transaction may have begun meanwhile: its position stays.
    if (this.openFinalLsn === txn.begin.finalLsn) {
      this.openFinalLsn = null;
      this.openBegin = null;
    }
  }

  private async applyLoop(): Promise<void> {
    let open: OpenTransaction | null = null;
    const session = this.session as ApplySession;
    const applier = this.applier as TransactionApplier;
    let begun: Promise<unknown> | null = null;
    for (;;) {
      if (this.stopping && (open === null || this.queue.commits === 0)) {
        await this.settleCommit();
        if (open) await session.rollback();
        return;
      }
      if (open === null && this.adminTasks.length > 0) {
        await this.settleCommit();
        const task = this.adminTasks.shift() as AdminTask;
        await this.retryDeadLetter(session, applier, task);
        continue;
      }
      const item = this.queue.shift();
      if (!item) {
        await this.settleCommit();
        this.applying = open !== null;
        await this.queue.wait();
        continue;
      }
      this.applying = true;
      switch (item.kind) {
        case 'begin':
          begun = session.begin();
          begun.catch(() => undefined);
          open = {
            begin: item.begin,
            version: { commitTimestamp: formatPgTimestamp(item.begin.commitTime), node: this.peer },
            startedAt: this.clock(),
            changes: 0,
            conflicts: [],
            heartbeat: null,
            traceparent: null,
            tables: new Set(),
            batches: [],
          };
          this.openBegin = { begin: item.begin, startedAt: open.startedAt };
          this.oldestUnapplied = null;
          this.openFinalLsn = item.begin.finalLsn;
          break;
        case 'relation':
          applier.relation(item.relation);
          this.relationsQueued--;
          break;
        case 'changes': {
          if (!open) throw new Error('changes outside a transaction');
          const finalLsn = open.begin.finalLsn;
          if (finalLsn === this.skipFinalLsn) {
            for (const c of item.changes) this.deps.metrics.filtered(OP_OF[c.tag], 'operator_skip');
            break;
          }
          const batchStarted = this.clock();
          if (this.carefulTxns.has(finalLsn)) await this.settleCommit();
          const outcome = this.carefulTxns.has(finalLsn)
            ? await applier.applyCarefully(item.changes, open.version, { peer: this.peer, commitLsn: formatLsn(finalLsn) })
            : await applier.apply(item.changes, open.version, { firstInTransaction: open.changes === 0 }, item.prepared);
          const batchEnded = this.clock();
          for (const r of outcome.runs) open.batches.push({ ...r, startedAtMs: batchStarted, endedAtMs: batchEnded });
          open.changes += item.changes.length;
          open.conflicts.push(...outcome.conflicts);
          for (const t of outcome.tables) open.tables.add(t);
          for (const op of Object.keys(outcome.applied) as ChangeOp[]) {
            this.deps.metrics.applied(op, outcome.applied[op]);
            this.changesApplied += outcome.applied[op];
          }
          this.backpressure();
          break;
        }
        case 'message':
          if (open && item.message.prefix === HEARTBEAT_PREFIX) open.heartbeat = parseHeartbeat(item.message);
          if (open && item.message.prefix === 'traceparent') open.traceparent = item.message.content.toString('utf8');
          break;
        case 'commit': {
          if (!open) throw new Error('commit outside a transaction');
          // One commit at a time in flight: the one before settles before this one is sent.
          await this.settleCommit();
          if (open.conflicts.length) await this.recordConflicts(session, open.conflicts, item.commit.endLsn);
          await this.waitForClock(item.commit.commitTime);
          await begun;
          if (this.skipFinalLsn === open.begin.finalLsn) await this.recordSkip(session, item.commit.commitLsn);
          // Not awaited here: the next transaction's statements go out behind the COMMIT, and its
          // answer is taken (settleCommit) before anything depends on it: before the next COMMIT is
          // sent (so a transaction never commits after one that failed), before the loop idles or
          // stops, and before any other use of the session.
          const committing = session.commit(item.commit.endLsn, open.version.commitTimestamp);
          committing.catch(() => undefined);
          this.committing = { result: committing, commit: item.commit, txn: open };
          open = null;
          begun = null;
          break;
        }
      }
    }
  }

  /**
   * Clock-skew rule (PGD's maximum_clock_skew_action = WAIT): an applied transaction must not commit
   * before the local clock has passed its remote commit time, or a later local write could get an
   * older version than the row it overwrites and lose under last-update-wins.
   */
  private async waitForClock(commitTime: bigint): Promise<void> {
    const aheadMs = pgMicrosToUnixMs(commitTime) - this.clock();
    const exceeded = aheadMs > this.deps.config.replication.max_clock_skew_ms;
    this.deps.metrics.clockSkew(aheadMs / 1000, exceeded);
    if (aheadMs <= 0) return;
    if (exceeded) this.deps.log.warn({ aheadMs }, 'peer clock is ahead of this node beyond max_clock_skew_ms; waiting');
    await new Promise((resolve) => setTimeout(resolve, aheadMs + 1));
  }

  /**
   * The operator's skip, in the conflict log with resolution `skip`. It also gives the (otherwise
   * empty) transaction an xid, so that its commit advances the origin and the skip is durable.
   */
  private async recordSkip(session: ApplySession, commitLsn: Lsn): Promise<void> {
    const conflicts = this.skippedConflicts.map((c) => ({ ...c, resolution: 'skip' as const }));
    this.skippedConflicts = [];
    this.deps.log.warn({ commitLsn: formatLsn(commitLsn), conflicts: conflicts.length }, 'transaction skipped by the operator');
    await this.recordConflicts(session, conflicts, commitLsn);
  }

  private async recordConflicts(session: ApplySession, conflicts: readonly ConflictRecord[], commitLsn: Lsn): Promise<void> {
    await session.run({
      text: `INSERT INTO ${METADATA_SCHEMA}.conflicts (peer, conflict_type, resolution, table_schema, table_name, key, remote_commit_ts, remote_commit_lsn, remote_node, local_tuple, remote_tuple)
             SELECT $1, c.type, c.resolution, c.schema, c.tbl, c.key, c.ts::timestamptz, $2::pg_lsn, c.node, c.local, c.remote
               FROM jsonb_to_recordset($3::jsonb) AS c(type text, resolution text, schema text, tbl text, key jsonb, ts text, node text, local jsonb, remote jsonb)`,
      values: [
        this.peer,
        formatLsn(commitLsn),
        JSON.stringify(
          conflicts.map((c) => ({
            type: c.type,
            resolution: c.resolution,
            schema: c.schema,
            tbl: c.table,
            key: c.key,
            ts: c.remoteCommitTimestamp,
            node: c.remoteNode,
            local: c.localTuple ?? null,
            remote: c.remoteTuple ?? null,
          })),
        ),
      ],
    });
  }


  /**
   * Standby status update. flush = the origin's progress after pg_replication_origin_progress(…, true)
   * flushed local WAL up to it: only durable commits are confirmed. When nothing received is pending,
   * keepalive and filtered positions are confirmed too (like worker.c send_feedback without pending
   * transactions), or the peer would retain WAL forever on idle or filtered traffic.
   */
  private onControl<T>(task: () => Promise<T>): Promise<T> {
    const next = this.controlChain.then(task, task);
    this.controlChain = next.catch(() => undefined);
    return next;
  }

  private async feedback(): Promise<void> {
    const control = this.control;
    const replication = this.replication;
    if (!control || !replication) return;
    const r = await control.query<{ lsn: string | null }>('SELECT pg_replication_origin_progress($1, true)::text AS lsn', [this.origin]);
    const lsn = r.rows[0]?.lsn;
    if (lsn) this.durableLsn = maxLsn(this.durableLsn, parseLsn(lsn));
    const idle = !this.receiving && this.queue.length === 0 && !this.applying && this.durableLsn >= this.appliedLsn;
    const flushed = idle ? maxLsn(this.durableLsn, this.idleLsn) : this.durableLsn;
    this.confirmedLsn = maxLsn(this.confirmedLsn, flushed);
    if (this.replication !== replication) return;
    replication.sendStatus({
      written: maxLsn(this.receivedLsn, this.confirmedLsn),
      flushed: this.confirmedLsn,
      applied: this.confirmedLsn,
      clientTime: nowPgMicros(this.clock),
      replyRequested: false,
    });
    this.deps.metrics.positions({ confirmed: this.confirmedLsn });
    this.deps.metrics.lag(this.lagSeconds());
  }

  /** A transactional logical message on this node, so that peers can measure end-to-end freshness. */
  private async emitHeartbeat(): Promise<void> {
    const control = this.control;
    if (!control) return;
    await control.query(`SELECT pg_logical_emit_message(true, $1, $2)`, [
      HEARTBEAT_PREFIX,
      JSON.stringify({ node: this.deps.config.node.name, ts: nowPgMicros(this.clock).toString() }),
    ]);
  }
}

function parseHeartbeat(m: LogicalDecodingMessage): bigint | null {
  try {
    const v = JSON.parse(m.content.toString('utf8')) as { ts?: unknown };
    return typeof v.ts === 'string' && /^-?\d+$/.test(v.ts) ? BigInt(v.ts) : null;
  } catch {
    return null;
  }
}
