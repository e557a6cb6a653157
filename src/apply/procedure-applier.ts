import type { ConflictRecord } from '../conflict/conflict-types.js';
import { METADATA_SCHEMA, TOMBSTONE_WRITES_SEQUENCE } from '../node/names.js';
import type { ChangeOp } from '../observability/metrics.js';
import { formatLsn, parseLsn } from '../protocol/lsn.js';
import type { Lsn } from '../protocol/lsn.js';
import { formatPgTimestamp } from '../protocol/pg-time.js';
import type { RemoteTransaction } from '../protocol/remote-transaction.js';
import { binaryInt4Array, binaryInt8Array, binaryTextArray } from '../util/binary-array.js';
import { arrayLiteral } from '../util/sql.js';
import { applyProcedureSql, decodeEvent, PROCEDURE_NAME } from './apply-procedure-sql.js';
import type { ApplySession } from './apply-session.js';
import type { RelationCache } from './relation-cache.js';
import { encodeGroup, ShapeRegistry } from './step-encoder.js';
import type { EncodedGroup, ShapePolicy } from './step-encoder.js';
import type { TableMapping } from './table-mapping.js';

/**
 * Applies groups of small peer transactions through the apply procedure (apply-procedure-sql.ts):
 * one CALL per group, one local commit per remote transaction inside it. Defines the procedure in
 * the session whenever a new step shape appears, and reads the results back into one outcome per
 * committed transaction, in order.
 */

/** What one committed remote transaction did, as the link accounts for it. */
export interface TransactionOutcome {
  readonly applied: Record<ChangeOp, number>;
  readonly conflicts: ConflictRecord[];
  readonly tables: readonly string[];
  /** Server clock (Unix ms) right after its COMMIT; null when unknown (read back after a failure). */
  readonly committedAtMs: number | null;
}

export interface GroupResult {
  /** The transactions of the group that committed, in order (a prefix of the group). */
  readonly committed: readonly TransactionOutcome[];
  /** The transactions the CALL was given; those after `committed` were not applied. */
  readonly size: number;
  /** Why the CALL stopped before the end: a step it hands back, or the error it raised. */
  readonly stopped: { readonly kind: 'handed_back' } | { readonly kind: 'error'; readonly error: unknown } | null;
}

export interface ProcedureApplierOptions {
  readonly peer: string;
  readonly origin: string;
  readonly policyOf: (m: TableMapping) => ShapePolicy;
  /** Other peers' sessions apply to this node concurrently: take advisory key locks. */
  readonly locks: boolean;
  /** Most steps in one CALL (a transaction is never split). */
  readonly maxSteps: number;
}

export class NodeNotSetUpError extends Error {
  readonly code = 'PGBIDI_NOT_SET_UP';
  constructor(peer: string) {
    super(`this node has no pgbidi schema or no replication origin for peer ${peer}: run pgbidi setup on it`);
    this.name = 'NodeNotSetUpError';
  }
}

const CALL_SQL =
  `CALL pg_temp.${PROCEDURE_NAME}($1::pg_lsn, $2::text, $3::pg_lsn[], $4::pg_lsn[], $5::timestamptz[], $6::int[], $7::int[], $8::text[], ` +
  `NULL, NULL, NULL, NULL)`;

/** The CALL's INOUT values, as text (parsed here: the driver's array parser showed in profiles). */
interface CallRow {
  done: string;
  events: string | null;
  commits: string | null;
  stop_step: string;
}

/** A one-dimensional array of numbers in PostgreSQL's text form ("{1,2.5,3}"). */
function numbers(text: string | null): number[] {
  if (text === null || text.length <= 2) return [];
  return text.slice(1, -1).split(',').map(Number);
}

const OPS: Record<string, ChangeOp> = { insert: 'insert', update: 'update', delete: 'delete' };
const NO_EVENTS: readonly never[] = [];

/** Shapes kept in the procedure besides those of the CALLs in flight (see define()). */
const MAX_RECENT_SHAPES = 64;

