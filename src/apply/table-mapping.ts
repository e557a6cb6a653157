import type { RelationMessage } from '../protocol/pgoutput-messages.js';
import type { LocalTable } from './local-catalog.js';
import { qualifiedName, quoteIdent } from '../util/sql.js';

/**
 * How one remote relation (as described by its latest Relation message) maps onto the local table:
 * columns are matched by name, so column order and dropped columns may differ between nodes.
 */
export interface MappedColumn {
  /** Position in the remote tuple. */
  readonly index: number;
  readonly name: string;
  readonly type: string;
  /** The local column's type OID, when the catalog gave it. */
  readonly typeOid?: number;
  /** GENERATED ALWAYS identity: inserts need OVERRIDING SYSTEM VALUE, updates must not set it. */
  readonly identityAlways: boolean;
  readonly isKey: boolean;
  /**
   * The peer's text form of every value of this column can stand unquoted in an array literal
   * (arrays.html "Array Value Input": no delimiter, brace, double quote, backslash or surrounding
   * white space, never empty and never the word NULL), known from the peer's type, which wrote it.
   */
  readonly bareElement?: true;
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

/**
 * The peer sends a table or column that does not fit this node's schema. It concerns every row of
 * the table, so the link stops before the transaction and retries with backoff: once the schema is
 * fixed the next attempt applies it, nothing is skipped (`pgbidi resolve --peer P --retry` retries at
 * once). `row` is the first row that met the problem, by key column.
 */
export class SchemaMismatchError extends Error {
  readonly code = 'PGBIDI_SCHEMA_MISMATCH';
  constructor(
    readonly problem: string,
    readonly where: { readonly table?: string; readonly column?: string; readonly fix?: string; readonly row?: string } = {},
  ) {
    super(
      `${problem}${where.row ? `; first refused row: ${where.row}` : ''}${where.fix ? `; to fix: ${where.fix}` : ''}` +
        (where.fix ? '; the link retries with backoff and resumes by itself once the schema fits (pgbidi resolve --peer PEER --retry: at once)' : ''),
    );
    this.name = 'SchemaMismatchError';
  }

