import type { TupleValue } from '../protocol/pgoutput-messages.js';
import { UNCHANGED_TOAST } from '../protocol/pgoutput-messages.js';
import type { OverwriteRule } from '../conflict/policy.js';
import { METADATA_SCHEMA, storedKeyOf } from '../node/names.js';
import { assertNever } from '../util/assert-never.js';
import { arrayLiteral, qualifiedName, quoteIdent } from '../util/sql.js';
import type { KeyLock } from './key-locks.js';
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

/**
 * The remote version of every row in the batch, (origin commit timestamp, origin node), and the
 * rules of the table's conflict policy (conflict/policy.ts).
 */
export interface RemoteVersion {
  readonly commitTimestamp: string;
  readonly node: string;
  readonly rules?: ApplyRules;
}

export interface ApplyRules {
  readonly insert: OverwriteRule;
  readonly update: OverwriteRule;
  readonly delete: OverwriteRule;
  /** Re-create a missing row from an update: unless a newer tombstone exists, always, or never. */
  readonly recreate: 'unless_deleted_later' | 'always' | 'never';
  /** Counter columns merged as local + (new − old) (the delta policy). */
  readonly deltaColumns: readonly string[];
}

export const LAST_UPDATE_WINS: ApplyRules = {
  insert: 'remote_newer',
  update: 'remote_newer',
  delete: 'remote_newer',
  recreate: 'unless_deleted_later',
  deltaColumns: [],
};

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

/** Numbered query parameters: `add` returns the placeholder for a value. */
class Params {
  readonly values: unknown[] = [];
  add(v: unknown): string {
    return `$${this.values.push(v)}`;
  }
}

/** x: one row per input change, columns given as text arrays, plus its 1-based position `ord`. */
function inputRows(p: Params, columns: readonly { alias: string; values: (string | boolean | null)[]; type?: string }[]): string {
  const params = columns.map((c) => `${p.add(arrayLiteral(c.values))}::${c.type ?? 'text'}[]`).join(', ');
  const aliases = columns.map((c) => quoteIdent(c.alias)).join(', ');
  return `x AS (SELECT * FROM unnest(${params}) WITH ORDINALITY AS x(${aliases}, ord))`;
}

/** Input columns for key values: column i of every key, under alias i. */
function keyInputs(aliases: readonly string[], keys: readonly (readonly (string | null)[])[]): { alias: string; values: (string | null)[] }[] {
  return aliases.map((alias, i) => ({ alias, values: keys.map((k) => k[i] ?? null) }));
}

/**
 * The name of a column of the input rows x: a letter for its role and the column's position in the
 * remote tuple, never the column's own name, which may be one of the names the statements give their
 * own columns (a table with a column called ord stopped every multi-row statement with "column
 * reference is ambiguous"), and which, made longer, may be cut to the same 63 bytes as another's.
 */
function inputAlias(role: 'c' | 'k' | 'v' | 'o' | 'f', c: MappedColumn): string {
  return `${role}${c.index}`;
}

function castAs(c: MappedColumn, alias: string, source = 'x'): string {
  return `${source}.${quoteIdent(alias)}::${c.type}`;
}

/** The key of input row x as pgbidi.tombstones stores it: a jsonb array of the typed key values (storedKey). */
function tombstoneKey(m: TableMapping, aliases: readonly string[]): string {
  return storedKeyOf(m.key.map((c, i) => castAs(c, aliases[i] as string)));
}

function keyMatchOn(m: TableMapping, aliases: readonly string[], target = 't'): string {
  return m.key.map((c, i) => `${target}.${quoteIdent(c.name)} = ${castAs(c, aliases[i] as string)}`).join(' AND ');
}

/**
 * Last-update-wins: the local version (of a row or a tombstone, from its xmin) loses to the remote
 * one. A version written earlier in this same apply transaction has no commit timestamp yet
 * (technical research §5.1) and always yields. pgbidi.remote_wins is created by setup.
 */