export class ProcedureApplier {
  private readonly registry = new ShapeRegistry();
  /** Shape ids of the procedure as last defined. */
  private defined = new Set<number>();
  /** Shape ids of the CALLs not yet answered, with how many of them use each. */
  private readonly pinned = new Map<number, number>();
  /** When each shape was last in a CALL (a counter), to keep the recent ones defined. */
  private readonly lastUsed = new Map<number, number>();
  private tick = 0;
  private readonly policies = new WeakMap<TableMapping, ShapePolicy>();
  private readonly policyOf = (m: TableMapping): ShapePolicy => {
    let p = this.policies.get(m);
    if (!p) this.policies.set(m, (p = this.options.policyOf(m)));
    return p;
  };

  constructor(
    private readonly session: ApplySession,
    private readonly relations: RelationCache,
    private readonly options: ProcedureApplierOptions,
  ) {}

  /**
   * Encodes the longest prefix of `txns` that the procedure can apply (possibly empty: the first
   * transaction needs the statement path). Loads the mappings it needs from the local catalog; a
   * table that cannot be mapped ends the prefix (the statement path reports it).
   */
  async encode(txns: readonly RemoteTransaction[]): Promise<EncodedGroup> {
    let usable = txns.length;
    scan: for (let i = 0; i < txns.length; i++) {
      for (const c of (txns[i] as RemoteTransaction).changes) {
        if (c.tag === 'truncate' || this.relations.get(c.relationId)) continue;
        try {
          await this.relations.load(c.relationId);
        } catch {
          usable = i;
          break scan;
        }
      }
    }
    return encodeGroup(txns.slice(0, usable), (id) => this.relations.get(id), this.policyOf, this.registry, {
      locks: this.options.locks,
      maxSteps: this.options.maxSteps,
    });
  }

  /**
   * Runs one CALL. `expected` is the origin's progress before it: the CALL refuses to apply anything
   * when that is not so (a CALL sent behind one that did not finish). Never throws for a failure of
   * the CALL itself: the committed prefix is reported with the error (the transaction after it is
   * the one that failed), read back from the origin's progress and pgbidi.conflicts.
   */
  async run(group: EncodedGroup, expected: Lsn): Promise<GroupResult> {
    const ids = group.shapeIds.filter((id) => id > 0);
    this.tick++;
    for (const id of ids) {
      this.lastUsed.set(id, this.tick);
      this.pinned.set(id, (this.pinned.get(id) ?? 0) + 1);
    }
    try {
      return await this.call(group, expected, new Set(ids));
    } finally {
      for (const id of ids) {
        const n = (this.pinned.get(id) ?? 1) - 1;
        if (n > 0) this.pinned.set(id, n);
        else this.pinned.delete(id);
      }
    }
  }

  private async call(group: EncodedGroup, expected: Lsn, needed: ReadonlySet<number>): Promise<GroupResult> {
    await this.define(needed);
    const txns = group.txns;
    const ends: Lsn[] = [];
    const commitLsns: Lsn[] = [];
    const commitTimes: bigint[] = [];
    for (const t of txns) {
      ends.push(t.commit.endLsn);
      commitLsns.push(t.commit.commitLsn);
      commitTimes.push(t.commit.commitTime);
    }
    // Binary arrays: thousands of values per CALL (binary-array.ts says why).
    const params = [
      formatLsn(expected),
      this.options.peer,
      binaryInt8Array(ends, 'pg_lsn'),
      binaryInt8Array(commitLsns, 'pg_lsn'),
      binaryInt8Array(commitTimes, 'timestamptz'),
      binaryInt4Array(group.nsteps),
      binaryInt4Array(group.shapeIds),
      binaryTextArray(group.values),
    ];
    let row: CallRow;
    try {
      const r = await this.session.run<CallRow>({ text: CALL_SQL, values: params }, { raw: true });
      row = r.rows[0] as CallRow;
    } catch (error) {
      return { committed: await this.readBack(group), size: txns.length, stopped: { kind: 'error', error } };
    }
    const done = Number(row.done);
    const outcomes = this.outcomes(group, done, numbers(row.events), numbers(row.commits));
    const stopped = done < txns.length ? { kind: 'handed_back' as const } : null;
    return { committed: outcomes, size: txns.length, stopped };
  }

