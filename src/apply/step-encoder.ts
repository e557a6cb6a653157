import type { Resolution } from '../conflict/conflict-types.js';
import type { ChangeMessage, Tuple, TupleValue, UpdateMessage } from '../protocol/pgoutput-messages.js';
import { UNCHANGED_TOAST } from '../protocol/pgoutput-messages.js';
import type { RemoteTransaction } from '../protocol/remote-transaction.js';
import type { StepKind, StepShape } from './apply-procedure-sql.js';
import { keyLock, lockOrder } from './key-locks.js';
import type { KeyLock } from './key-locks.js';
import type { ApplyRules } from './statements.js';
import type { MappedColumn, TableMapping } from './table-mapping.js';

/**
 * Pure: turns small remote transactions into the apply procedure's steps (apply-procedure-sql.ts).
 * A transaction is taken only when the procedure decides every one of its changes exactly as the
 * multi-row statements would; anything else (TRUNCATE, a key change, a table without a primary key,
 * the delta and error policies, a tuple that does not match its Relation message) leaves the whole
 * transaction to the statement path, which reports such cases with their own errors and conflicts.
 */

/** How a table's changes are resolved: the SQL rules, and what a losing change is recorded as. */
export interface ShapePolicy {
  readonly rules: ApplyRules;
  readonly losing: Resolution;
  /** The procedure does not implement this policy (delta counters, halting on conflicts). */
  readonly procedure: boolean;
}

type Key = (string | null)[];

const WHOLE_SLOT: Record<StepKind, number> = { insert: 0, update: 2, delete: 4 };

/** One step of an encoded group, for reading the results back. */
export interface EncodedStep {
  readonly txn: number;
  /** null for a key-lock step. */
  readonly shape: StepShape | null;
  readonly key: Key;
}

export interface EncodedGroup {
  readonly txns: readonly RemoteTransaction[];
  readonly steps: readonly EncodedStep[];
  readonly nsteps: readonly number[];
  readonly shapeIds: readonly number[];
  readonly values: readonly (string | null)[];
}

/** The shapes seen so far; `generation` grows whenever one is added (the procedure must be redefined). */
export class ShapeRegistry {
  private readonly bySignature = new Map<string, StepShape>();
  private readonly mappingIds = new WeakMap<TableMapping, number>();
  /** Whole-row shapes by mapping, at WHOLE_SLOT[kind] (+1 when complete); dropped with the mapping's shapes. */
  private readonly wholeShapes = new WeakMap<TableMapping, StepShape[]>();
  private nextMappingId = 1;
  private nextShapeId = 1;
  generation = 0;

  shape(
    mapping: TableMapping,
    kind: StepKind,
    carried: readonly MappedColumn[],
    sent: readonly MappedColumn[],
    complete: boolean,
    policy: ShapePolicy,
  ): StepShape {
    // Inserts, deletes and whole-row updates carry every column: their shapes are kept per mapping
    // too, found without building a signature (once per change, in every transaction).
    const whole = carried === mapping.columns && sent === mapping.columns;
    const slot = whole ? WHOLE_SLOT[kind] + (complete ? 1 : 0) : -1;
    let wholes = this.wholeShapes.get(mapping);
    const known = wholes?.[slot];
    if (known) return known;
    let mid = this.mappingIds.get(mapping);
    if (mid === undefined) {
      mid = this.nextMappingId++;
      this.mappingIds.set(mapping, mid);
    }
    const signature = whole
      ? `${mid}|${kind}|${complete}`
      : `${mid}|${kind}|${carried.map((c) => c.index).join(',')}|${sent.map((c) => c.index).join(',')}|${complete}`;
    let s = this.bySignature.get(signature);
    if (!s) {
      s = {
        id: this.nextShapeId++,
        kind,
        mapping,
        table: `${mapping.local.schema}.${mapping.local.name}`,
        carried,
        sent,
        complete,
        rules: policy.rules,
        losing: policy.losing,
      };
      this.bySignature.set(signature, s);
      this.generation++;
    }
    if (whole) {
      if (!wholes) this.wholeShapes.set(mapping, (wholes = []));
      wholes[slot] = s;
    }
    return s;
  }

  /** The shapes of current mappings only (a Relation message replaces a relation's mapping). */
  current(isCurrent: (m: TableMapping) => boolean): StepShape[] {
    for (const [signature, s] of this.bySignature) {
      if (isCurrent(s.mapping)) continue;
      this.bySignature.delete(signature);
      this.wholeShapes.delete(s.mapping);
    }
    return [...this.bySignature.values()];
  }
}

function text(v: TupleValue | undefined): string | null {
  if (v === undefined || v === null) return null;
  if (v === UNCHANGED_TOAST) throw new Error('unchanged TOAST value has no text');
  return typeof v === 'string' ? v : v.toString('utf8');
}

function keyOf(m: TableMapping, tuple: Tuple): Key | null {
  const key: Key = [];
  for (const c of m.key) {
    const v = tuple[c.index];
    if (v === UNCHANGED_TOAST) return null;
    key.push(text(v));
  }
  return key;
}

