import type { ConflictRecord, ConflictType, Resolution } from '../conflict/conflict-types.js';
import { applyRules } from '../conflict/table-policies.js';
import { METADATA_SCHEMA } from '../node/names.js';
import { sqlState } from './error-kind.js';
import { storeChange } from './dead-letter.js';
import { describeRejection, rejectionType } from './rejected-row.js';
import type { Rejection } from './rejected-row.js';
import type { TablePolicy } from '../conflict/table-policies.js';
import type { ChangeOp } from '../observability/metrics.js';
import type { ChangeMessage, InsertMessage, RelationMessage, Tuple, UpdateMessage } from '../protocol/pgoutput-messages.js';
import { qualifiedName, quoteIdent } from '../util/sql.js';
import { UNCHANGED_TOAST } from '../protocol/pgoutput-messages.js';
import { assertNever } from '../util/assert-never.js';
import type { ApplySession } from './apply-session.js';
import { keyLock, lockOrder } from './key-locks.js';
import type { RelationCache } from './relation-cache.js';
import { SchemaMismatchError } from './table-mapping.js';
import type { TableMapping, MappedColumn } from './table-mapping.js';
import {
  deleteByIdentity,
  deleteRows,
  FAST_PATH_CLOSED,
  insertRowsFast,
  lockKeys,
  noTombstonesGate,
  undoDeletedLater,
  truncateTables,
  updateByIdentity,
  updateRows,
  upsertRows,
} from './statements.js';
import type { RemoteVersion, Row, Statement } from './statements.js';

/**
 * Turns the changes of one remote transaction into as few statements as possible: consecutive
 * changes of the same table and kind form a run (one multi-row statement), runs are sent pipelined in
 * source order, and each statement reports the rows it did not write so that conflicts are counted
 * precisely. A key that repeats inside a run starts a new run (ON CONFLICT cannot touch a row twice).
 */

export interface BatchOutcome {
  readonly applied: Record<ChangeOp, number>;
  readonly conflicts: ConflictRecord[];
  readonly tables: ReadonlySet<string>;
  /** One entry per multi-row statement: what it wrote to, for tracing. */
  readonly runs: readonly { readonly table: string; readonly op: ChangeOp; readonly rows: number }[];
  /** Rows this node's schema refused, set aside as dead letters (applyCarefully only). */
  readonly rejected?: readonly Rejection[];
}

type Key = (string | null)[];

const UNIQUE_VIOLATION = '23505';

/** How long a table whose insert fast path failed takes the usual path before trying again. */
const FAST_PATH_PAUSE_MS = 10_000;

const DEFAULT_POLICY: TablePolicy = { policy: 'last_update_wins', deltaColumns: [], unique: 'dead_letter' };

/** A conflict under the `error` policy: the transaction rolls back and the link waits for an operator. */
/** A row refused under `conflicts.rejected_row: error`: the link retries the transaction with backoff until the schema accepts it. */
export class RowRejectedError extends Error {
  readonly code = 'PGBIDI_ROW_REJECTED';
  constructor(readonly rejection: Rejection) {
    super(`${rejection.reason}; the link retries with backoff and resumes once the row applies (pgbidi resolve --peer PEER --retry: at once)`);
    this.name = 'RowRejectedError';
  }
}

export class ConflictHaltError extends Error {
  readonly code = 'PGBIDI_CONFLICT_HALT';
  constructor(readonly conflicts: readonly ConflictRecord[]) {
    super(
      `conflict under the error policy: ${conflicts
        .slice(0, 3)
        .map((c) => `${c.type} on ${c.schema}.${c.table} key ${JSON.stringify(c.key)}`)
        .join('; ')}${conflicts.length > 3 ? ` and ${conflicts.length - 3} more` : ''}`,
    );
    this.name = 'ConflictHaltError';
  }
}

/** Signature of an update that changes the key: always a run of its own. */
const KEY_CHANGE = 'update-key';

interface Run {
  readonly mapping: TableMapping;
  readonly kind: 'insert' | 'update' | 'delete' | 'identity' | 'truncate';
  readonly signature: string;
  readonly rows: Row[];
  /** Update runs: the whole new row for re-creating a missing one, or null when it cannot be built. */
  readonly fullRows: (Row | null)[];
  /** Update runs: the old row under REPLICA IDENTITY FULL (delta counters need it), else null. */
  readonly oldRows: (Row | null)[];
  readonly oldKeys: Key[];
  readonly keySet: Set<string>;
  readonly setColumns: readonly MappedColumn[];
  readonly changes: ChangeMessage[];
}

interface TableKeys {
  readonly touched: Key[];
  readonly written: Key[];
  readonly ops: ('insert' | 'update')[];
  readonly version: RemoteVersion;
}

/** A batch planned and built ahead of time (TransactionApplier.prepare). */
export interface PreparedBatch {
  readonly runs: Run[];
  readonly fast: ReadonlySet<Run>;
  readonly tables: ReadonlyMap<TableMapping, TableKeys>;
  readonly statements: readonly { readonly role: Pending['role']; readonly run?: Run; readonly mapping: TableMapping; readonly statement: Statement }[];
  readonly firstInTransaction: boolean;
  readonly fastAllowed: boolean;
}