  /**
   * (Re)defines the procedure when it lacks a shape that a CALL needs. It holds the shapes of the
   * CALLs not yet answered (a CALL sent before this definition runs after it: same session, in
   * order) and, of the others, the most recently used up to MAX_RECENT_SHAPES: a procedure with every
   * shape ever seen grows with the number of tables, and redefining and compiling it for each new
   * table made a workload over 1,000 tables quadratic (one small transaction per second after 200).
   */
  private async define(needed: ReadonlySet<number>): Promise<void> {
    if ([...needed].every((id) => this.defined.has(id))) return;
    const all = this.registry.current((m) => this.relations.get(m.relationId) === m);
    const must = all.filter((s) => needed.has(s.id) || this.pinned.has(s.id));
    const recent = all
      .filter((s) => !needed.has(s.id) && !this.pinned.has(s.id))
      .sort((x, y) => (this.lastUsed.get(y.id) ?? 0) - (this.lastUsed.get(x.id) ?? 0))
      .slice(0, Math.max(0, MAX_RECENT_SHAPES - must.length));
    const shapes = [...must, ...recent].sort((x, y) => x.id - y.id);
    this.constants ??= await this.readConstants();
    // Marked before the answer: a CALL sent meanwhile finds its shapes in this definition.
    this.defined = new Set(shapes.map((s) => s.id));
    try {
      // RETURNING old.* is new in PostgreSQL 18.
      await this.session.define(applyProcedureSql(shapes, { returningOld: this.session.serverVersionNum >= 180_000, ...this.constants }));
    } catch (err) {
      this.defined = new Set();
      throw err;
    }
  }

  private constants: { peerOrigin: number; epoch: string; tombstoneWrites: boolean } | null = null;

  private async readConstants(): Promise<{ peerOrigin: number; epoch: string; tombstoneWrites: boolean }> {
    // The tombstone-write mark came with a later setup: a node set up before it applies as before
    // (every transaction of remembered inserts reads the tombstones) until setup runs again.
    const r = await this.session.pg.query<{ ro: number | null; epoch: string | null; marked: boolean }>(
      `SELECT (SELECT roident::int FROM pg_catalog.pg_replication_origin WHERE roname = $1) AS ro,
              (SELECT created_at::text FROM ${METADATA_SCHEMA}.node) AS epoch,
              EXISTS (SELECT 1 FROM pg_catalog.pg_trigger
                       WHERE tgrelid = '${METADATA_SCHEMA}.tombstones'::regclass AND tgname = 'mark_tombstone_write' AND tgenabled = 'A')
              AND to_regclass('${METADATA_SCHEMA}.${TOMBSTONE_WRITES_SEQUENCE}') IS NOT NULL AS marked`,
      [this.options.origin],
    );
    const row = r.rows[0];
    if (row?.ro == null || row.epoch == null) throw new NodeNotSetUpError(this.options.peer);
    return { peerOrigin: row.ro, epoch: row.epoch, tombstoneWrites: row.marked };
  }

  private outcomes(group: EncodedGroup, done: number, events: readonly number[], commits: readonly number[]): TransactionOutcome[] {
    if (events.length === 0)
      return this.tally(
        group,
        done,
        () => NO_EVENTS,
        (i) => commits[i] ?? null,
      );
    const byStep = new Map<number, { type: ConflictRecord['type']; resolution: ConflictRecord['resolution'] }[]>();
    for (const code of events) {
      const e = decodeEvent(code);
      let list = byStep.get(e.step);
      if (!list) byStep.set(e.step, (list = []));
      list.push(e);
    }
    return this.tally(
      group,
      done,
      (step) => byStep.get(step) ?? [],
      (i) => commits[i] ?? null,
    );
  }