function sameKey(a: Key, b: Key): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

/** The complete new row of an update: unchanged TOAST values filled from the old row under REPLICA IDENTITY FULL. */
function fullRow(change: UpdateMessage): Tuple | null {
  const old = change.oldKind === 'full' ? change.oldTuple : null;
  const row = change.newTuple.map((v, i) => (v === UNCHANGED_TOAST ? (old?.[i] ?? UNCHANGED_TOAST) : v));
  return row.includes(UNCHANGED_TOAST) ? null : row;
}

function carriedValues(tuple: Tuple, columns: readonly MappedColumn[]): (string | null)[] | null {
  const out: (string | null)[] = [];
  for (const c of columns) {
    const v = tuple[c.index];
    if (v === UNCHANGED_TOAST) return null;
    out.push(text(v));
  }
  return out;
}

interface EncodedChange {
  readonly shape: StepShape;
  readonly key: Key;
  readonly values: (string | null)[];
}

function encodeChange(
  change: ChangeMessage,
  mappingOf: (relationId: number) => TableMapping | undefined,
  policyOf: (m: TableMapping) => ShapePolicy,
  registry: ShapeRegistry,
): EncodedChange | null {
  if (change.tag === 'truncate') return null;
  const m = mappingOf(change.relationId);
  if (!m || m.key.length === 0) return null;
  const policy = policyOf(m);
  if (!policy.procedure) return null;
  switch (change.tag) {
    case 'insert': {
      if (change.newTuple.length !== m.remoteColumnCount) return null;
      const key = keyOf(m, change.newTuple);
      const values = carriedValues(change.newTuple, m.columns);
      if (!key || !values) return null;
      return { shape: registry.shape(m, 'insert', m.columns, m.columns, true, policy), key, values };
    }
    case 'delete': {
      if (change.oldTuple.length !== m.remoteColumnCount) return null;
      const key = keyOf(m, change.oldTuple);
      const values = carriedValues(change.oldTuple, m.columns);
      if (!key || !values) return null;
      return { shape: registry.shape(m, 'delete', m.columns, m.columns, true, policy), key, values };
    }
    case 'update': {
      if (change.newTuple.length !== m.remoteColumnCount) return null;
      if (change.oldTuple && change.oldTuple.length !== m.remoteColumnCount) return null;
      const key = keyOf(m, change.newTuple);
      if (!key) return null;
      if (change.oldTuple) {
        const old = keyOf(m, change.oldTuple);
        if (!old || !sameKey(old, key)) return null; // a key change: the statement path tombstones the old key
      }
      const toasted = change.newTuple.includes(UNCHANGED_TOAST);
      const sent = toasted ? m.columns.filter((c) => change.newTuple[c.index] !== UNCHANGED_TOAST) : m.columns;
      const full = toasted ? fullRow(change) : change.newTuple;
      const carried = full ? m.columns : sent;
      const values = carriedValues(full ?? change.newTuple, carried);
      if (!values) return null;
      return { shape: registry.shape(m, 'update', carried, sent, full !== null, policy), key, values };
    }
    default:
      return null;
  }
}

/**
 * Encodes transactions from the first one on, up to `limits`, stopping before the first one the
 * procedure cannot take. `locks`: take advisory key locks (other peers' sessions apply concurrently).
 * Transactions without changes (heartbeats) are taken as empty ones.
 */
export function encodeGroup(
  txns: readonly RemoteTransaction[],
  mappingOf: (relationId: number) => TableMapping | undefined,
  policyOf: (m: TableMapping) => ShapePolicy,
  registry: ShapeRegistry,
  options: { readonly locks: boolean; readonly maxSteps: number },
): EncodedGroup {
  const taken: RemoteTransaction[] = [];
  const steps: EncodedStep[] = [];
  const nsteps: number[] = [];
  const shapeIds: number[] = [];
  const values: (string | null)[] = [];
  for (const txn of txns) {
    const encoded: EncodedChange[] = [];
    let eligible = true;
    for (const change of txn.changes) {
      const e = encodeChange(change, mappingOf, policyOf, registry);
      if (!e) {
        eligible = false;
        break;
      }
      encoded.push(e);
    }
    if (!eligible) break;
    const locks: KeyLock[] = options.locks ? lockOrder(encoded.map((e) => keyLock(e.shape.table, e.key))) : [];
    const count = locks.length + encoded.length;
    if (taken.length > 0 && steps.length + count > options.maxSteps) break;
    const index = taken.length;
    taken.push(txn);
    nsteps.push(count);
    for (const l of locks) {
      steps.push({ txn: index, shape: null, key: [] });
      shapeIds.push(0);
      values.push(String(l[0]), String(l[1]));
    }
    for (const e of encoded) {
      steps.push({ txn: index, shape: e.shape, key: e.key });
      shapeIds.push(e.shape.id);
      for (const v of e.values) values.push(v);
    }
  }
  return { txns: taken, steps, nsteps, shapeIds, values };
}