/** Where a batch stands in its transaction, and whether its inserts may take the fast path. */
export interface BatchOptions {
  /** Nothing was written in the transaction yet. */
  readonly firstInTransaction?: boolean;
  /** Plain INSERTs may be tried (default: only in the first batch). */
  readonly fast?: boolean;
  /**
   * Sent before the answers of what precedes it are read (see sendsAhead): statements may follow it
   * at once, so a failed plain INSERT is never redone in place, not even in the first batch.
   */
  readonly ahead?: boolean;
}

function fastAllowed(options: BatchOptions): boolean {
  return options.fast ?? options.firstInTransaction === true;
}

/**
 * The fast path failed in a batch after the first of a large transaction: what the batches before
 * it wrote cannot be taken back alone, so the transaction is applied again from its start (received
 * again after a reconnect) without the fast path.
 */
export class FastPathFailedError extends Error {
  readonly code = 'PGBIDI_FAST_PATH_FAILED';
  constructor(
    readonly table: string,
    readonly sqlstate: string,
  ) {
    super(`a plain INSERT into ${table} did not apply (SQLSTATE ${sqlstate}); the transaction is applied again without the fast path`);
    this.name = 'FastPathFailedError';
  }
}

interface Pending {
  /** lock: advisory key locks; main: the run's statement; undo: see undoDeletedLater; gate: see build. */
  readonly role: 'lock' | 'main' | 'undo' | 'gate';
  readonly run?: Run;
  readonly mapping: TableMapping;
  readonly result: Promise<{ rows: Record<string, unknown>[] }>;
}

export class TransactionApplier {
  constructor(
    private readonly session: ApplySession,
    private readonly relations: RelationCache,
    private readonly policyOf: (qualifiedTable: string) => TablePolicy = () => DEFAULT_POLICY,
    /** Other peers' apply sessions write to this node at the same time: serialize them per key. */
    private readonly concurrentSessions = true,
    /**
     * Tables whose last fast-path attempt failed, until when the fast path is not tried on them. The
     * link keeps it across its attempts: a failure after batches were written ends the attempt (the
     * transaction comes again on a new connection), and a map of the attempt's own let the next
     * large transaction into that table try, fail and restart again at once.
     */
    private readonly fastPathPaused = new Map<string, number>(),
  ) {}

  private mapping(relationId: number): Promise<TableMapping> {
    return this.relations.load(relationId);
  }

  /** Whether the node's pgbidi schema has the fast path's gate (a node set up by an older pgbidi has not). */
  private fastPathReady: Promise<boolean> | null = null;
  private fastPathKnown: boolean | null = null;

  /**
   * Plans and builds a batch's statements ahead of time, without I/O: the link calls this on the
   * receive side, so that building the next batch overlaps with the server executing the current
   * one. Null when a table of the batch has no mapping yet (it needs a catalog query).
   */
  prepare(changes: readonly ChangeMessage[], version: RemoteVersion, options: BatchOptions = {}): PreparedBatch | null {
    try {
      const runs = this.planWith(changes, (id) => this.relations.get(id));
      if (!runs) return null;
      const first = options.firstInTransaction === true;
      return this.build(runs, version, first, fastAllowed(options) && this.fastPathKnown === true);
    } catch {
      return null; // the same error comes again from apply(), in the apply loop, where it is handled
    }
  }

  /**
   * prepare() for a batch whose tables may not be mapped yet: their mappings are loaded first
   * (catalog reads). The apply loop's early path builds its batches with it, since it needs to know
   * before sending a batch whether the batch is plain INSERTs alone (sendsAhead).
   */
  async prepareLoaded(changes: readonly ChangeMessage[], version: RemoteVersion, options: BatchOptions): Promise<PreparedBatch> {
    const runs = await this.plan(changes);
    return this.build(runs, version, options.firstInTransaction === true, fastAllowed(options) && (await this.fastPathAvailable()));
  }