function remoteWins(alias: string, v: { ts: string; node: string }): string {
  return `(${alias}.xmin = pg_current_xact_id()::xid OR ${METADATA_SCHEMA}.remote_wins(${alias}.xmin, ${v.ts}::timestamptz, ${v.node}::text))`;
}

/**
 * On a table with delta counters a merged row can hold other columns of a newer local version than
 * its xmin says; pgbidi.row_versions keeps that version (updateRows' `kept`) and row_remote_wins
 * reads it. Without the shortcut for this transaction's own writes: a merge earlier in this
 * transaction may have kept newer local columns.
 */
interface Merged {
  readonly table: string;
  readonly m: TableMapping;
}

function rowKey(m: TableMapping, alias: string): string {
  return storedKeyOf(m.key.map((c) => `${alias}.${quoteIdent(c.name)}`));
}

function overwriteGuard(rule: OverwriteRule, alias: string, v: { ts: string; node: string }, merged?: Merged): string {
  switch (rule) {
    case 'remote_newer':
      if (merged)
        return `${METADATA_SCHEMA}.row_remote_wins(${merged.table}, ${rowKey(merged.m, alias)}, ${alias}.xmin, ${v.ts}::timestamptz, ${v.node}::text)`;
      return remoteWins(alias, v);
    case 'remote_older':
      return `(${alias}.xmin = pg_current_xact_id()::xid OR ${METADATA_SCHEMA}.remote_older(${alias}.xmin, ${v.ts}::timestamptz, ${v.node}::text))`;
    case 'always':
      return 'true';
    case 'same_origin':
      return `(${alias}.xmin = pg_current_xact_id()::xid OR ${METADATA_SCHEMA}.node_of_origin((pg_catalog.pg_xact_commit_timestamp_origin(${alias}.xmin)).roident) = ${v.node}::text)`;
    default:
      return assertNever(rule);
  }
}

/** A tombstone for the key that is newer than the remote change: the delete wins. */
function newerTombstone(tableParam: string, keyExpr: string, v: { ts: string; node: string }): string {
  return (
    `EXISTS (SELECT 1 FROM ${METADATA_SCHEMA}.tombstones tb WHERE tb.table_name = ${tableParam} ` + `AND tb.key = ${keyExpr} AND NOT ${remoteWins('tb', v)})`
  );
}

function present(m: TableMapping, aliases: readonly string[]): string {
  return `EXISTS (SELECT 1 FROM ${qualifiedName(m.local.schema, m.local.name)} AS t WHERE ${keyMatchOn(m, aliases)})`;
}

/** The local row before the statement, as jsonb (for the conflict log); a distinct alias, since a column may be called t. */
function localRow(m: TableMapping, aliases: readonly string[]): string {
  return `(SELECT to_jsonb(pgbidi_local.*) FROM ${qualifiedName(m.local.schema, m.local.name)} AS pgbidi_local WHERE ${keyMatchOn(m, aliases, 'pgbidi_local')})`;
}

/**
 * PostgreSQL 18's *_origin_differs where the remote change wins: the rows of `written` (a CTE of
 * ords) whose local version came from another origin than the remote change, with that local row.
 * Rows last written before the group existed (before `pgbidi setup` first ran on this node: loaded
 * from the same dump on every node, say) are not conflicts, nor are rows without a commit timestamp
 * (the noise research/baselines.md saw after an initial load), nor a row this transaction wrote.
 */
function overwritten(m: TableMapping, aliases: readonly string[], written: string, remoteNode: string): string {
  return (
    `SELECT x.ord, true AS present, to_jsonb(pgbidi_local.*) AS local, false AS resurrected, false AS deleted_later, true AS overwritten ` +
    `FROM x JOIN ${qualifiedName(m.local.schema, m.local.name)} AS pgbidi_local ON ${keyMatchOn(m, aliases, 'pgbidi_local')} ` +
    `CROSS JOIN LATERAL pg_catalog.pg_xact_commit_timestamp_origin(pgbidi_local.xmin) AS c ` +
    `WHERE EXISTS (SELECT 1 FROM ${written} WHERE ${written}.ord = x.ord) AND c.timestamp >= (SELECT n.created_at FROM ${METADATA_SCHEMA}.node AS n) ` +
    `AND NOT (pgbidi_local.xmin = pg_current_xact_id()::xid) AND ${METADATA_SCHEMA}.node_of_origin(c.roident) IS DISTINCT FROM ${remoteNode}::text`
  );
}

