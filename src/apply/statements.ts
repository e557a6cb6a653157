import type { TupleValue } from '../protocol/pgoutput-messages.js';
import { UNCHANGED_TOAST } from '../protocol/pgoutput-messages.js';
import { qualifiedName, quoteIdent } from '../util/sql.js';
import type { MappedColumn, TableMapping } from './table-mapping.js';

/**
 * Pure SQL builders for batched apply. Values travel as text arrays and are cast by the local
 * column type (pgoutput text mode with pinned GUCs is portable across 15 and 18, also for enums and
 * domains whose OIDs differ per node). Each statement reports the ordinal (1-based) of every input
 * row it changed, so the caller can tell applied rows from conflicts.
 */

export interface Statement {
  readonly text: string;
  readonly values: unknown[];
}

/** The remote version of every row in the batch: (origin commit timestamp, origin node). */
export interface RemoteVersion {
  readonly commitTimestamp: string;
  readonly node: string;
}

export type Row = readonly TupleValue[];

export class UnmaterializableValueError extends Error {
  readonly code = 'PGBIDI_UNMATERIALIZABLE';
  constructor(column: string) {
    super(`column ${column} is an unchanged TOAST value and cannot be written`);
    this.name = 'UnmaterializableValueError';
  }
}

function textValue(v: TupleValue, column: string): string | null {
  if (v === UNCHANGED_TOAST) throw new UnmaterializableValueError(column);
  if (v === null) return null;
  return typeof v === 'string' ? v : v.toString('utf8');
}

function column(rows: readonly Row[], c: MappedColumn): (string | null)[] {
  return rows.map((r) => textValue(r[c.index] ?? null, c.name));
}

/** unnest($1::text[], …) WITH ORDINALITY AS x(c1, …, ord), numbering parameters from `first`. */
function unnestSource(names: readonly string[], first: number): string {
  const params = names.map((_, i) => `$${first + i}::text[]`).join(', ');
  const aliases = names.map((n) => quoteIdent(n)).join(', ');
  return `unnest(${params}) WITH ORDINALITY AS x(${aliases}, ord)`;
}

function cast(c: MappedColumn, source = 'x'): string {
  return `${source}.${quoteIdent(c.name)}::${c.type}`;
}

/**
 * Last-update-wins guard. The row is replaced when it was written earlier in this same apply
 * transaction (its commit timestamp is not known yet, technical research §5.1) or when its version is
 * older than the remote one; pgbidi.remote_wins is created by setup.
 */
function lwwGuard(tsParam: number, nodeParam: number): string {
  return `(t.xmin = pg_current_xact_id()::xid OR pgbidi.remote_wins(t.xmin, $${tsParam}::timestamptz, $${nodeParam}::text))`;
}

function keyMatch(key: readonly MappedColumn[]): string {
  return key.map((c) => `t.${quoteIdent(c.name)} = ${cast(c)}`).join(' AND ');
}

/**
 * INSERT of whole rows. With a primary key: an existing row is replaced only if the remote version
 * wins (insert_exists resolved by LWW). Returns the conflicting rows only: inserted = false when an
 * existing row was replaced, null when the local row was kept.
 */
export function upsertRows(m: TableMapping, rows: readonly Row[], version: RemoteVersion): Statement {
  const cols = m.columns;
  const names = cols.map((c) => quoteIdent(c.name)).join(', ');
  const overriding = cols.some((c) => c.identityAlways) ? ' OVERRIDING SYSTEM VALUE' : '';
  const values: unknown[] = cols.map((c) => column(rows, c));
  const target = qualifiedName(m.local.schema, m.local.name);
  const select = `SELECT ${cols.map((c) => cast(c)).join(', ')} FROM ${unnestSource(
    cols.map((c) => c.name),
    1,
  )}`;
  if (m.key.length === 0) {
    return {
      text: `WITH ins AS (INSERT INTO ${target} (${names})${overriding} ${select} RETURNING 1) SELECT count(*)::int AS n FROM ins`,
      values,
    };
  }
  const keyNames = m.key.map((c) => quoteIdent(c.name)).join(', ');
  const updatable = cols.filter((c) => !c.isKey && !c.identityAlways);
  // A table of key columns only has nothing to overwrite: the existing row already is the remote one.
  let action = 'DO NOTHING';
  if (updatable.length > 0) {
    const ts = values.push(version.commitTimestamp);
    const node = values.push(version.node);
    action = `DO UPDATE SET ${updatable.map((c) => `${quoteIdent(c.name)} = EXCLUDED.${quoteIdent(c.name)}`).join(', ')} WHERE ${lwwGuard(ts, node)}`;
  }
  const keyJoin = m.key.map((c) => `i.${quoteIdent(c.name)} = ${cast(c, 'x')}`).join(' AND ');
  return {
    text:
      `WITH x AS (SELECT * FROM ${unnestSource(cols.map((c) => c.name), 1)}), ` +
      `ins AS (INSERT INTO ${target} AS t (${names})${overriding} SELECT ${cols.map((c) => cast(c)).join(', ')} FROM x ` +
      `ON CONFLICT (${keyNames}) ${action} RETURNING ${keyNames}, (t.xmax = 0) AS inserted) ` +
      `SELECT x.ord, i.inserted FROM x LEFT JOIN ins i ON ${keyJoin} WHERE i.inserted IS NOT TRUE`,
    values,
  };
}

/**
 * The rows of a keyed batch that were not written, each with whether its key existed before the
 * statement (the outer query reads the snapshot taken before the CTE's modification). Written rows
 * are not returned: the caller counts them as n minus the returned rows.
 */