  /**
   * Applies one batch of a transaction. An insert run may take the fast path (insertRowsFast) when
   * `fast` allows it (by default only in the first batch). If it does not apply: in the first batch
   * (nothing written yet) the transaction is rolled back, begun again and the batch runs the usual
   * way; in a later one the rows before it cannot be taken back, so FastPathFailedError asks for the
   * whole transaction again without the fast path. `prepared` comes from prepare() for the same
   * changes and options.
   */
  async apply(
    changes: readonly ChangeMessage[],
    version: RemoteVersion,
    options: BatchOptions = {},
    prepared: PreparedBatch | null = null,
  ): Promise<BatchOutcome> {
    const first = options.firstInTransaction === true;
    const allowed = fastAllowed(options);
    let batch = this.fits(prepared, options) ? prepared : null;
    // Built before a fast-path attempt on one of its tables failed: not again for now.
    if (batch && [...batch.fast].some((r) => !this.fastPathOpen(r.mapping))) {
      batch = this.build(batch.runs, version, first, false);
    }
    if (!batch) {
      const runs = await this.plan(changes);
      batch = this.build(runs, version, first, allowed && runs.some((r) => r.kind === 'insert') && (await this.fastPathAvailable()));
    }
    const { runs, fast, tables } = batch;
    const statements = batch.statements;
    const pending: Pending[] = this.session.corked(() => statements.map((b) => ({ ...b, result: this.session.run(b.statement) })));
    // Every promise gets a handler now, so a failure in one does not leave the others unobserved.
    const settled = await Promise.allSettled(pending.map((p) => p.result));
    const failed = settled.findIndex((s) => s.status === 'rejected');
    if (failed >= 0) {
      // The first failure in pipeline order is the cause; the statements after it only found the
      // transaction aborted.
      const reason: unknown = (settled[failed] as PromiseRejectedResult).reason;
      const run = pending[failed]?.run;
      const code = sqlState(reason);
      if (run && fast.has(run) && (code === UNIQUE_VIOLATION || code === FAST_PATH_CLOSED)) {
        this.fastPathPaused.set(tableName(run.mapping), Date.now() + FAST_PATH_PAUSE_MS);
        if (!first || options.ahead === true) throw new FastPathFailedError(tableName(run.mapping), code);
        await this.session.pg.query('ROLLBACK');
        await this.session.begin();
        return this.apply(changes, version, { firstInTransaction: true, fast: false });
      }
      throw reason;
    }
    const outcome: BatchOutcome = {
      applied: { insert: 0, update: 0, delete: 0, truncate: 0 },
      conflicts: [],
      tables: new Set(runs.map((r) => tableName(r.mapping))),
      runs: runs.map((r) => ({ table: tableName(r.mapping), op: runOp(r), rows: r.changes.length })),
    };
    const unwritten = new Map<Run, Record<string, unknown>[]>();
    settled.forEach((s, i) => {
      const p = pending[i] as Pending;
      if (s.status !== 'fulfilled') return;
      if (p.role === 'main' && p.run) unwritten.set(p.run, fast.has(p.run) ? [] : s.value.rows);
      const t = tables.get(p.mapping);
      if (p.role === 'undo' && t) this.accountUndone(p.mapping, t.written, t.ops, s.value.rows, version, outcome);
    });
    await this.recheck(runs, unwritten, version, outcome);
    for (const run of runs) this.account(run, unwritten.get(run) ?? [], version, outcome);
    const halted = outcome.conflicts.filter((c) => c.resolution === 'error');
    if (halted.length) throw new ConflictHaltError(halted);
    return outcome;
  }

  /**
   * Whether apply() with this batch may run ahead of its own answers, with `ahead: true`: it sends
   * every statement before its first await (prepared, so no catalog read comes first), and nothing
   * it can find needs a decision before what follows it, not even before its transaction's COMMIT:
   * every run is a plain INSERT (no recheck on a fresh snapshot, no conflict to log), and instead of
   * undoing rows a newer delete removed meanwhile, the tombstone gate is checked again after the
   * inserts (build). Any failure aborts the transaction, whose COMMIT then answers ROLLBACK, and asks
   * for it again without the fast path (FastPathFailedError).
   */
  sendsAhead(prepared: PreparedBatch | null, options: BatchOptions): boolean {
    if (!this.fits(prepared, options)) return false;
    return prepared.runs.length > 0 && prepared.runs.every((r) => prepared.fast.has(r) && this.fastPathOpen(r.mapping));
  }

  /** A batch prepare() built for the same place in the transaction and the same fast-path choice. */
  private fits(prepared: PreparedBatch | null, options: BatchOptions): prepared is PreparedBatch {
    return (
      prepared !== null &&
      prepared.firstInTransaction === (options.firstInTransaction === true) &&
      prepared.fastAllowed === (fastAllowed(options) && this.fastPathKnown === true)
    );
  }

  /** Reads what prepare() needs to know about the node before the first batch arrives. */
  async ready(): Promise<void> {
    await this.fastPathAvailable();
  }

  /** Not paused after a failed fast-path attempt on the table (FAST_PATH_PAUSE_MS). */
  private fastPathOpen(m: TableMapping): boolean {
    return (this.fastPathPaused.get(tableName(m)) ?? 0) <= Date.now();
  }

  private fastPathAvailable(): Promise<boolean> {
    this.fastPathReady ??= this.session.pg
      .query<{ ok: boolean }>(`SELECT to_regprocedure('${METADATA_SCHEMA}.no_tombstones(text)') IS NOT NULL AS ok`)
      .then((r) => (this.fastPathKnown = r.rows[0]?.ok === true));
    return this.fastPathReady;
  }

