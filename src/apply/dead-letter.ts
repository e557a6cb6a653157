import type { RelationMessage, Tuple, TupleValue, ChangeMessage } from '../protocol/pgoutput-messages.js';
import { UNCHANGED_TOAST } from '../protocol/pgoutput-messages.js';

/**
 * A remote row change stored as JSON in pgbidi.dead_letters, complete enough to be applied again:
 * the relation as the peer described it and the tuples ('u' columns as {"unchanged": true}).
 */
export interface StoredChange {
  readonly relation: { readonly namespace: string; readonly name: string; readonly columns: readonly { name: string; isKey: boolean }[] };
  readonly op: 'insert' | 'update' | 'delete';
  readonly oldKind: 'key' | 'full' | null;
  readonly old: readonly StoredValue[] | null;
  readonly new: readonly StoredValue[] | null;
}

type StoredValue = string | null | { readonly unchanged: true } | { readonly base64: string };

function store(t: Tuple | null): StoredValue[] | null {
  return t ? t.map((v) => (v === UNCHANGED_TOAST ? { unchanged: true } : Buffer.isBuffer(v) ? { base64: v.toString('base64') } : v)) : null;
}

function load(t: readonly StoredValue[] | null): TupleValue[] | null {
  return t ? t.map((v) => (v === null || typeof v === 'string' ? v : 'unchanged' in v ? UNCHANGED_TOAST : Buffer.from(v.base64, 'base64'))) : null;
}

export function storeChange(relation: RelationMessage, change: Exclude<ChangeMessage, { tag: 'truncate' }>): StoredChange {
  const rel = { namespace: relation.namespace, name: relation.name, columns: relation.columns.map((c) => ({ name: c.name, isKey: c.isKey })) };
  switch (change.tag) {
    case 'insert':
      return { relation: rel, op: 'insert', oldKind: null, old: null, new: store(change.newTuple) };
    case 'update':
      return { relation: rel, op: 'update', oldKind: change.oldKind, old: store(change.oldTuple), new: store(change.newTuple) };
    case 'delete':
      return { relation: rel, op: 'delete', oldKind: change.oldKind, old: store(change.oldTuple), new: null };
  }
}

/** The relation and change back as decoded messages, under a relation id private to the retry. */
export function loadChange(stored: StoredChange, relationId: number): { relation: RelationMessage; change: ChangeMessage } {
  const relation: RelationMessage = {
    tag: 'relation',
    relationId,
    namespace: stored.relation.namespace,
    name: stored.relation.name,
    replicaIdentity: stored.oldKind === 'full' ? 'full' : 'default',
    columns: stored.relation.columns.map((c) => ({ name: c.name, isKey: c.isKey, typeOid: 0, typeMod: -1 })),
  };
  const oldTuple = load(stored.old);
  const newTuple = load(stored.new);
  switch (stored.op) {
    case 'insert':
      return { relation, change: { tag: 'insert', relationId, newTuple: newTuple ?? [] } };
    case 'update':
      return { relation, change: { tag: 'update', relationId, oldKind: stored.oldKind, oldTuple, newTuple: newTuple ?? [] } };
    case 'delete':
      return { relation, change: { tag: 'delete', relationId, oldKind: stored.oldKind ?? 'key', oldTuple: oldTuple ?? [] } };
  }
}
