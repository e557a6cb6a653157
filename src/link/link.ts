/**
 * One directed link: a peer's changes applied to this node.
 *
 *            start()                      streaming ok
 *   stopped ────────► connecting ───────────────────────► streaming ◄──► paused (backpressure)
 *      ▲                  ▲   │ failure                      │ failure
 *      │                  │   ▼                              ▼
 *      │   delay elapsed  └─ backoff ◄───────────────────────┘
 *      │                       (error: halted by the error policy, until the operator resolves)
 *      └──────────────── stop() from any state (drain, final feedback)
 *
 * Stages, composed here:
 *   replication connection ─► Receiver (streamed transactions, then TransactionAssembler: order
 *   check, loop filter, whole small transactions or batches of large ones; backpressure) ─►
 *   ApplyQueue ─► ApplyLoop (apply procedure for small transactions, multi-row statements otherwise;
 *   one local commit per remote transaction, bound to the peer's origin) ─► ProgressTracker ─►
 *   ControlChannel (feedback that confirms only the origin's flushed progress, never a position on
 *   receipt; heartbeats). OperatorActions holds what an operator asked for.
 */
import type pg from 'pg';
import { agentClient } from '../util/agent-client.js';
import type { Config, PeerConfig } from '../config/config-schema.js';
import { redactedMessage } from '../config/redact.js';
import { ApplySession } from '../apply/apply-session.js';
import { errorKind, sqlState } from '../apply/error-kind.js';
import { ProcedureApplier } from '../apply/procedure-applier.js';
import { RelationCache } from '../apply/relation-cache.js';
import type { ShapePolicy } from '../apply/step-encoder.js';
import { FastPathFailedError, TransactionApplier } from '../apply/transaction-applier.js';
import type { TableMapping } from '../apply/table-mapping.js';
import { applyRules, tablePolicy } from '../conflict/table-policies.js';
import { applicationName, originName, slotName } from '../node/names.js';
import { partedLink, PeerPartedError } from '../node/parted-nodes.js';
import { connecting, ConnectionProblemError, explainConnectionError, nodeEndpoint, peerEndpoint, ServerSettingError } from '../node/connection-problem.js';
import { checkLocalNode } from '../node/local-node-check.js';
import type { Logger } from '../observability/logger.js';
import type { LinkMetrics, LinkState } from '../observability/metrics.js';
import { formatLsn } from '../protocol/lsn.js';
import { pgMicrosToUnixMs } from '../protocol/pg-time.js';
import { ReplicationConnection } from '../source/replication-connection.js';
import { ApplyLoop } from './apply-loop.js';
import { ApplyQueue } from './apply-queue.js';
import { Backoff } from './backoff.js';
import { ControlChannel } from './control-channel.js';
import { OperatorActions } from './operator-actions.js';
import type { DeadLetterRetry } from './operator-actions.js';
import { ProgressTracker } from './progress-tracker.js';
import { Receiver } from './receiver.js';
import { WITHOUT_SYNC_WAIT } from '../node/synchronous-links.js';
import { tryConnect } from '../node/try-connect.js';
import type { TransactionObserver } from './transaction-observer.js';
import { SESSION_LIMITS_OFF } from '../util/session-limits.js';
import { errorMessage } from '../util/error-message.js';

export { LinkNotStreamingError } from './operator-actions.js';
export type { DeadLetterRetry } from './operator-actions.js';
export type { TransactionObserver } from './transaction-observer.js';

export interface LinkStatus {
  readonly peer: string;
  readonly state: LinkState;
  readonly slot: string;
  readonly origin: string;
  /** Commits on the peer wait for this node's flush confirmation (peers[].synchronous). */
  readonly synchronous: boolean;
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

export interface LinkDeps {
  readonly config: Config;
  readonly peer: PeerConfig;
  readonly log: Logger;
  readonly metrics: LinkMetrics;
  readonly observer?: TransactionObserver;
  readonly clock?: () => number;
}

/** Most steps (changes and key locks) in one CALL of the apply procedure. */
const MAX_PROCEDURE_STEPS = 5000;

export class Link {
  private state: LinkState = 'stopped';
  private readonly slot: string;
  private readonly origin: string;
  private readonly backoff: Backoff;
  private readonly queue = new ApplyQueue();
  private readonly clock: () => number;
  private readonly progress: ProgressTracker;
  private readonly operator: OperatorActions;
  private readonly apply: ApplyLoop;
  private readonly receiver: Receiver;
  private stopping = false;
  /** stop() ran out of time and cancelled the apply: the attempt's failure is the stop's doing. */
  private drainCut = false;
  private runPromise: Promise<void> | null = null;
  private wakeBackoff: (() => void) | null = null;
  /** The insert fast path's pauses per table (TransactionApplier), kept across attempts. */
  private readonly fastPathPaused = new Map<string, number>();