  /** The statements of a batch in pipeline order: key locks, one statement per run, undos. */
  private build(runs: Run[], version: RemoteVersion, first: boolean, fastPath: boolean): PreparedBatch {
    const fast = new Set<Run>();
    if (fastPath) {
      for (const run of runs) if (run.kind === 'insert' && run.mapping.key.length > 0 && this.fastPathOpen(run.mapping)) fast.add(run);
    }
    // Per table of the batch: every key it touches (for the advisory locks) and the keys its inserts
    // and updates write (for the undo of rows a concurrent newer delete removed).
    const tables = new Map<TableMapping, TableKeys>();
    for (const run of runs) {
      if (run.mapping.key.length === 0 || (run.kind !== 'insert' && run.kind !== 'update' && run.kind !== 'delete')) continue;
      let t = tables.get(run.mapping);
      if (!t) {
        t = { touched: [], written: [], ops: [], version: { ...version, rules: applyRules(this.policyOf(tableName(run.mapping))) } };
        tables.set(run.mapping, t);
      }
      t.touched.push(...run.oldKeys);
      if (run.kind === 'insert') {
        // An insert's key is the one planWith already took from its row (describe), and touched has it.
        for (const k of run.oldKeys) {
          t.written.push(k);
          t.ops.push('insert');
        }
      } else if (run.kind === 'update') {
        for (const r of run.rows) {
          const k = keyOf(run.mapping, r);
          t.touched.push(k);
          t.written.push(k);
          t.ops.push('update');
        }
      }
    }
    const statements: PreparedBatch['statements'][number][] = [];
    if (this.concurrentSessions && tables.size > 0) {
      const locks = lockOrder([...tables].flatMap(([m, t]) => t.touched.map((k) => keyLock(tableName(m), k))));
      statements.push({ role: 'lock', mapping: [...tables.keys()][0] as TableMapping, statement: lockKeys(locks) });
    }
    for (const run of runs) {
      const runVersion = { ...version, rules: applyRules(this.policyOf(tableName(run.mapping))) };
      const statement = fast.has(run) ? insertRowsFast(run.mapping, run.rows) : this.statement(run, runVersion);
      statements.push({ role: 'main', run, mapping: run.mapping, statement });
    }
    for (const [m, t] of tables) {
      if (t.written.length === 0) continue;
      // A table the batch only writes plain INSERTs to: a newer delete of one of its keys that
      // committed while the inserts waited left a tombstone, so the gate fails now where the undo
      // would have deleted the row, and the batch applies again without the fast path (its
      // conflict is logged then). Its answer is then never needed before the COMMIT (sendsAhead).
      const gateAgain = runs.every((r) => r.mapping !== m || fast.has(r));
      const statement = gateAgain ? noTombstonesGate(m) : undoDeletedLater(m, t.written, t.version);
      statements.push(gateAgain ? { role: 'gate', run: runs.find((r) => r.mapping === m), mapping: m, statement } : { role: 'undo', mapping: m, statement });
    }
    return { runs, fast, tables, statements, firstInTransaction: first, fastAllowed: fastPath };
  }

  /**
   * The slow path for a transaction that hit a unique violation (SQLSTATE 23505) on a constraint other
   * than the primary key: each change runs inside a savepoint, so that one violating row is contained
   * and handled by the table's unique policy (dead letter, skip or halt) while the rest applies.
   */
  async applyCarefully(
    changes: readonly ChangeMessage[],
    version: RemoteVersion,
    deadLetter: { readonly peer: string; readonly commitLsn: string },
  ): Promise<BatchOutcome> {
    const rejected: Rejection[] = [];
    const total: BatchOutcome = { applied: { insert: 0, update: 0, delete: 0, truncate: 0 }, conflicts: [], tables: new Set(), runs: [], rejected };
    for (const change of changes) {
      await this.session.pg.query('SAVEPOINT pgbidi_change');
      try {
        const o = await this.apply([change], version);
        for (const op of Object.keys(o.applied) as ChangeOp[]) total.applied[op] += o.applied[op];
        total.conflicts.push(...o.conflicts);
        for (const t of o.tables) (total.tables as Set<string>).add(t);
        (total.runs as BatchOutcome['runs'][number][]).push(...o.runs);
        await this.session.pg.query('RELEASE SAVEPOINT pgbidi_change');
      } catch (err) {
        const refused = rejectionType(sqlState(err));
        if ((sqlState(err) !== UNIQUE_VIOLATION && refused === null) || change.tag === 'truncate') throw err;
        await this.session.pg.query('ROLLBACK TO SAVEPOINT pgbidi_change');
        await this.session.pg.query('RELEASE SAVEPOINT pgbidi_change');
        const m = await this.mapping(change.relationId);
        if (refused !== null) {
          const r = await describeRejection(this.session.pg, m, change, err, refused);
          if ((this.policyOf(tableName(m)).rejected ?? 'dead_letter') === 'error') throw new RowRejectedError(r);
          const relation = this.relations.message(change.relationId) as RelationMessage;
          await this.session.run(
            deadLetterStatement(deadLetter, relation, change, version, { ...r, reason: `${r.reason}, then pgbidi dead-letters --retry ID` }),
          );
          rejected.push(r);
          (total.tables as Set<string>).add(tableName(m));
          continue;
        }
        const unique = this.policyOf(tableName(m)).unique;
        const resolution: Resolution = unique === 'dead_letter' ? 'dead_letter' : unique;
        // PostgreSQL 18's multiple_unique_conflicts: the row collides with more than one unique key.
        const collisions = change.tag === 'delete' ? 1 : await this.uniqueCollisions(m, change);
        const type = collisions > 1 ? 'multiple_unique_conflicts' : change.tag === 'update' ? 'update_exists' : 'insert_exists';
        const tuple = change.tag === 'delete' ? change.oldTuple : change.newTuple;
        const key = m.key.length ? keyOf(m, change.tag === 'update' && change.oldTuple ? change.oldTuple : tuple) : [];
        const record = conflictRecord(m, type, resolution, key, version);
        if (resolution === 'error') throw new ConflictHaltError([record]);
        total.conflicts.push(record);
        (total.tables as Set<string>).add(tableName(m));
        if (resolution === 'dead_letter') {
          const relation = this.relations.message(change.relationId) as RelationMessage;
          const e = err as { message?: string; constraint?: string };
          await this.session.run(
            deadLetterStatement(deadLetter, relation, change, version, {
              type,
              schema: m.local.schema,
              table: m.local.name,
              reason: e.message ?? 'unique violation',
              sqlstate: UNIQUE_VIOLATION,
              constraint: e.constraint ?? null,
              column: null,
              key: Object.fromEntries(m.key.map((c, i) => [c.name, key[i] ?? null])),
            }),
          );
        }
      }
    }
    return total;
  }