  /** One outcome per transaction of the first `done`, from the events of each step (1-based). */
  private tally(
    group: EncodedGroup,
    done: number,
    eventsOf: (step: number, txn: RemoteTransaction) => readonly { type: ConflictRecord['type']; resolution: ConflictRecord['resolution'] }[],
    committedAt: (txn: number) => number | null,
  ): TransactionOutcome[] {
    const out: TransactionOutcome[] = [];
    let step = 0;
    for (let i = 0; i < done; i++) {
      const txn = group.txns[i] as RemoteTransaction;
      const applied: Record<ChangeOp, number> = { insert: 0, update: 0, delete: 0, truncate: 0 };
      let conflicts: ConflictRecord[] | null = null;
      const tables: string[] = [];
      for (let s = 0; s < (group.nsteps[i] ?? 0); s++) {
        step++;
        const encoded = group.steps[step - 1];
        const shape = encoded?.shape;
        if (!encoded || !shape) continue;
        const op = OPS[shape.kind] as ChangeOp;
        const evs = eventsOf(step, txn);
        // Written unless one of its conflicts kept the local row (or undid the write).
        if (evs.every((e) => e.resolution === 'apply_remote')) applied[op]++;
        if (evs.length > 0) {
          conflicts ??= [];
          const remoteCommitTimestamp = formatPgTimestamp(txn.commit.commitTime);
          for (const e of evs) {
            conflicts.push({
              type: e.type,
              resolution: e.resolution,
              schema: shape.mapping.local.schema,
              table: shape.mapping.local.name,
              key: encoded.key,
              remoteCommitTimestamp,
              remoteNode: this.options.peer,
            });
          }
        }
        if (!tables.includes(shape.table)) tables.push(shape.table);
      }
      out.push({ applied, conflicts: conflicts ?? [], tables, committedAtMs: committedAt(i) });
    }
    return out;
  }

  /**
   * After a failed CALL: the transactions before the failure are committed (the origin's progress
   * says how many); their conflicts are read back from pgbidi.conflicts, where the procedure wrote
   * them in the same transactions.
   */
  private async readBack(group: EncodedGroup): Promise<TransactionOutcome[]> {
    const p = await this.session.pg.query<{ lsn: string | null }>('SELECT pg_catalog.pg_replication_origin_session_progress(false)::text AS lsn');
    const progress = p.rows[0]?.lsn ? parseLsn(p.rows[0].lsn) : 0n;
    let done = 0;
    while (done < group.txns.length && (group.txns[done] as RemoteTransaction).commit.endLsn <= progress) done++;
    if (done === 0) return [];
    const lsns = group.txns.slice(0, done).map((t) => formatLsn(t.commit.commitLsn));
    const r = await this.session.pg.query<{
      lsn: string;
      type: ConflictRecord['type'];
      resolution: ConflictRecord['resolution'];
      tbl: string;
      key: (string | null)[];
    }>(
      `SELECT remote_commit_lsn::text AS lsn, conflict_type AS type, resolution, table_schema || '.' || table_name AS tbl, key
         FROM ${METADATA_SCHEMA}.conflicts
        WHERE logged_at > now() - interval '1 hour' AND peer = $1 AND remote_commit_lsn = ANY($2::pg_lsn[])`,
      [this.options.peer, arrayLiteral(lsns)],
    );
    const logged = new Map<string, { type: ConflictRecord['type']; resolution: ConflictRecord['resolution'] }[]>();
    for (const c of r.rows) {
      const id = `${c.lsn}|${c.tbl}|${JSON.stringify(c.key)}`;
      let list = logged.get(id);
      if (!list) logged.set(id, (list = []));
      list.push({ type: c.type, resolution: c.resolution });
    }
    const lsnOf = (t: RemoteTransaction): string => formatLsn(t.commit.commitLsn);
    return this.tally(
      group,
      done,
      (step, txn) => {
        const s = group.steps[step - 1];
        if (!s?.shape) return [];
        const id = `${lsnOf(txn)}|${s.shape.mapping.local.schema}.${s.shape.mapping.local.name}|${JSON.stringify(s.key)}`;
        const list = logged.get(id) ?? [];
        logged.delete(id); // a key written twice in one transaction: its conflicts count once
        return list;
      },
      () => null,
    );
  }
}