  // Per-attempt resources.
  private replication: ReplicationConnection | null = null;
  private session: ApplySession | null = null;
  private control: pg.Client | null = null;
  private relations: RelationCache | null = null;
  private statements: TransactionApplier | null = null;
  private attemptFailed: ((err: unknown) => void) | null = null;
  /** The apply session's and the replication connection's opening, which start together. */
  private opening: Promise<unknown> = Promise.resolve();

  // Status.
  private peerVersion = 0;
  private reconnects = 0;
  private lastError: LinkStatus['lastError'] = null;
  /** Feedback and heartbeats of the current attempt, on its control connection. */
  private channel: ControlChannel | null = null;

  constructor(private readonly deps: LinkDeps) {
    this.slot = slotName(deps.peer.name, deps.config.node.name);
    this.origin = originName(deps.peer.name);
    const r = deps.config.replication.reconnect;
    this.backoff = new Backoff(r.initial_delay_ms, r.max_delay_ms);
    this.clock = deps.clock ?? Date.now;
    this.progress = new ProgressTracker(this.clock);
    this.operator = new OperatorActions({ peer: deps.peer.name, log: deps.log, wake: () => this.queue.wake() });
    this.apply = new ApplyLoop({
      peer: deps.peer.name,
      synchronous: deps.peer.synchronous,
      replication: deps.config.replication,
      log: deps.log,
      metrics: deps.metrics,
      observer: deps.observer,
      clock: this.clock,
      queue: this.queue,
      progress: this.progress,
      operator: this.operator,
      stopping: () => this.stopping,
      drained: () => this.receiver.backpressure(),
      gathering: (on) => (on ? this.replication?.hold() : this.replication?.release()),
      advanced: (endLsn) => {
        this.backoff.progress(endLsn);
        this.channel?.soon();
      },
    });
    this.receiver = new Receiver({
      peer: deps.peer.name,
      replication: deps.config.replication,
      metrics: deps.metrics,
      queue: this.queue,
      progress: this.progress,
      source: () => this.replication,
      statements: () => this.statements,
      channel: () => this.channel,
      state: () => this.state,
      setState: (s) => this.setState(s),
      earlyApplyAllowed: (xid) => this.earlyApplyAllowed(xid),
      failed: (err) => this.attemptFailed?.(err),
    });
  }

  /**
   * A streamed transaction is applied while it streams (replication.apply_streamed) only on a link
   * whose node has no other peer: with several, the advisory key locks that serialize the peers'
   * sessions (key-locks.ts) would be held for as long as the transaction runs on its peer, and stall
   * the other links on the same keys.
   */
  private earlyApplyAllowed(xid: number): boolean {
    const { config } = this.deps;
    return config.replication.apply_streamed === 'while_streaming' && config.peers.length === 1 && !this.stopping && this.apply.earlyAllowed(xid);
  }

  get peer(): string {
    return this.deps.peer.name;
  }

  start(): void {
    if (this.runPromise) return;
    this.stopping = false;
    this.drainCut = false;
    this.runPromise = this.loop();
  }

  /**
   * Drains: the open transaction commits if it was fully received, else rolls back; then final
   * feedback. The drain is bounded (replication.drain_timeout_ms): an apply statement can wait for a
   * row lock for as long as the local session holding it stays open, up to statement_timeout. Past
   * the bound the statement is cancelled, its transaction rolls back with its origin progress, and
   * the next start applies it again (PostgreSQL's own apply worker ends at once on SIGTERM). Should
   * even that not end the attempt, the one after fails it, which closes its connections.
   */
  async stop(): Promise<void> {
    this.stopping = true;
    this.wakeBackoff?.();
    this.operator.cancel();
    this.queue.wake();
    const run = this.runPromise;
    if (run) {
      const limitMs = this.deps.config.replication.drain_timeout_ms;
      const cancel = setTimeout(() => this.cutDrain(limitMs), limitMs);
      const abandon = setTimeout(
        () => this.attemptFailed?.(new Error(`the link had not stopped ${2 * limitMs} ms after the stop began (twice replication.drain_timeout_ms)`)),
        2 * limitMs,
      );
      try {
        await run;
      } finally {
        clearTimeout(cancel);
        clearTimeout(abandon);
      }
    }
    this.runPromise = null;
    this.setState('stopped');
  }