  private readonly uniqueKeys = new Map<TableMapping, (readonly MappedColumn[])[]>();

  /** How many unique keys other than the primary key the new row collides with (inside the savepoint). */
  private async uniqueCollisions(m: TableMapping, change: InsertMessage | UpdateMessage): Promise<number> {
    let keys = this.uniqueKeys.get(m);
    if (!keys) {
      const r = await this.session.pg.query<{ cols: string[] }>(
        `SELECT array_agg(a.attname::text ORDER BY array_position(i.indkey::int2[], a.attnum)) AS cols
           FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
          WHERE i.indrelid = $1 AND i.indisunique AND NOT i.indisprimary AND i.indexprs IS NULL AND i.indpred IS NULL
          GROUP BY i.indexrelid`,
        [m.local.oid],
      );
      keys = r.rows
        .map((row) => row.cols.map((name) => m.columns.find((c) => c.name === name)))
        .filter((cols): cols is MappedColumn[] => cols.every((c) => c !== undefined));
      this.uniqueKeys.set(m, keys);
    }
    const self = m.key.length && change.tag === 'update' && change.oldTuple ? keyOf(m, change.oldTuple) : keyOf(m, change.newTuple);
    let collisions = 0;
    for (const cols of keys) {
      const values: unknown[] = [];
      const match = cols.map((c) => {
        const v = change.newTuple[c.index];
        values.push(v === null || v === undefined || v === UNCHANGED_TOAST ? null : typeof v === 'string' ? v : v.toString('utf8'));
        return `t.${quoteIdent(c.name)} = $${values.length}::${c.type}`;
      });
      const notSelf = m.key.map((c, i) => {
        values.push(self[i] ?? null);
        return `t.${quoteIdent(c.name)} = $${values.length}::${c.type}`;
      });
      const r = await this.session.pg.query<{ hit: boolean }>(
        `SELECT EXISTS (SELECT 1 FROM ${qualifiedName(m.local.schema, m.local.name)} AS t WHERE ${match.join(' AND ')}` +
          `${notSelf.length ? ` AND NOT (${notSelf.join(' AND ')})` : ''}) AS hit`,
        values,
      );
      if (r.rows[0]?.hit) collisions++;
    }
    return collisions;
  }

  /** Loads the mapping of every table of the batch, then plans it. */
  private async plan(changes: readonly ChangeMessage[]): Promise<Run[]> {
    for (const change of changes) {
      try {
        if (change.tag === 'truncate') for (const id of change.relationIds) await this.mapping(id);
        else await this.mapping(change.relationId);
      } catch (err) {
        if (err instanceof SchemaMismatchError && change.tag !== 'truncate') throw err.withRow(remoteRow(this.relations.message(change.relationId), change));
        throw err;
      }
    }
    return this.planWith(changes, (id) => this.relations.get(id)) as Run[];
  }

  /** Splits a batch into runs; null when a table has no mapping in `mappingOf`. */
  private planWith(changes: readonly ChangeMessage[], mappingOf: (relationId: number) => TableMapping | undefined): Run[] | null {
    const runs: Run[] = [];
    let current: Run | null = null;
    const push = (run: Run): void => {
      runs.push(run);
      current = run;
    };
    for (const change of changes) {
      if (change.tag === 'truncate') {
        const mappings = change.relationIds.map(mappingOf);
        if (mappings.some((m) => m === undefined)) return null;
        const first = mappings[0];
        if (first) push(newRun(first, 'truncate', 'truncate', [], [change]));
        current = null;
        continue;
      }
      const m = mappingOf(change.relationId);
      if (!m) return null;
      const step = describe(m, change);
      const cur = current as Run | null;
      const keyText = step.key ? (step.key.length === 1 && step.key[0] !== null ? (step.key[0] as string) : JSON.stringify(step.key)) : null;
      if (
        !cur ||
        cur.mapping !== m ||
        cur.signature !== step.signature ||
        step.kind === 'identity' ||
        step.signature === KEY_CHANGE ||
        (keyText !== null && cur.keySet.has(keyText))
      ) {
        push(newRun(m, step.kind, step.signature, step.setColumns, []));
      }
      const run = current as unknown as Run;
      run.changes.push(change);
      if (step.row) run.rows.push(step.row);
      if (step.kind === 'update') {
        run.fullRows.push(step.fullRow);
        run.oldRows.push(change.tag === 'update' && change.oldKind === 'full' ? change.oldTuple : null);
      }
      if (step.key) run.oldKeys.push(step.key);
      if (keyText !== null) run.keySet.add(keyText);
    }
    return runs;
  }