/**
 * The key columns an insert that wins over an existing row writes too. The existing row's key is
 * equal to the remote one, but under a nondeterministic collation (or a type such as citext) equal
 * is not the same text: a row inserted as 'abc' on one node and 'ABC' on the other kept each node's
 * own spelling, with the winner's other columns.
 */
export function keyCopied(m: TableMapping): MappedColumn[] {
  return m.key.filter((c) => !c.identityAlways);
}

function qualified(m: TableMapping): string {
  return `${m.local.schema}.${m.local.name}`;
}

/**
 * INSERT of whole rows. With a primary key the row is written unless a newer version exists: a live
 * row (insert_exists, LWW) or a tombstone (the key was deleted later elsewhere). Returns only the rows
 * that were not plainly inserted: `inserted` false = an existing row was replaced, null = not written;
 * `present` = the key existed before the statement.
 */
export function upsertRows(m: TableMapping, rows: readonly Row[], version: RemoteVersion): Statement {
  const p = new Params();
  const cols = m.columns;
  const names = cols.map((c) => quoteIdent(c.name)).join(', ');
  const overriding = cols.some((c) => c.identityAlways) ? ' OVERRIDING SYSTEM VALUE' : '';
  const target = qualifiedName(m.local.schema, m.local.name);
  const x = inputRows(
    p,
    cols.map((c) => ({ alias: inputAlias('c', c), values: column(rows, c) })),
  );
  const select = `SELECT ${cols.map((c) => castAs(c, inputAlias('c', c))).join(', ')} FROM x`;
  if (m.key.length === 0) {
    return {
      text: `WITH ${x}, ins AS (INSERT INTO ${target} (${names})${overriding} ${select} RETURNING 1) SELECT count(*)::int AS n FROM ins`,
      values: p.values,
    };
  }
  const rules = version.rules ?? LAST_UPDATE_WINS;
  const v = { ts: p.add(version.commitTimestamp), node: p.add(version.node) };
  const tableParam = p.add(qualified(m));
  const merged = rules.deltaColumns.length > 0 ? { table: tableParam, m } : undefined;
  const keyAliases = m.key.map((c) => inputAlias('c', c));
  const keyNames = m.key.map((c) => quoteIdent(c.name)).join(', ');
  const updatable = cols.filter((c) => !c.isKey && !c.identityAlways);
  const tombstoneCheck = rules.insert === 'always' ? '' : `WHERE NOT ${newerTombstone(tableParam, tombstoneKey(m, keyAliases), v)} `;
  // A table of key columns only has nothing to overwrite: the existing row already is the remote one.
  const action =
    updatable.length === 0
      ? 'DO NOTHING'
      : `DO UPDATE SET ${[...updatable, ...keyCopied(m)].map((c) => `${quoteIdent(c.name)} = EXCLUDED.${quoteIdent(c.name)}`).join(', ')} WHERE ${overwriteGuard(rules.insert, 't', v, merged)}`;
  const keyJoin = m.key.map((c, i) => `i.${quoteIdent(inputAlias('k', c))} = ${castAs(c, keyAliases[i] as string)}`).join(' AND ');
  const returnedKeys = m.key.map((c) => `t.${quoteIdent(c.name)} AS ${quoteIdent(inputAlias('k', c))}`).join(', ');
  return {
    text:
      `WITH ${x}, ins AS (INSERT INTO ${target} AS t (${names})${overriding} ${select} ` +
      tombstoneCheck +
      `ON CONFLICT (${keyNames}) ${action} RETURNING ${returnedKeys}, (t.xmax = 0) AS inserted) ` +
      `SELECT x.ord, i.inserted, ${present(m, keyAliases)} AS present, ${localRow(m, keyAliases)} AS local FROM x LEFT JOIN ins i ON ${keyJoin} WHERE i.inserted IS NOT TRUE`,
    values: p.values,
  };
}