function unwritten(m: TableMapping, keyAliases: readonly string[], modifying: string): string {
  const present = m.key
    .map((c, i) => `t.${quoteIdent(c.name)} = x.${quoteIdent(keyAliases[i] as string)}::${c.type}`)
    .join(' AND ');
  return (
    `, w AS (${modifying}) SELECT x.ord, EXISTS (SELECT 1 FROM ${qualifiedName(m.local.schema, m.local.name)} AS t ` +
    `WHERE ${present}) AS present FROM x WHERE NOT EXISTS (SELECT 1 FROM w WHERE w.ord = x.ord)`
  );
}

/**
 * UPDATE of rows identified by their old key, setting every column whose value was sent (columns
 * marked unchanged-TOAST are left as they are, like worker.c's slot_modify_data). `oldKeys[i]` holds
 * the key values of row i before the change (equal to the new ones unless the key changed).
 */
export function updateRows(
  m: TableMapping,
  oldKeys: readonly (readonly (string | null)[])[],
  rows: readonly Row[],
  setColumns: readonly MappedColumn[],
  version: RemoteVersion,
): Statement {
  const keyAliases = m.key.map((c) => `k_${c.name}`);
  const setAliases = setColumns.map((c) => `v_${c.name}`);
  const values: unknown[] = [
    ...m.key.map((_, i) => oldKeys.map((k) => k[i] ?? null)),
    ...setColumns.map((c) => column(rows, c)),
  ];
  const ts = values.push(version.commitTimestamp);
  const node = values.push(version.node);
  const target = qualifiedName(m.local.schema, m.local.name);
  const sets = setColumns.map((c, i) => `${quoteIdent(c.name)} = x.${quoteIdent(setAliases[i] as string)}::${c.type}`);
  // Every sent column unchanged: still write the row, so that its version (xmin) becomes the remote one.
  if (sets.length === 0) sets.push(m.key.map((c) => `${quoteIdent(c.name)} = t.${quoteIdent(c.name)}`)[0] as string);
  const where = m.key.map((c, i) => `t.${quoteIdent(c.name)} = x.${quoteIdent(keyAliases[i] as string)}::${c.type}`);
  return {
    text:
      `WITH x AS (SELECT * FROM ${unnestSource([...keyAliases, ...setAliases], 1)})` +
      unwritten(
        m,
        keyAliases,
        `UPDATE ${target} AS t SET ${sets.join(', ')} FROM x WHERE ${where.join(' AND ')} AND ${lwwGuard(ts, node)} RETURNING x.ord`,
      ),
    values,
  };
}

/** DELETE by key, only where the remote version wins; returns the rows not deleted (see unwritten). */
export function deleteRows(m: TableMapping, keys: readonly (readonly (string | null)[])[], version: RemoteVersion): Statement {
  const values: unknown[] = m.key.map((_, i) => keys.map((k) => k[i] ?? null));
  const ts = values.push(version.commitTimestamp);
  const node = values.push(version.node);
  const names = m.key.map((c) => c.name);
  return {
    text:
      `WITH x AS (SELECT * FROM ${unnestSource(names, 1)})` +
      unwritten(
        m,
        names,
        `DELETE FROM ${qualifiedName(m.local.schema, m.local.name)} AS t USING x WHERE ${keyMatch(m.key)} AND ${lwwGuard(ts, node)} RETURNING x.ord`,
      ),
    values,
  };
}

/**
 * Tables without a primary key (REPLICA IDENTITY FULL): one physical row that matches the old row
 * on every column's text form, as the native apply worker's full-row scan does (RelationFindReplTupleSeq).
 */
export function identityWhere(m: TableMapping, oldRow: Row, first: number): { sql: string; values: unknown[] } {
  const parts: string[] = [];
  const values: unknown[] = [];
  for (const c of m.columns) {
    const v = oldRow[c.index] ?? null;
    if (v === UNCHANGED_TOAST) continue;
    values.push(textValue(v, c.name));
    parts.push(`t.${quoteIdent(c.name)}::text IS NOT DISTINCT FROM $${first + values.length - 1}::${c.type}::text`);
  }
  return { sql: parts.length ? parts.join(' AND ') : 'true', values };
}

export function deleteByIdentity(m: TableMapping, oldRow: Row): Statement {
  const target = qualifiedName(m.local.schema, m.local.name);
  const w = identityWhere(m, oldRow, 1);
  return {
    text: `DELETE FROM ${target} WHERE ctid = (SELECT t.ctid FROM ${target} AS t WHERE ${w.sql} LIMIT 1) RETURNING 1 AS ord`,
    values: w.values,
  };
}

export function updateByIdentity(m: TableMapping, oldRow: Row, newRow: Row): Statement {
  const target = qualifiedName(m.local.schema, m.local.name);
  const setCols = m.columns.filter((c) => newRow[c.index] !== UNCHANGED_TOAST && !c.identityAlways);
  const values: unknown[] = setCols.map((c) => textValue(newRow[c.index] ?? null, c.name));
  const sets = setCols.map((c, i) => `${quoteIdent(c.name)} = $${i + 1}::${c.type}`);
  const w = identityWhere(m, oldRow, values.length + 1);
  return {
    text: `UPDATE ${target} SET ${sets.join(', ')} WHERE ctid = (SELECT t.ctid FROM ${target} AS t WHERE ${w.sql} LIMIT 1) RETURNING 1 AS ord`,
    values: [...values, ...w.values],
  };
}

export function truncateTables(tables: readonly TableMapping[], cascade: boolean, restartIdentity: boolean): Statement {
  const names = tables.map((t) => qualifiedName(t.local.schema, t.local.name)).join(', ');
  return {
    text: `TRUNCATE ${names}${restartIdentity ? ' RESTART IDENTITY' : ''}${cascade ? ' CASCADE' : ''}`,
    values: [],
  };
}