  private statement(run: Run, version: RemoteVersion): Statement {
    switch (run.kind) {
      case 'insert':
        return upsertRows(run.mapping, run.rows, version);
      case 'update':
        return updateRows(run.mapping, run.oldKeys, run.rows, run.fullRows, run.setColumns, version, run.signature === KEY_CHANGE, run.oldRows);
      case 'delete':
        return deleteRows(run.mapping, run.oldKeys, version);
      case 'identity': {
        const c = run.changes[0];
        if (c?.tag === 'delete') return deleteByIdentity(run.mapping, c.oldTuple);
        if (c?.tag === 'update') return updateByIdentity(run.mapping, c.oldTuple ?? c.newTuple, c.newTuple);
        throw new SchemaMismatchError('identity run without an update or delete');
      }
      case 'truncate': {
        const c = run.changes[0];
        if (c?.tag !== 'truncate') throw new SchemaMismatchError('truncate run without a truncate');
        const all = c.relationIds.map((id) => this.relations.get(id)).filter((m): m is TableMapping => m !== undefined);
        return truncateTables(all, c.cascade, c.restartIdentity);
      }
      default:
        return assertNever(run.kind);
    }
  }

  /**
   * Second look at the update and delete rows that the first statement did not write, on a fresh
   * snapshot. A local transaction receives its commit timestamp before it becomes visible (xact.c:
   * RecordTransactionCommit, then WAL flush and synchronous replication, then ProcArrayEndTransaction),
   * so a local change that is older than the remote one can still be invisible to the statement's
   * snapshot: the statement then waits for its row lock and finds the row gone (an older delete), or
   * decides on a state that no longer holds. The statement that waited has let that transaction
   * finish, so running the same rows again decides on what is really there. Rows whose key another
   * run of the batch also touches are left alone: running them again would reorder the changes.
   * Results replace the first ones in `unwritten`.
   */
  private async recheck(runs: readonly Run[], unwritten: Map<Run, Record<string, unknown>[]>, version: RemoteVersion, out: BatchOutcome): Promise<void> {
    const candidates = runs.some(
      (run) => (run.kind === 'update' || run.kind === 'delete') && run.signature !== KEY_CHANGE && (unwritten.get(run)?.length ?? 0) > 0,
    );
    if (!candidates) return;
    const touches = new Map<string, number>();
    const touch = (m: TableMapping, k: Key): void => {
      const id = `${tableName(m)} ${JSON.stringify(k)}`;
      touches.set(id, (touches.get(id) ?? 0) + 1);
    };
    for (const run of runs) {
      for (const k of run.oldKeys) touch(run.mapping, k);
      if (run.kind === 'insert' && run.mapping.key.length) for (const r of run.rows) touch(run.mapping, keyOf(run.mapping, r));
    }
    const again: {
      run: Run;
      ords: number[];
      sub: Run;
      main: Promise<{ rows: Record<string, unknown>[] }>;
      undo: Promise<{ rows: Record<string, unknown>[] }> | null;
    }[] = [];
    for (const run of runs) {
      if ((run.kind !== 'update' && run.kind !== 'delete') || run.signature === KEY_CHANGE) continue;
      const ords = (unwritten.get(run) ?? [])
        .filter((r) => r.resurrected !== true && r.overwritten !== true) // written after all
        .map((r) => Number(r.ord))
        .filter((ord) => touches.get(`${tableName(run.mapping)} ${JSON.stringify(run.oldKeys[ord - 1])}`) === 1);
      if (ords.length === 0) continue;
      const sub = subRun(run, ords);
      const runVersion = { ...version, rules: applyRules(this.policyOf(tableName(run.mapping))) };
      const main = this.session.run(this.statement(sub, runVersion));
      const undo = sub.kind === 'update' ? this.session.run(undoDeletedLater(sub.mapping, sub.oldKeys, runVersion)) : null;
      again.push({ run, ords, sub, main, undo });
    }
    if (again.length === 0) return;
    const settled = await Promise.allSettled(again.flatMap((a) => (a.undo ? [a.main, a.undo] : [a.main])));
    const failure = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failure) throw failure.reason;
    for (const a of again) {
      const second = (await a.main).rows.map((r) => ({ ...r, ord: a.ords[Number(r.ord) - 1] }));
      const kept = (unwritten.get(a.run) ?? []).filter((r) => !a.ords.includes(Number(r.ord)));
      unwritten.set(a.run, [...kept, ...second]);
      if (a.undo) {
        const undone = (await a.undo).rows;
        this.accountUndone(
          a.sub.mapping,
          a.sub.oldKeys,
          a.sub.oldKeys.map(() => 'update'),
          undone,
          version,
          out,
        );
      }
    }
  }

  /** Rows written and then undone because a newer delete committed meanwhile (see undoDeletedLater). */
  private accountUndone(
    m: TableMapping,
    written: readonly Key[],
    ops: readonly ('insert' | 'update')[],
    rows: Record<string, unknown>[],
    version: RemoteVersion,
    out: BatchOutcome,
  ): void {
    for (const r of rows) {
      const i = Number(r.ord) - 1;
      out.applied[ops[i] ?? 'insert'] -= 1;
      out.conflicts.push(conflictRecord(m, 'update_deleted', 'skip', written[i] ?? [], version));
    }
  }

  private account(run: Run, rows: Record<string, unknown>[], version: RemoteVersion, out: BatchOutcome): void {
    const policy = this.policyOf(tableName(run.mapping)).policy;
    // What a remote change that does not win is recorded as, per policy.
    const loses: Resolution = policy === 'error' ? 'error' : policy === 'skip' ? 'skip' : 'keep_local';
    const skipped: Resolution = policy === 'error' ? 'error' : 'skip';
    let row: Record<string, unknown> = {};
    const conflict = (ord: number, type: ConflictRecord['type'], resolution: ConflictRecord['resolution']): void => {
      const change = run.changes[ord - 1];
      out.conflicts.push({
        ...conflictRecord(run.mapping, type, resolution, run.oldKeys[ord - 1] ?? [], version),
        ...(change && change.tag !== 'truncate' ? { remoteTuple: tupleObject(run.mapping, change.tag === 'delete' ? change.oldTuple : change.newTuple) } : {}),
        ...(row.local !== undefined && row.local !== null ? { localTuple: row.local } : {}),
      });
    };
    switch (run.kind) {
      case 'insert': {
        // A table without a key has nothing to conflict on: its statement returns one row, the count.
        if (run.mapping.key.length === 0) {
          out.applied.insert += Number(rows[0]?.n ?? 0);
          return;
        }
        let notWritten = 0;
        for (const r of rows) {
          row = r;
          const ord = Number(r.ord);
          if (r.inserted === false) {
            conflict(ord, 'insert_exists', 'apply_remote');
            continue;
          }
          notWritten++;
          // Not written: a newer local row, or a newer tombstone (deleted later on some node).
          if (r.present) conflict(ord, 'insert_exists', loses);
          else conflict(ord, 'update_deleted', skipped);
        }
        out.applied.insert += run.rows.length - notWritten;
        return;
      }
      case 'update': {
        let notUpdated = 0;
        for (const r of rows) {
          row = r;
          const ord = Number(r.ord);
          if (r.overwritten === true) {
            conflict(ord, 'update_origin_differs', 'apply_remote');
            continue;
          }
          notUpdated++;
          if (r.present) conflict(ord, 'update_origin_differs', loses);
          else if (r.resurrected) {
            conflict(ord, r.deleted_later ? 'update_deleted' : 'update_missing', 'apply_remote');
            out.applied.update++;
          } else conflict(ord, r.deleted_later ? 'update_deleted' : 'update_missing', skipped);
        }
        out.applied.update += run.oldKeys.length - notUpdated;
        return;
      }
      case 'delete': {
        let notDeleted = 0;
        for (const r of rows) {
          row = r;
          if (r.overwritten === true) {
            conflict(Number(r.ord), 'delete_origin_differs', 'apply_remote');
            continue;
          }
          notDeleted++;
          conflict(Number(r.ord), r.present ? 'delete_origin_differs' : 'delete_missing', r.present ? loses : 'skip');
        }
        out.applied.delete += run.oldKeys.length - notDeleted;
        return;
      }
      case 'identity': {
        const c = run.changes[0];
        const op = c?.tag === 'delete' ? 'delete' : 'update';
        if (rows.length) out.applied[op] += 1;
        else conflict(1, op === 'delete' ? 'delete_missing' : 'update_missing', 'skip');
        return;
      }
      case 'truncate':
        out.applied.truncate += 1;
        return;
      default:
        assertNever(run.kind);
    }
  }
}

