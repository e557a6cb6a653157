import { loadChange } from '../apply/dead-letter.js';
import type { StoredChange } from '../apply/dead-letter.js';
import { conflictLogStatement } from '../apply/conflict-log.js';
import type { ApplySession } from '../apply/apply-session.js';
import { sqlState } from '../apply/error-kind.js';
import { rejectionType } from '../apply/rejected-row.js';
import { SchemaMismatchError } from '../apply/table-mapping.js';
import type { RelationCache } from '../apply/relation-cache.js';
import type { TransactionApplier } from '../apply/transaction-applier.js';
import type { ConflictRecord } from '../conflict/conflict-types.js';
import { METADATA_SCHEMA } from '../node/names.js';
import type { Logger } from '../observability/logger.js';
import { formatLsn } from '../protocol/lsn.js';
import type { Lsn } from '../protocol/lsn.js';
import { errorMessage } from '../util/error-message.js';

/**
 * What an operator can do to a link, and the state it leaves: resolving a transaction halted by the
 * `error` policy (apply it again, or skip it: it is committed empty, so the skip is durable and
 * logged), and retrying a dead letter under its original version. The apply loop runs the actions
 * between transactions, because they need the origin's session.
 */

export class LinkNotStreamingError extends Error {
  readonly code = 'PGBIDI_LINK_NOT_STREAMING';
  constructor(peer: string, state: string) {
    super(`the link from ${peer} is ${state}; it must be streaming to retry a dead letter`);
    this.name = 'LinkNotStreamingError';
  }
}

export interface DeadLetterRetry {
  readonly id: number;
  readonly outcome: 'applied' | 'still_conflicting' | 'still_refused' | 'not_pending';
  readonly message?: string;
}

interface DeadLetterTask {
  readonly id: number;
  readonly done: (r: DeadLetterRetry) => void;
  readonly failed: (err: unknown) => void;
}

export interface Halted {
  /** Commit LSN of the halted transaction. */
  readonly finalLsn: bigint;
  readonly message: string;
  readonly conflicts: readonly ConflictRecord[];
}

export type Decision = 'retry' | 'skip' | 'stop';

export class OperatorActions {
  /** A transaction halted by the error policy, waiting for resolve(). */
  halted: Halted | null = null;
  private decide: ((d: Decision) => void) | null = null;
  /** A halted transaction the operator chose to skip: applied empty, so that progress moves past it. */
  private skipFinalLsn: bigint | null = null;
  private skippedConflicts: readonly ConflictRecord[] = [];
  private readonly tasks: DeadLetterTask[] = [];

  constructor(private readonly deps: { readonly peer: string; readonly log: Logger; readonly wake: () => void }) {}

  halt(h: Halted): void {
    this.halted = h;
  }

  /** Waits for the operator's decision on the halted transaction (or for cancel()). */
  async decision(): Promise<Decision> {
    const halted = this.halted;
    if (!halted) return 'retry';
    const d = await new Promise<Decision>((resolve) => {
      this.decide = resolve;
    });
    this.decide = null;
    if (d === 'stop') return d;
    this.deps.log.warn({ action: d, commitLsn: formatLsn(halted.finalLsn) }, 'operator resolved a halted transaction');
    if (d === 'skip') {
      this.skipFinalLsn = halted.finalLsn;
      this.skippedConflicts = halted.conflicts;
    }
    this.halted = null;
    return d;
  }

  /** The operator's decision; false when nothing is halted. */
  resolve(action: 'retry' | 'skip'): boolean {
    if (!this.decide) return false;
    this.decide(action);
    return true;
  }

  /** Ends a wait for a decision (the link stops). */
  cancel(): void {
    this.decide?.('stop');
  }

  isSkipped(finalLsn: bigint): boolean {
    return this.skipFinalLsn === finalLsn;
  }

  /** The skipped transaction committed. */
  skipDone(finalLsn: bigint): void {
    if (this.skipFinalLsn === finalLsn) this.skipFinalLsn = null;
  }

  /**
   * The operator's skip, in the conflict log with resolution `skip`. It also gives the (otherwise
   * empty) transaction an xid, so that its commit advances the origin and the skip is durable.
   */
  async recordSkip(session: ApplySession, commitLsn: Lsn): Promise<void> {
    const conflicts = this.skippedConflicts.map((c) => ({ ...c, resolution: 'skip' as const }));
    this.skippedConflicts = [];
    this.deps.log.warn({ commitLsn: formatLsn(commitLsn), conflicts: conflicts.length }, 'transaction skipped by the operator');
    await session.run(conflictLogStatement(this.deps.peer, conflicts, commitLsn));
  }

  /** Queues a dead letter for another attempt; `state` is the link's, which must be streaming. */
  retryDeadLetter(id: number, state: string): Promise<DeadLetterRetry> {
    if (state !== 'streaming' && state !== 'paused') return Promise.reject(new LinkNotStreamingError(this.deps.peer, state));
    return new Promise((done, failed) => {
      this.tasks.push({ id, done, failed });
      this.deps.wake();
    });
  }

  get pendingTasks(): number {
    return this.tasks.length;
  }

  /**
   * Applies the next queued dead letter again under its original version (remote commit time, origin
   * node), in a transaction of its own on the origin session: origin progress stays where it is
   * (`applied`), and the row is not replicated back (it carries the peer's origin).
   */
  async runNextTask(session: ApplySession, relations: RelationCache, statements: TransactionApplier, applied: Lsn): Promise<void> {
    const task = this.tasks.shift();
    if (!task) return;
    try {
      await session.begin();
      const r = await session.pg.query<{ change: StoredChange; ts: string }>(
        `SELECT change, remote_commit_ts::text AS ts FROM ${METADATA_SCHEMA}.dead_letters WHERE id = $1 AND peer = $2 AND status = 'pending' FOR UPDATE`,
        [task.id, this.deps.peer],
      );
      const row = r.rows[0];
      if (!row) {
        await session.rollback();
        task.done({ id: task.id, outcome: 'not_pending' });
        return;
      }
      // A relation id no peer uses (pgoutput ids are positive OIDs).
      const { relation, change } = loadChange(row.change, -task.id);
      relations.relation(relation);
      const version = { commitTimestamp: row.ts, node: this.deps.peer };
      await session.pg.query('SAVEPOINT pgbidi_retry');
      let result: DeadLetterRetry;
      try {
        await statements.apply([change], version);
        await session.pg.query('RELEASE SAVEPOINT pgbidi_retry');
        result = { id: task.id, outcome: 'applied' };
      } catch (err) {
        // Still refused: the dead letter stays pending with the new reason; the link goes on.
        const refused = rejectionType(sqlState(err)) !== null || err instanceof SchemaMismatchError;
        if (sqlState(err) !== '23505' && !refused) throw err;
        await session.pg.query('ROLLBACK TO SAVEPOINT pgbidi_retry');
        result = { id: task.id, outcome: refused ? 'still_refused' : 'still_conflicting', message: errorMessage(err) };
      }
      await session.pg.query(
        `UPDATE ${METADATA_SCHEMA}.dead_letters SET attempts = attempts + 1, last_attempt_at = now(),
                status = CASE WHEN $2 THEN 'applied' ELSE status END WHERE id = $1`,
        [task.id, result.outcome === 'applied'],
      );
      await session.commit(applied, row.ts);
      this.deps.log.info({ deadLetter: task.id, outcome: result.outcome }, 'dead letter retried');
      task.done(result);
    } catch (err) {
      task.failed(err);
      throw err;
    }
  }
}
