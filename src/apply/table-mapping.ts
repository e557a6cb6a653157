import type { RelationMessage } from '../protocol/pgoutput-messages.js';
import type { LocalTable } from './local-catalog.js';

/**
 * How one remote relation (as described by its latest Relation message) maps onto the local table:
 * columns are matched by name, so column order and dropped columns may differ between nodes.
 */
export interface MappedColumn {
  /** Position in the remote tuple. */
  readonly index: number;
  readonly name: string;
  readonly type: string;
  /** GENERATED ALWAYS identity: inserts need OVERRIDING SYSTEM VALUE, updates must not set it. */
  readonly identityAlways: boolean;
  readonly isKey: boolean;
}

export interface TableMapping {
  readonly relationId: number;
  readonly local: LocalTable;
  /** Remote columns that are written locally, in remote order. */
  readonly columns: readonly MappedColumn[];
  /** The local primary key, as remote tuple positions; empty for tables identified by the full row. */
  readonly key: readonly MappedColumn[];
  /** Remote tuple length, to check the tuples that arrive. */
  readonly remoteColumnCount: number;
}

export class SchemaMismatchError extends Error {
  readonly code = 'PGBIDI_SCHEMA_MISMATCH';
  constructor(message: string) {
    super(message);
    this.name = 'SchemaMismatchError';
  }
}

export function mapRelation(relation: RelationMessage, local: LocalTable): TableMapping {
  const where = `${relation.namespace}.${relation.name}`;
  const columns: MappedColumn[] = [];
  relation.columns.forEach((rc, index) => {
    const lc = local.columns.get(rc.name);
    if (!lc) throw new SchemaMismatchError(`column ${where}.${rc.name} exists on the peer but not on this node`);
    if (lc.generated) return; // recomputed locally from the other columns
    columns.push({
      index,
      name: rc.name,
      type: lc.type,
      identityAlways: lc.identity === 'a',
      isKey: local.primaryKey.includes(rc.name),
    });
  });
  const key: MappedColumn[] = [];
  for (const pk of local.primaryKey) {
    const c = columns.find((m) => m.name === pk);
    if (!c) throw new SchemaMismatchError(`primary key column ${where}.${pk} is not sent by the peer`);
    key.push(c);
  }
  return { relationId: relation.relationId, local, columns, key, remoteColumnCount: relation.columns.length };
}