/** The row of pgbidi.dead_letters for a change set aside, complete enough to be applied again (dead-letter.ts). */
function deadLetterStatement(
  at: { readonly peer: string; readonly commitLsn: string },
  relation: RelationMessage,
  change: Exclude<ChangeMessage, { tag: 'truncate' }>,
  version: RemoteVersion,
  d: Pick<Rejection, 'schema' | 'table' | 'reason' | 'sqlstate' | 'constraint' | 'column' | 'key'> & { readonly type: string },
): Statement {
  return {
    text: `INSERT INTO ${METADATA_SCHEMA}.dead_letters (peer, conflict_type, table_schema, table_name, op, change, reason, sqlstate, constraint_name, remote_commit_ts, remote_commit_lsn, column_name, key)
           VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9, $10::timestamptz, $11::pg_lsn, $12, $13::jsonb)`,
    values: [
      at.peer,
      d.type,
      d.schema,
      d.table,
      change.tag,
      JSON.stringify(storeChange(relation, change)),
      d.reason,
      d.sqlstate,
      d.constraint,
      version.commitTimestamp,
      at.commitLsn,
      d.column,
      JSON.stringify(d.key),
    ],
  };
}

function conflictRecord(m: TableMapping, type: ConflictType, resolution: Resolution, key: Key, version: RemoteVersion): ConflictRecord {
  return {
    type,
    resolution,
    schema: m.local.schema,
    table: m.local.name,
    key,
    remoteCommitTimestamp: version.commitTimestamp,
    remoteNode: version.node,
  };
}

function runOp(r: Run): ChangeOp {
  if (r.kind === 'identity') return r.changes[0]?.tag === 'delete' ? 'delete' : 'update';
  return r.kind;
}