/**
 * Built-in scalar types (pg_type.dat OIDs) whose array literal our arrayLiteral writes as the type's
 * own array input reads it: the element delimiter is a comma (box's is a semicolon) and an element is
 * one value (not an array). An element's text goes to the same input function as a cast from text.
 * bool, bytea, int8, int2, int4, text, json, float4, float8, varchar, date, time, timestamp,
 * timestamptz, interval, numeric, uuid, jsonb.
 */
const DIRECT_ARRAY_TYPES: ReadonlySet<number> = new Set([16, 17, 20, 21, 23, 25, 114, 700, 701, 1043, 1082, 1083, 1114, 1184, 1186, 1700, 2950, 3802]);

/** SQLSTATE raised by pgbidi.no_tombstones (metadata-schema.ts): the insert fast path does not apply. */
export const FAST_PATH_CLOSED = 'PB001';

/**
 * The fast path for the insert run that opens a transaction: a plain INSERT, without ON CONFLICT
 * (speculative insertion costs about a fifth of the statement) and without a tombstone probe per
 * row. It is only right when no row of the batch exists (else it fails with 23505) and the table
 * has no tombstone at all (else pgbidi.no_tombstones fails with FAST_PATH_CLOSED, once per statement
 * as an InitPlan); either failure rolls the transaction back and the batch runs through upsertRows.
 * Every row is inserted or the statement fails, so nothing needs to come back: no RETURNING and no
 * CTE around it, whose tuplestore cost the server about a seventh of the statement's time on
 * 1,000-row batches. Columns of a type listed in DIRECT_ARRAY_TYPES arrive as arrays of that type,
 * parsed once by array_in instead of as text and then cast row by row. The arrays are unnested in
 * the select list, where a ProjectSet walks them in step (all have the same length), rather than by
 * unnest in FROM, whose function scan first copies every row into a tuplestore: 7-9 % less backend
 * CPU per 1,000-row insert on 15 and 18.
 */
export function insertRowsFast(m: TableMapping, rows: readonly Row[]): Statement {
  const p = new Params();
  const cols = m.columns;
  const names = cols.map((c) => quoteIdent(c.name)).join(', ');
  const overriding = cols.some((c) => c.identityAlways) ? ' OVERRIDING SYSTEM VALUE' : '';
  const select = cols
    .map((c) => {
      const direct = c.typeOid !== undefined && DIRECT_ARRAY_TYPES.has(c.typeOid);
      const values = p.add(c.bareElement ? bareArrayLiteral(rows, c) : arrayLiteral(column(rows, c)));
      return direct ? `unnest(${values}::${c.type}[])` : `unnest(${values}::text[])::${c.type}`;
    })
    .join(', ');
  const table = p.add(qualified(m));
  return {
    text:
      `INSERT INTO ${qualifiedName(m.local.schema, m.local.name)} (${names})${overriding} ` +
      `SELECT ${select} WHERE (SELECT ${METADATA_SCHEMA}.no_tombstones(${table}))`,
    values: p.values,
  };
}

/**
 * arrayLiteral for a column whose values need no quotes (MappedColumn.bareElement): joined as they
 * came, without a test for characters to escape, and shorter on the wire.
 */
function bareArrayLiteral(rows: readonly Row[], c: MappedColumn): string {
  const parts = new Array<string>(rows.length);
  for (let i = 0; i < rows.length; i++) {
    const v = (rows[i] as Row)[c.index] ?? null;
    parts[i] = typeof v === 'string' ? v : (textValue(v, c.name) ?? 'NULL');
  }
  return `{${parts.join(',')}}`;
}