  /** The same problem, naming the first row (its key values) that met it. */
  withRow(row: string): SchemaMismatchError {
    return this.where.row ? this : new SchemaMismatchError(this.problem, { ...this.where, row });
  }
}

/** First OID of objects that are not built in (transam.h FirstNormalObjectId): only built-in type OIDs are the same on every node. */
const FIRST_NORMAL_OID = 16384;

/**
 * Built-in type pairs (peer → here) whose every value converts without loss through its text form:
 * a column widened on one node first (a rolling ALTER COLUMN … TYPE) keeps replicating. A value too
 * long for a narrower varchar is refused row by row (a dead letter), not here.
 */
const LOSSLESS: ReadonlyMap<number, readonly number[]> = new Map([
  [21, [23, 20, 1700]], // int2 → int4, int8, numeric
  [23, [20, 1700]], // int4 → int8, numeric
  [20, [1700]], // int8 → numeric
  [700, [701]], // float4 → float8
  [1043, [25]], // varchar → text
  [25, [1043]], // text → varchar
  [114, [3802]], // json → jsonb
]);

function sameType(remote: number, local: number): boolean {
  if (remote === 0 || remote >= FIRST_NORMAL_OID || local >= FIRST_NORMAL_OID || remote === local) return true;
  return LOSSLESS.get(remote)?.includes(local) ?? false;
}

/**
 * Built-in types (pg_type.dat OIDs) whose output, under the pinned DateStyle ISO and IntervalStyle
 * postgres (source/replication-connection.ts) and in every other style, is a number, a word (NaN,
 * Infinity, t, f, infinity), a date, time, interval, address or uuid: white space only inside.
 * bool, int8, int2, int4, oid, cidr, float4, float8, macaddr, inet, date, time, timestamp,
 * timestamptz, interval, timetz, numeric, uuid, pg_lsn. Not money (its thousands separator is a comma).
 */
const BARE_ELEMENT_TYPES: ReadonlySet<number> = new Set([16, 20, 21, 23, 26, 650, 700, 701, 829, 869, 1082, 1083, 1114, 1184, 1186, 1266, 1700, 2950, 3220]);

/** `typeName` names a built-in type OID (format_type on this node); the peer's types are only known by OID. */
export function mapRelation(relation: RelationMessage, local: LocalTable, typeName: (oid: number) => string = (oid) => `type OID ${oid}`): TableMapping {
  const where = `${relation.namespace}.${relation.name}`;
  const table = qualifiedName(local.schema, local.name);
  const columns: MappedColumn[] = [];
  relation.columns.forEach((rc, index) => {
    const lc = local.columns.get(rc.name);
    if (!lc) {
      throw new SchemaMismatchError(`column ${where}.${rc.name} exists on the peer but not on this node`, {
        table: where,
        column: rc.name,
        fix: `ALTER TABLE ${table} ADD COLUMN ${quoteIdent(rc.name)} ${rc.typeOid > 0 && rc.typeOid < FIRST_NORMAL_OID ? typeName(rc.typeOid) : '<its type on the peer>'}`,
      });
    }
    if (lc.generated) return; // recomputed locally from the other columns
    if (lc.typeOid !== undefined && !sameType(rc.typeOid, lc.typeOid)) {
      throw new SchemaMismatchError(`column ${where}.${rc.name} is ${lc.declaredType ?? lc.type} here but ${typeName(rc.typeOid)} on the peer`, {
        table: where,
        column: rc.name,
        fix: `give it the same type on every node (ALTER TABLE ${table} ALTER COLUMN ${quoteIdent(rc.name)} TYPE ${typeName(rc.typeOid)} here, or the other way on the peer)`,
      });
    }
    columns.push({
      index,
      name: rc.name,
      type: lc.type,
      ...(lc.typeOid !== undefined ? { typeOid: lc.typeOid } : {}),
      identityAlways: lc.identity === 'a',
      isKey: local.primaryKey.includes(rc.name),
      ...(BARE_ELEMENT_TYPES.has(rc.typeOid) ? { bareElement: true as const } : {}),
    });
  });
  const key: MappedColumn[] = [];
  for (const pk of local.primaryKey) {
    const c = columns.find((m) => m.name === pk);
    if (!c) {
      throw new SchemaMismatchError(`primary key column ${where}.${pk} is not sent by the peer`, {
        table: where,
        column: pk,
        fix: `give the table the same primary key on every node`,
      });
    }
    key.push(c);
  }
  // An old key ('K') holds only the peer's replica identity columns (flag bit 1), and an update sends
  // one only when such a column changed: a key column outside them would arrive as NULL in every
  // delete, and a change of it would look like an update of another row. No flagged column at all
  // (NOTHING, or no primary key there) means the peer cannot publish an update or delete of it.
  if (relation.replicaIdentity !== 'full' && relation.columns.some((rc) => rc.isKey)) {
    const outside = key.find((c) => relation.columns[c.index]?.isKey !== true);
    if (outside) {
      const byIndex = relation.replicaIdentity === 'index';
      throw new SchemaMismatchError(
        `primary key column ${where}.${outside.name} is not in the peer's replica identity (${byIndex ? 'REPLICA IDENTITY USING INDEX' : "the peer's primary key"}): its deletes and key changes cannot be applied by key`,
        {
          table: where,
          column: outside.name,
          fix:
            `${byIndex ? `ALTER TABLE ${qualifiedName(relation.namespace, relation.name)} REPLICA IDENTITY DEFAULT on the peer` : 'give the table the same primary key on every node'}; ` +
            'the changes it logged before carry no such key: should the link still refuse them, re-synchronize this node from a healthy one (README, "A lost slot")',
        },
      );
    }
  }
  return { relationId: relation.relationId, local, columns, key, remoteColumnCount: relation.columns.length };
}

/** Built-in type OIDs of a relation's columns, for naming them in an error (see mapRelation). */
export function builtinTypeOids(relation: RelationMessage): number[] {
  return [...new Set(relation.columns.map((c) => c.typeOid).filter((oid) => oid > 0 && oid < FIRST_NORMAL_OID))];
}