/** A change as the operator can find it: its operation and the key values the peer sent (its replica identity). */
function remoteRow(relation: RelationMessage | undefined, change: Exclude<ChangeMessage, { tag: 'truncate' }>): string {
  const tuple = change.tag === 'delete' ? change.oldTuple : change.tag === 'update' && change.oldTuple ? change.oldTuple : change.newTuple;
  const cols = relation?.columns ?? [];
  const keyed = cols.some((c) => c.isKey) ? cols.filter((c) => c.isKey) : cols;
  const values: Record<string, string | null> = {};
  for (const c of keyed) {
    const v = tuple[cols.indexOf(c)];
    if (v === undefined || v === UNCHANGED_TOAST) continue;
    values[c.name] = v === null ? null : typeof v === 'string' ? v : v.toString('utf8');
  }
  return `${change.tag} ${JSON.stringify(values)}`;
}

function tupleObject(m: TableMapping, tuple: Tuple): Record<string, string | null> {
  const out: Record<string, string | null> = {};
  for (const c of m.columns) {
    const v = tuple[c.index];
    if (v === undefined || v === UNCHANGED_TOAST) continue;
    out[c.name] = v === null ? null : typeof v === 'string' ? v : v.toString('utf8');
  }
  return out;
}

function tableName(m: TableMapping): string {
  return `${m.local.schema}.${m.local.name}`;
}

function newRun(mapping: TableMapping, kind: Run['kind'], signature: string, setColumns: readonly MappedColumn[], changes: ChangeMessage[]): Run {
  return { mapping, kind, signature, rows: [], fullRows: [], oldRows: [], oldKeys: [], keySet: new Set(), setColumns, changes };
}

/** The rows of a run at the given 1-based ordinals, as a run of their own. */
function subRun(run: Run, ords: readonly number[]): Run {
  const pick = <T>(xs: readonly T[]): T[] => (xs.length ? ords.map((o) => xs[o - 1] as T) : []);
  return {
    ...run,
    rows: pick(run.rows),
    fullRows: pick(run.fullRows),
    oldRows: pick(run.oldRows),
    oldKeys: pick(run.oldKeys),
    keySet: new Set(),
    changes: pick(run.changes),
  };
}

interface Step {
  readonly kind: Run['kind'];
  readonly signature: string;
  readonly row: Row | null;
  readonly fullRow: Row | null;
  readonly key: Key | null;
  readonly setColumns: readonly MappedColumn[];
}

function keyOf(m: TableMapping, tuple: Tuple): Key {
  return m.key.map((c) => {
    const v = tuple[c.index] ?? null;
    if (v === UNCHANGED_TOAST) throw new SchemaMismatchError(`key column ${c.name} arrived as an unchanged TOAST value`);
    return v === null ? null : typeof v === 'string' ? v : v.toString('utf8');
  });
}

/**
 * The complete new row of an update, for re-creating a row that is missing here. Unchanged TOAST
 * values are only known from the old row under REPLICA IDENTITY FULL (technical research §2.3);
 * filling them from a local row would not converge.
 */
function fullRow(change: UpdateMessage): Row | null {
  const old = change.oldKind === 'full' ? change.oldTuple : null;
  const row = change.newTuple.map((v, i) => (v === UNCHANGED_TOAST ? (old?.[i] ?? UNCHANGED_TOAST) : v));
  return row.includes(UNCHANGED_TOAST) ? null : row;
}

function describe(m: TableMapping, change: Exclude<ChangeMessage, { tag: 'truncate' }>): Step {
  const tuple = change.tag === 'delete' ? change.oldTuple : change.newTuple;
  if (tuple.length !== m.remoteColumnCount) {
    throw new SchemaMismatchError(`${tableName(m)}: tuple has ${tuple.length} columns, the Relation message announced ${m.remoteColumnCount}`);
  }
  if (m.key.length === 0) {
    // Identified by the full row (REPLICA IDENTITY FULL, no primary key).
    if (change.tag === 'insert') return { kind: 'insert', signature: 'insert', row: change.newTuple, fullRow: null, key: null, setColumns: [] };
    return { kind: 'identity', signature: 'identity', row: null, fullRow: null, key: null, setColumns: [] };
  }
  switch (change.tag) {
    case 'insert':
      return { kind: 'insert', signature: 'insert', row: change.newTuple, fullRow: null, key: keyOf(m, change.newTuple), setColumns: [] };
    case 'delete':
      return { kind: 'delete', signature: 'delete', row: null, fullRow: null, key: keyOf(m, change.oldTuple), setColumns: [] };
    case 'update': {
      const newKey = keyOf(m, change.newTuple);
      const oldKey = change.oldTuple ? keyOf(m, change.oldTuple) : newKey;
      const keyChanged = JSON.stringify(oldKey) !== JSON.stringify(newKey);
      const setColumns = m.columns.filter((c) => change.newTuple[c.index] !== UNCHANGED_TOAST && !c.identityAlways && (keyChanged || !c.isKey));
      // Key changes run one row at a time: the new key may collide with another row of the batch.
      const signature = keyChanged ? KEY_CHANGE : `update:${setColumns.map((c) => c.index).join(',')}`;
      return { kind: 'update', signature, row: change.newTuple, fullRow: fullRow(change), key: oldKey, setColumns };
    }
    default:
      return assertNever(change);
  }
}