  /** The drain ran out of time: the apply statement in progress is cancelled. */
  private cutDrain(limitMs: number): void {
    const session = this.session;
    this.drainCut = true;
    if (!session) return;
    this.deps.log.warn(
      { drainTimeoutMs: limitMs },
      'the link did not drain in time: cancelling the apply statement; its transaction is applied again at the next start',
    );
    session.cancel().catch((err: unknown) => this.deps.log.warn({ err: { message: errorMessage(err) } }, 'could not cancel the apply statement'));
  }

  status(): LinkStatus {
    const halted = this.operator.halted;
    return {
      peer: this.peer,
      state: this.state,
      slot: this.slot,
      origin: this.origin,
      synchronous: this.deps.peer.synchronous,
      peerServerVersionNum: this.peerVersion,
      receivedLsn: formatLsn(this.progress.received),
      appliedLsn: formatLsn(this.progress.applied),
      confirmedLsn: formatLsn(this.progress.confirmed),
      lagSeconds: this.lagSeconds(),
      lastAppliedCommitTime: isoTime(this.apply.lastAppliedCommit),
      lastHeartbeatTime: isoTime(this.apply.lastHeartbeat),
      queuedChanges: this.queue.changes + this.receiver.held,
      transactionsApplied: this.apply.transactionsApplied,
      transactionsFiltered: this.receiver.filtered,
      changesApplied: this.apply.changesApplied,
      conflicts: this.apply.conflicts,
      reconnects: this.reconnects,
      lastError: this.lastError,
      haltedAt: halted ? { commitLsn: formatLsn(halted.finalLsn), conflict: halted.message } : null,
    };
  }

  /** Peer commit time of the last applied transaction (µs since 2000), null before the first one. */
  lastAppliedCommitMicros(): bigint | null {
    return this.apply.lastAppliedCommit;
  }

  /** now − commit time of the oldest received but unapplied transaction; 0 when caught up. */
  lagSeconds(): number {
    return this.progress.lagSeconds();
  }

  /**
   * The operator's decision on a transaction halted by the error policy: apply it again (after fixing
   * the data) or skip it (it is committed empty, so the skip is durable and recorded).
   */
  resolve(action: 'retry' | 'skip'): boolean {
    if (this.operator.resolve(action)) return true;
    // A link waiting out its backoff (a schema that does not fit yet, a peer that did not answer):
    // the operator fixed it and wants the next attempt now. Nothing to skip there.
    if (action === 'retry' && this.state === 'backoff' && this.wakeBackoff) {
      this.deps.log.info({}, 'operator asked for the next attempt now');
      this.wakeBackoff();
      return true;
    }
    return false;
  }

  /** Queues a dead letter of this link for another attempt; resolves with the outcome. */
  retryDeadLetterById(id: number): Promise<DeadLetterRetry> {
    return this.operator.retryDeadLetter(id, this.state);
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
      let parted: PeerPartedError | null = null;
      let restart = false;
      try {
        await this.attempt();
      } catch (err) {
        if (err instanceof PeerPartedError) parted = err;
        else if (this.stopping && this.drainCut) {
          this.deps.log.info(
            { err: { message: redactedMessage(err), code: sqlState(err) ?? null } },
            'apply stopped before the transaction in progress committed',
          );
        } else if (err instanceof FastPathFailedError) {
          this.restartWithoutFastPath(err);
          restart = true;
        } else {
          this.recordError(err);
          parted = await this.askParted();
        }
      }
      await this.teardown();
      if (this.stopping) break;
      if (parted) {
        await this.stayParted(parted);
        break;
      }
      if (this.operator.halted) {
        this.setState('error');
        if ((await this.operator.decision()) === 'stop') break;
        this.backoff.reset();
        continue;
      }
      if (restart) {
        // The walsender and the apply session of the attempt that ended exit in their own time, and
        // the slot and origin they held are refused until they have (55006): the first delay.
        this.setState('connecting');
        this.backoff.reset();
        await this.pause(this.backoff.next());
        continue;
      }
      this.setState('backoff');
      this.reconnects++;
      this.deps.metrics.reconnect();
      const delay = this.backoff.next();
      this.deps.log.info({ delayMs: delay }, 'reconnecting after backoff');
      await this.pause(delay);
    }
  }