/** The fast path's gate alone: fails with FAST_PATH_CLOSED while the table has a tombstone. */
export function noTombstonesGate(m: TableMapping): Statement {
  return { text: `SELECT ${METADATA_SCHEMA}.no_tombstones($1) AS ok`, values: [qualified(m)] };
}

/** Outcome flags of an update run's unwritten rows: see updateRows. */
export interface UpdateRowFlags {
  readonly ord: string;
  readonly present: boolean;
  readonly resurrected: boolean;
  readonly deleted_later: boolean;
}

/**
 * UPDATE of rows identified by their old key, setting every column whose value was sent (columns
 * marked unchanged-TOAST keep their local value, like worker.c's slot_modify_data), only where the
 * remote version wins. A row that is missing is re-created from the full new row (`fullRows`, with
 * unchanged columns filled from the old row under REPLICA IDENTITY FULL; null = cannot be built)
 * unless a newer tombstone says it was deleted later. When the key changes, the old key gets a
 * tombstone, so that older writes to it cannot bring it back. Returns the rows not updated in place.
 */
export function updateRows(
  m: TableMapping,
  oldKeys: readonly (readonly (string | null)[])[],
  rows: readonly Row[],
  fullRows: readonly (Row | null)[],
  setColumns: readonly MappedColumn[],
  version: RemoteVersion,
  keyChanged: boolean,
  oldRows: readonly (Row | null)[] = [],
): Statement {
  const rules = version.rules ?? LAST_UPDATE_WINS;
  const p = new Params();
  const keyAliases = m.key.map((c) => inputAlias('k', c));
  const fullAliases = m.columns.map((c) => inputAlias('f', c));
  const newKeyAliases = m.key.map((c) => inputAlias('f', c));
  const deltas = setColumns.filter((c) => rules.deltaColumns.includes(c.name));
  const x = inputRows(p, [
    ...keyInputs(keyAliases, oldKeys),
    ...setColumns.map((c) => ({ alias: inputAlias('v', c), values: column(rows, c) })),
    ...deltas.map((c) => ({ alias: inputAlias('o', c), values: rows.map((_, i) => oldValue(oldRows[i] ?? null, c)) })),
    ...m.columns.map((c, i) => ({ alias: fullAliases[i] as string, values: fullRows.map((r) => (r ? textValue(r[c.index] ?? null, c.name) : null)) })),
    { alias: 'complete', values: fullRows.map((r) => r !== null), type: 'boolean' },
  ]);
  const v = { ts: p.add(version.commitTimestamp), node: p.add(version.node) };
  const tableParam = p.add(qualified(m));
  const target = qualifiedName(m.local.schema, m.local.name);
  const merged = rules.deltaColumns.length > 0 ? { table: tableParam, m } : undefined;
  const newer = overwriteGuard(rules.update, 't', v, merged);
  // delta: counters always merge as local + (new - old); the other columns follow the version order.
  const sets = setColumns.map((c) => {
    const value = castAs(c, inputAlias('v', c));
    if (deltas.length === 0) return `${quoteIdent(c.name)} = ${value}`;
    const keep = `t.${quoteIdent(c.name)}`;
    if (!deltas.includes(c)) return `${quoteIdent(c.name)} = CASE WHEN ${newer} THEN ${value} ELSE ${keep} END`;
    const old = castAs(c, inputAlias('o', c));
    return `${quoteIdent(c.name)} = CASE WHEN x.${quoteIdent(inputAlias('o', c))} IS NULL THEN CASE WHEN ${newer} THEN ${value} ELSE ${keep} END ELSE ${keep} + (${value} - ${old}) END`;
  });
  // Every sent column unchanged: still write the row, so that its version (xmin) becomes the remote one.
  if (sets.length === 0) sets.push(m.key.map((c) => `${quoteIdent(c.name)} = t.${quoteIdent(c.name)}`)[0] as string);
  const guard = deltas.length > 0 ? 'true' : newer;
  const names = m.columns.map((c) => quoteIdent(c.name)).join(', ');
  const overriding = m.columns.some((c) => c.identityAlways) ? ' OVERRIDING SYSTEM VALUE' : '';
  const keyNames = m.key.map((c) => quoteIdent(c.name)).join(', ');
  const newKey = tombstoneKey(m, newKeyAliases);
  const recreate = rules.recreate === 'never' ? 'false' : rules.recreate === 'always' ? 'true' : `NOT ${newerTombstone(tableParam, newKey, v)}`;
  // A merge that kept newer local columns: the row's version stays the local one (row_versions).
  const keep =
    deltas.length > 0
      ? `, prior AS (SELECT x.ord, rv.ts, rv.node FROM x JOIN ${target} AS t ON ${keyMatchOn(m, keyAliases)}, ` +
        `LATERAL ${METADATA_SCHEMA}.row_version(${tableParam}, ${rowKey(m, 't')}, t.xmin) AS rv), ` +
        `kept AS (INSERT INTO ${METADATA_SCHEMA}.row_versions AS rv (table_name, key, xid, version_ts, version_node) ` +
        `SELECT ${tableParam}, ${tombstoneKey(m, keyAliases)}, pg_current_xact_id()::xid, prior.ts, prior.node ` +
        `FROM x JOIN prior ON prior.ord = x.ord JOIN u ON u.ord = x.ord ` +
        `WHERE (prior.ts, prior.node COLLATE "C") > (${v.ts}::timestamptz, ${v.node}::text COLLATE "C") ` +
        `ON CONFLICT (table_name, key) DO UPDATE SET xid = EXCLUDED.xid, version_ts = EXCLUDED.version_ts, version_node = EXCLUDED.version_node)`
      : '';
  const moved = keyChanged
    ? `, moved AS (INSERT INTO ${METADATA_SCHEMA}.tombstones AS tb (table_name, key) ` +
      `SELECT ${tableParam}, ${tombstoneKey(m, keyAliases)} FROM x JOIN u ON u.ord = x.ord ` +
      `ON CONFLICT (table_name, key) DO UPDATE SET deleted_at = now() WHERE ${remoteWins('tb', v)})`
    : '';
  return {
    text:
      `WITH ${x}, ` +
      `u AS (UPDATE ${target} AS t SET ${sets.join(', ')} FROM x WHERE ${keyMatchOn(m, keyAliases)} AND ${guard} RETURNING x.ord), ` +
      `r AS (INSERT INTO ${target} AS t (${names})${overriding} SELECT ${m.columns.map((c, i) => castAs(c, fullAliases[i] as string)).join(', ')} FROM x ` +
      `WHERE x.complete AND NOT ${present(m, keyAliases)} AND ${recreate} ` +
      `ON CONFLICT (${keyNames}) DO NOTHING RETURNING ${keyNames})${moved}${keep} ` +
      `SELECT x.ord, ${present(m, keyAliases)} AS present, ${localRow(m, keyAliases)} AS local, ` +
      `EXISTS (SELECT 1 FROM r WHERE ${m.key.map((c, i) => `r.${quoteIdent(c.name)} = ${castAs(c, newKeyAliases[i] as string)}`).join(' AND ')}) AS resurrected, ` +
      `${newerTombstone(tableParam, newKey, v)} AS deleted_later, false AS overwritten ` +
      `FROM x WHERE NOT EXISTS (SELECT 1 FROM u WHERE u.ord = x.ord) ` +
      `UNION ALL ${overwritten(m, keyAliases, 'u', v.node)}`,
    values: p.values,
  };
}

