import type { ClientBase } from 'pg';

/** What apply needs to know about a local table, read from the catalog of the node it writes to. */
export interface LocalColumn {
  readonly name: string;
  /**
   * The cast target for the text values pgoutput sends: format_type() of the column, without the
   * length of a varchar, char, bit or varbit (and their arrays). An explicit cast to such a length
   * truncates silently (SQL standard, "Character Types"), while the assignment to the column raises
   * 22001: a remote value too long here must be refused, not cut. The name is format_type(oid, -1):
   * 'bpchar' and '"bit"', since 'character' and 'bit' (format_type(oid, NULL)) mean character(1)
   * and bit(1) in a cast, and would cut every value to its first character or bit. A domain over
   * such a type (at any depth) casts to that type the same way: an explicit cast to the domain
   * applies the domain's length as an explicit cast would ('abcdef'::text::d, d a domain over
   * varchar(3), is 'abc'), and the assignment to the column still checks the domain.
   */
  readonly type: string;
  /** format_type() of the column with its modifier, as declared: for messages. */
  readonly declaredType?: string;
  /** pg_attribute.atttypid, to compare with the peer's (only built-in OIDs are comparable). */
  readonly typeOid?: number;
  /** 'a' = GENERATED ALWAYS AS IDENTITY, 'd' = BY DEFAULT, '' = none. */
  readonly identity: '' | 'a' | 'd';
  /** Stored generated columns are recomputed locally and never written. */
  readonly generated: boolean;
}

export interface LocalTable {
  readonly schema: string;
  readonly name: string;
  readonly oid: number;
  readonly columns: ReadonlyMap<string, LocalColumn>;
  /** Primary key column names in index order; empty when the table has none. */
  readonly primaryKey: readonly string[];
  readonly replicaIdentity: 'd' | 'n' | 'f' | 'i';
}

export class UnknownTableError extends Error {
  readonly code = 'PGBIDI_UNKNOWN_TABLE';
  constructor(
    readonly schema: string,
    readonly table: string,
  ) {
    super(`table ${schema}.${table} does not exist on this node`);
    this.name = 'UnknownTableError';
  }
}

/** The primary key column names of pg_class row `c`, in index order (text[], empty without a key). */
export const PRIMARY_KEY_COLUMNS_SQL = `coalesce((SELECT array_agg(a.attname::text ORDER BY array_position(i.indkey::int2[], a.attnum))
    FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
   WHERE i.indrelid = c.oid AND i.indisprimary), '{}'::text[])`;

/** bpchar, varchar, bit, varbit and their array types (pg_type.dat). */
const LENGTH_TRUNCATING_TYPES = [1042, 1043, 1560, 1562, 1014, 1015, 1561, 1563];

/**
 * One round trip for the table, its columns and the names of the peer's built-in column types (for
 * messages): a link's first transaction waits for it. A table without columns still gives a row.
 */
const TABLE_SQL = `
WITH RECURSIVE t AS (
  SELECT c.oid, c.relreplident AS replident, ${PRIMARY_KEY_COLUMNS_SQL} AS pk
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')
), y AS (
  SELECT coalesce(json_object_agg(ty.oid, format_type(ty.oid, -1)), '{}') AS names FROM pg_type ty WHERE ty.oid = ANY($3::oid[])
), d(top, base) AS (
  SELECT ty.oid, ty.typbasetype FROM t JOIN pg_attribute a ON a.attrelid = t.oid JOIN pg_type ty ON ty.oid = a.atttypid WHERE ty.typtype = 'd'
  UNION
  SELECT d.top, ty.typbasetype FROM d JOIN pg_type ty ON ty.oid = d.base WHERE ty.typtype = 'd'
), db AS (
  SELECT d.top, d.base FROM d JOIN pg_type ty ON ty.oid = d.base WHERE ty.typtype <> 'd'
)
SELECT t.oid::int AS oid, t.replident, t.pk, y.names AS type_names,
       a.attname AS name, format_type(a.atttypid, a.atttypmod) AS declared, a.atttypid::int AS type_oid,
       CASE WHEN coalesce(db.base, a.atttypid) IN (${LENGTH_TRUNCATING_TYPES.join(', ')}) THEN format_type(coalesce(db.base, a.atttypid), -1)
            ELSE format_type(a.atttypid, a.atttypmod) END AS type,
       a.attidentity::text AS identity, a.attgenerated <> '' AS generated
  FROM t CROSS JOIN y
  LEFT JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum > 0 AND NOT a.attisdropped
  LEFT JOIN db ON db.top = a.atttypid
 ORDER BY a.attnum`;

interface TableRow {
  oid: number;
  replident: LocalTable['replicaIdentity'];
  pk: string[];
  type_names: Record<string, string>;
  name: string | null;
  type: string;
  declared: string;
  type_oid: number;
  identity: string;
  generated: boolean;
}

export async function loadLocalTable(client: ClientBase, schema: string, name: string): Promise<LocalTable> {
  return (await loadLocalTableAndTypes(client, schema, name, [])).table;
}

/** The local table, and format_type() of each of `typeOids` that exists here. */
export async function loadLocalTableAndTypes(
  client: ClientBase,
  schema: string,
  name: string,
  typeOids: readonly number[],
): Promise<{ table: LocalTable; typeNames: ReadonlyMap<number, string> }> {
  const r = await client.query<TableRow>(TABLE_SQL, [schema, name, typeOids]);
  const first = r.rows[0];
  if (!first) throw new UnknownTableError(schema, name);
  const columns = new Map<string, LocalColumn>();
  for (const c of r.rows) {
    if (c.name === null) continue;
    columns.set(c.name, {
      name: c.name,
      type: c.type,
      declaredType: c.declared,
      typeOid: Number(c.type_oid),
      identity: c.identity === 'a' || c.identity === 'd' ? c.identity : '',
      generated: c.generated,
    });
  }
  const typeNames = new Map(Object.entries(first.type_names).map(([oid, n]) => [Number(oid), n] as const));
  return { table: { schema, name, oid: first.oid, columns, primaryKey: first.pk, replicaIdentity: first.replident }, typeNames };
}
