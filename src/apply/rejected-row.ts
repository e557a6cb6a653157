import type { ClientBase } from 'pg';
import type { ChangeMessage, Tuple } from '../protocol/pgoutput-messages.js';
import { UNCHANGED_TOAST } from '../protocol/pgoutput-messages.js';
import { qualifiedName } from '../util/sql.js';
import type { MappedColumn, TableMapping } from './table-mapping.js';

/**
 * A remote row that this node's schema refuses, although the table and its columns exist: a CHECK or
 * NOT NULL constraint that the peer does not have, an exclusion constraint, or a value that does not
 * convert to the local column's type (SQLSTATE class 22, "data exception"). It is a property of the
 * row, not of the link: the other rows of the transaction apply, and this one is set aside as a dead
 * letter (or halts the link under `conflicts.rejected_row: error`). Decided from the SQLSTATE only
 * (errcodes.txt); unique violations (23505) have their own policy (`conflicts.unique_violation`).
 */
export const REJECTION_TYPES = ['check_violation', 'not_null_violation', 'exclusion_violation', 'foreign_key_violation', 'invalid_value'] as const;
export type RejectionType = (typeof REJECTION_TYPES)[number];

export function rejectionType(sqlstate: string | undefined): RejectionType | null {
  if (sqlstate === undefined) return null;
  switch (sqlstate) {
    case '23514':
      return 'check_violation';
    case '23502':
      return 'not_null_violation';
    case '23P01':
      return 'exclusion_violation';
    case '23503':
      return 'foreign_key_violation';
  }
  return sqlstate.startsWith('22') ? 'invalid_value' : null;
}

/** What is known about one rejected row: enough for the log, the dead letter and /status. */
export interface Rejection {
  readonly type: RejectionType;
  readonly sqlstate: string;
  readonly schema: string;
  readonly table: string;
  /** The column at fault when it can be told (NOT NULL, a value that does not convert, a one-column CHECK). */
  readonly column: string | null;
  readonly constraint: string | null;
  /** Primary key values of the row, by column name (the whole row for tables without a key). */
  readonly key: Readonly<Record<string, string | null>>;
  /** The server's message, then what to do. */
  readonly reason: string;
}

type PgError = { message?: string; constraint?: string; column?: string; code?: string };

function text(v: Tuple[number] | undefined): string | null {
  if (v === undefined || v === null || v === UNCHANGED_TOAST) return null;
  return typeof v === 'string' ? v : v.toString('utf8');
}

/** The row's key by column name, from the tuple that identifies it. */
export function rowKey(m: TableMapping, change: Exclude<ChangeMessage, { tag: 'truncate' }>): Record<string, string | null> {
  const tuple = change.tag === 'delete' ? change.oldTuple : change.tag === 'update' && change.oldTuple && m.key.length ? change.oldTuple : change.newTuple;
  const cols: readonly MappedColumn[] = m.key.length ? m.key : m.columns;
  return Object.fromEntries(cols.map((c) => [c.name, text(tuple[c.index])]));
}

/**
 * Describes a row the server refused with `err`, asking the catalog (inside a savepoint the caller
 * has rolled back to, so the transaction is usable) which column is at fault when the error does not
 * say: for a data exception, the first value that does not convert to its column's type.
 */
export async function describeRejection(
  client: ClientBase,
  m: TableMapping,
  change: Exclude<ChangeMessage, { tag: 'truncate' }>,
  err: unknown,
  type: RejectionType,
): Promise<Rejection> {
  const e = (err ?? {}) as PgError;
  const sqlstate = e.code ?? '';
  const table = qualifiedName(m.local.schema, m.local.name);
  const where = `${m.local.schema}.${m.local.name}`;
  const constraint = e.constraint ?? null;
  let column = e.column ?? null;
  let detail = '';
  if (type === 'invalid_value' && change.tag !== 'delete') {
    // A PL/pgSQL assignment coerces like the assignment to a column does (assignment cast, else
    // through text), so it refuses what the statement refused, a too long value included.
    for (const c of m.columns) {
      const v = text(change.newTuple[c.index]);
      if (v === null) continue;
      const declared = m.local.columns.get(c.name)?.declaredType ?? c.type;
      await client.query('SAVEPOINT pgbidi_probe');
      try {
        await client.query(`SELECT set_config('pgbidi.probe', $1, true)`, [v]);
        await client.query(`DO $probe$ DECLARE v ${declared}; BEGIN v := current_setting('pgbidi.probe'); END $probe$`);
        await client.query('RELEASE SAVEPOINT pgbidi_probe');
      } catch {
        await client.query('ROLLBACK TO SAVEPOINT pgbidi_probe');
        await client.query('RELEASE SAVEPOINT pgbidi_probe');
        column = c.name;
        detail = ` (${declared} here)`;
        break;
      }
    }
  }
  if ((type === 'check_violation' || type === 'exclusion_violation') && constraint !== null) {
    const r = await client.query<{ cols: string[] | null; def: string }>(
      `SELECT (SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_attribute a WHERE a.attrelid = c.conrelid AND a.attnum = ANY(c.conkey)) AS cols,
              pg_get_constraintdef(c.oid) AS def
         FROM pg_constraint c WHERE c.conrelid = $1 AND c.conname = $2`,
      [m.local.oid, constraint],
    );
    const row = r.rows[0];
    if (row) {
      if (row.cols?.length === 1) column = row.cols[0] ?? null;
      detail = ` (${constraint}: ${row.def})`;
    }
  }
  const key = rowKey(m, change);
  const what = column === null ? where : `${where}.${column}`;
  const fix: Record<RejectionType, string> = {
    check_violation: `make the constraint accept the peer's rows (ALTER TABLE ${table} DROP CONSTRAINT …, then add it as on the peer) or correct the row on the peer`,
    not_null_violation: `allow NULL here as on the peer (ALTER TABLE ${table} ALTER COLUMN … DROP NOT NULL) or set a value on the peer`,
    exclusion_violation: `remove the overlapping row here or change the remote row on the peer`,
    foreign_key_violation: `create the referenced row here`,
    invalid_value: `give the column the peer's type (ALTER TABLE ${table} ALTER COLUMN … TYPE …)`,
  };
  const reason =
    `${change.tag} into ${what} refused (${type}, SQLSTATE ${sqlstate})${detail} for the row ${JSON.stringify(key)}: ${e.message ?? 'no message'}; ` +
    `to apply it, ${fix[type]}`;
  return { type, sqlstate, schema: m.local.schema, table: m.local.name, column, constraint, key, reason };
}