function oldValue(old: Row | null, c: MappedColumn): string | null {
  const value = old?.[c.index];
  return value === undefined || value === null || value === UNCHANGED_TOAST ? null : textValue(value, c.name);
}

/**
 * DELETE by key where the remote version wins, recording a tombstone for every key that is gone
 * afterwards (deleted now, or already absent: an older write may still be on its way from a third
 * node, technical research §6.2). Returns the rows not deleted, with `present`.
 */
export function deleteRows(m: TableMapping, keys: readonly (readonly (string | null)[])[], version: RemoteVersion): Statement {
  const p = new Params();
  const aliases = m.key.map((c) => inputAlias('k', c));
  const x = inputRows(p, keyInputs(aliases, keys));
  const rules = version.rules ?? LAST_UPDATE_WINS;
  const v = { ts: p.add(version.commitTimestamp), node: p.add(version.node) };
  const tableParam = p.add(qualified(m));
  const merged = rules.deltaColumns.length > 0 ? { table: tableParam, m } : undefined;
  return {
    text:
      `WITH ${x}, ` +
      `w AS (DELETE FROM ${qualifiedName(m.local.schema, m.local.name)} AS t USING x WHERE ${keyMatchOn(m, aliases)} AND ${overwriteGuard(rules.delete, 't', v, merged)} RETURNING x.ord), ` +
      `tomb AS (INSERT INTO ${METADATA_SCHEMA}.tombstones AS tb (table_name, key) SELECT ${tableParam}, ${tombstoneKey(m, aliases)} FROM x ` +
      `WHERE EXISTS (SELECT 1 FROM w WHERE w.ord = x.ord) OR NOT ${present(m, aliases)} ` +
      `ON CONFLICT (table_name, key) DO UPDATE SET deleted_at = now() WHERE ${remoteWins('tb', v)}) ` +
      `SELECT x.ord, ${present(m, aliases)} AS present, ${localRow(m, aliases)} AS local, false AS resurrected, false AS deleted_later, false AS overwritten ` +
      `FROM x WHERE NOT EXISTS (SELECT 1 FROM w WHERE w.ord = x.ord) ` +
      `UNION ALL ${overwritten(m, aliases, 'w', v.node)}`,
    values: p.values,
  };
}