  /** Waits `delayMs`, or less when stop() or an operator's retry wakes it. */
  private async pause(delayMs: number): Promise<void> {
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, delayMs);
      this.wakeBackoff = () => {
        clearTimeout(t);
        resolve();
      };
    });
    this.wakeBackoff = null;
  }

  /**
   * Did this link's peer, or this node, part (node/parted-nodes.ts)? Asked after a failed attempt
   * (pgbidi part terminates the sessions that hold the slot and origin it drops) and before
   * re-creating a missing slot on the peer. Asks this node and the peer; unreachable means no.
   */
  private async askParted(): Promise<PeerPartedError | null> {
    const { config, peer } = this.deps;
    // Either node may be down: unreachable counts as not parted.
    const open = async (dsn: string): Promise<pg.Client | null> => {
      const c = await tryConnect(dsn, `pgbidi_${config.node.name}_control`);
      return c instanceof Error ? null : c;
    };
    const [local, remote] = await Promise.all([open(config.node.dsn), open(peer.dsn)]);
    try {
      return local ? await partedLink(local, remote, config.node.name, peer.name) : null;
    } catch {
      return null;
    } finally {
      await Promise.all([local?.end().catch(() => undefined), remote?.end().catch(() => undefined)]);
    }
  }

  /** The link's end until the agent restarts (with a config that no longer lists the peer). */
  private async stayParted(parted: PeerPartedError): Promise<void> {
    this.lastError = { message: parted.message, code: parted.code, at: new Date(this.clock()).toISOString() };
    this.deps.log.warn({ err: { message: parted.message, code: parted.code } }, 'link parted');
    this.setState('parted');
    await new Promise<void>((resolve) => {
      this.wakeBackoff = resolve;
    });
    this.wakeBackoff = null;
  }

  /** The peer (or this node) left the group: nothing more comes from this link. */
  get parted(): boolean {
    return this.state === 'parted';
  }

  /**
   * A plain INSERT of a large transaction met an existing key or a tombstone after batches before it
   * were written (transaction-applier.ts): the transaction is received and applied again from its
   * start, row-checked. An expected outcome of the fast path, not a failure: no error, no growing
   * backoff, no reconnect counted. PgbidiApplyErrors and PgbidiReconnectFlapping read those counts,
   * and on a table whose deletes leave tombstones this happens once per table every
   * FAST_PATH_PAUSE_MS while apply makes progress.
   */
  private restartWithoutFastPath(err: FastPathFailedError): void {
    this.apply.failed(err, { message: err.message, code: err.code });
    this.deps.metrics.transactionRestart();
    this.deps.log.info({ table: err.table, sqlstate: err.sqlstate }, 'transaction applied again without the insert fast path');
  }

  private recordError(failure: unknown): void {
    // A missing privilege met while applying (the connections explain their own): name the role and the fix.
    const err =
      sqlState(failure) === '42501' && !(failure instanceof ConnectionProblemError)
        ? explainConnectionError(failure, nodeEndpoint(this.deps.config.node.dsn))
        : failure;
    const message = redactedMessage(err);
    const code = sqlState(err) ?? ((err as { code?: unknown } | null)?.code as string | undefined) ?? null;
    this.lastError = { message, code: typeof code === 'string' ? code : null, at: new Date(this.clock()).toISOString() };
    if (this.apply.failed(err, { message, code: this.lastError.code })) this.backoff.reset();
    this.deps.metrics.applyError(errorKind(err));
    this.deps.log.error({ err: { message, code } }, 'link failed');
  }

  private shapePolicy(m: TableMapping): ShapePolicy {
    const p = tablePolicy(this.deps.config.conflicts, `${m.local.schema}.${m.local.name}`);
    return {
      rules: applyRules(p),
      losing: p.policy === 'skip' ? 'skip' : 'keep_local',
      // Delta counters merge in multi-row statements only; the error policy halts the link from there.
      procedure: p.policy !== 'delta' && p.policy !== 'error',
    };
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

    this.control = agentClient({ connectionString: config.node.dsn, application_name: `pgbidi_${config.node.name}_control` });
    this.control.on('error', onConnError);
    const local = nodeEndpoint(config.node.dsn);
    const control = this.control;
    // The three connections open at once (each costs its authentication round trips, ~20 ms on a
    // local server: a third of a link's start); they are used in the same order as before, so the
    // first problem reported is the same.
    const session = new ApplySession({
      dsn: config.node.dsn,
      origin: this.origin,
      applicationName: applicationName(peer.name, config.node.name),
      statementTimeoutMs: config.replication.statement_timeout_ms,
      synchronousCommit: peer.synchronous ? 'local' : 'off',
    });
    this.session = session;
    const sessionStarted = connecting(local, () => session.connect(onConnError));
    sessionStarted.catch(() => undefined);
    this.replication = new ReplicationConnection({
      dsn: peer.dsn,
      peer: peer.name,
      applicationName: applicationName(peer.name, config.node.name),
      slot: this.slot,
      publication: config.replication.publication,
    });
    const replication = this.replication;
    const peerIndex = config.peers.findIndex((p) => p.name === peer.name);
    const replicationConnected = connecting(peerEndpoint(peer.name, peerIndex, peer.dsn), () => replication.connect(onConnError));
    replicationConnected.catch(() => undefined);
    // teardown() closes what opened: it waits for both, or a connection still opening would outlive
    // the attempt (and the session hold the origin).
    this.opening = Promise.allSettled([sessionStarted, replicationConnected]);
    await connecting(local, () => control.connect());
    // Idle between its reads: a database's idle_session_timeout ended it, and the link with it, at
    // every attempt (57P05, test/session-limits.test.ts). One round trip for all the settings.
    await control.query([WITHOUT_SYNC_WAIT, ...SESSION_LIMITS_OFF].join('; '));
    await checkLocalNode(control, { self: config.node.name, peer: peer.name, origin: this.origin });

    const startLsn = await sessionStarted;
    const relations = new RelationCache(() => session.pg);
    this.relations = relations;
    const locks = config.peers.length > 1;
    const statements = new TransactionApplier(session, relations, (table) => tablePolicy(config.conflicts, table), locks, this.fastPathPaused);
    this.statements = statements;
    // A catalog lookup on the apply session, answered while the peer's slot is checked below.
    const statementsReady = statements.ready();
    statementsReady.catch(() => undefined);
    const procedure = new ProcedureApplier(session, relations, {
      peer: peer.name,
      origin: this.origin,
      policyOf: (m) => this.shapePolicy(m),
      locks,
      maxSteps: MAX_PROCEDURE_STEPS,
    });
    this.progress.startAttempt(startLsn);

    await replicationConnected;
    this.peerVersion = this.replication.serverVersionNum;
    if (replication.walLevel !== 'logical') {
      throw new ServerSettingError(
        `wal_level is '${replication.walLevel}' on peer ${peer.name}: set wal_level = logical in its postgresql.conf and restart it (logical decoding needs it); the link retries with backoff`,
      );
    }
    // A missing slot is also what pgbidi part leaves: re-create it only for a node still in the group.
    const slot = await this.replication.ensureSlot(async () => {
      const gone = await this.askParted();
      if (gone) throw gone;
    });
    if (slot === 'created') log.warn({ slot: this.slot }, 'created the missing slot on the peer: changes before now are not replicated');
    await statementsReady;

    this.receiver.reset();
    const channel = new ControlChannel({
      query: async <R extends Record<string, unknown>>(text: string, values: readonly unknown[]) => (await control.query<R>(text, [...values])).rows,
      sendStatus: (status) => replication.sendStatus(status),
      progress: this.progress,
      metrics: this.deps.metrics,
      clock: this.clock,
      origin: this.origin,
      node: config.node.name,
      synchronous: peer.synchronous,
      failed: fail,
    });
    this.channel = channel;
    const streaming = this.replication.start({
      startLsn,
      onMessage: (m) => {
        try {
          this.receiver.receive(m);
        } catch (err) {
          fail(err);
        }
      },
      onError: fail,
    });
    streaming.then(() => {
      if (!this.stopping) fail(new Error('the peer ended the replication stream'));
    }, fail);
    log.info({ startLsn: formatLsn(startLsn), peerVersion: this.peerVersion }, 'streaming');
    this.setState('streaming');

    channel.every(config.replication.feedback_interval_ms, config.replication.heartbeat_interval_ms);
    try {
      await Promise.race([this.apply.run({ session, relations, statements, procedure, origin: startLsn }), failed]);
      // Stopping: the apply loop has drained; confirm what is durable before closing the stream.
      await channel.feedbackNow();
    } finally {
      channel.close();
    }
  }

  private async teardown(): Promise<void> {
    this.attemptFailed = null;
    this.channel?.close();
    this.channel = null;
    this.apply.endAttempt();
    await this.opening;
    const replication = this.replication;
    const session = this.session;
    const control = this.control;
    this.replication = null;
    this.session = null;
    this.control = null;
    this.relations = null;
    this.statements = null;
    if (this.stopping) await replication?.stop();
    else replication?.destroy();
    // An open transaction rolls back with the session; a drain cut short does not wait for it.
    await session?.close(this.stopping && this.drainCut);
    await control?.end().catch(() => undefined);
    this.progress.endAttempt();
    // Streamed transactions not committed yet come again, whole, on the next attempt.
    this.receiver.reset();
  }
}

function isoTime(micros: bigint | null): string | null {
  return micros === null ? null : new Date(pgMicrosToUnixMs(micros)).toISOString();
}