/**
 * Takes the advisory key locks (key-locks.ts), in the given order, before the statements that write:
 * pipelined first, so that the writing statements' snapshots are taken after the locks are held.
 */
export function lockKeys(locks: readonly KeyLock[]): Statement {
  return {
    text:
      `SELECT count(pg_catalog.pg_advisory_xact_lock(l.space, l.bucket)) AS locked ` +
      `FROM (SELECT * FROM unnest($1::int[], $2::int[]) WITH ORDINALITY AS l(space, bucket, ord) ORDER BY ord) AS l`,
    values: [`{${locks.map((l) => l[0]).join(',')}}`, `{${locks.map((l) => l[1]).join(',')}}`],
  };
}

/**
 * Undoes rows this transaction wrote for keys that a newer delete removed meanwhile: a local DELETE
 * that held the row while the insert waited commits its tombstone after the insert's snapshot was
 * taken (local writers take no advisory locks). The new statement sees that tombstone.
 */
export function undoDeletedLater(m: TableMapping, keys: readonly (readonly (string | null)[])[], version: RemoteVersion): Statement {
  const p = new Params();
  const aliases = m.key.map((c) => inputAlias('k', c));
  const x = inputRows(p, keyInputs(aliases, keys));
  const v = { ts: p.add(version.commitTimestamp), node: p.add(version.node) };
  const table = p.add(qualified(m));
  return {
    text:
      // The uncorrelated EXISTS comes first: a one-time filter, so a table without tombstones costs no probe per row.
      `WITH ${x} DELETE FROM ${qualifiedName(m.local.schema, m.local.name)} AS t USING x ` +
      `WHERE EXISTS (SELECT 1 FROM ${METADATA_SCHEMA}.tombstones WHERE table_name = ${table}) ` +
      `AND ${keyMatchOn(m, aliases)} AND t.xmin = pg_current_xact_id()::xid AND ${newerTombstone(table, tombstoneKey(m, aliases), v)} ` +
      `RETURNING x.ord`,
    values: p.values,
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
