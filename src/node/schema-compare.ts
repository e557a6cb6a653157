import type { ClientBase } from 'pg';

/**
 * The definitions of the replicated tables on two nodes, compared column by column. Apply matches
 * columns by name (apply/table-mapping.ts), so a column that one node has and another lacks stops
 * the link that carries it, and a type that differs can make a value fail to apply; every such
 * difference is named with the table and column. The comparison is pure; reading is one query.
 */

export interface ColumnDef {
  readonly name: string;
  /** format_type(atttypid, atttypmod): `character varying(20)`, `numeric(10,2)` … */
  readonly type: string;
  readonly notNull: boolean;
}

export interface TableDef {
  /** schema.name */
  readonly table: string;
  readonly columns: readonly ColumnDef[];
  readonly primaryKey: readonly string[];
}

export type SchemaDifferenceKind = 'table_missing' | 'column_missing' | 'column_type' | 'column_nullability' | 'primary_key';

export interface SchemaDifference {
  readonly kind: SchemaDifferenceKind;
  readonly table: string;
  /** null for table_missing and primary_key */
  readonly column: string | null;
  /** What each node has (a type, 'NOT NULL', 'absent', a key list). */
  readonly here: string;
  readonly there: string;
}

/** Reads the definitions of `tables` (schema.name); a table missing on the node is left out. */
export async function readTableDefs(client: ClientBase, tables: readonly string[]): Promise<Map<string, TableDef>> {
  if (tables.length === 0) return new Map();
  const r = await client.query<{ table: string; name: string; type: string; not_null: boolean; pk: number | null }>(
    `SELECT n.nspname || '.' || c.relname AS table, a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type,
            a.attnotnull AS not_null, array_position(i.indkey::int2[], a.attnum) AS pk
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
       JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
       LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary
      WHERE n.nspname || '.' || c.relname = ANY($1)
      ORDER BY 1, a.attnum`,
    [tables],
  );
  const defs = new Map<string, { columns: ColumnDef[]; pk: { name: string; at: number }[] }>();
  for (const row of r.rows) {
    const d = defs.get(row.table) ?? { columns: [], pk: [] };
    defs.set(row.table, d);
    d.columns.push({ name: row.name, type: row.type, notNull: row.not_null });
    if (row.pk !== null) d.pk.push({ name: row.name, at: row.pk });
  }
  return new Map([...defs].map(([table, d]) => [table, { table, columns: d.columns, primaryKey: d.pk.sort((x, y) => x.at - y.at).map((k) => k.name) }]));
}

/** Every difference between this node's definitions and a peer's, for the tables named in `tables`. */
export function compareTableDefs(tables: readonly string[], here: ReadonlyMap<string, TableDef>, there: ReadonlyMap<string, TableDef>): SchemaDifference[] {
  const out: SchemaDifference[] = [];
  for (const table of [...tables].sort()) {
    const h = here.get(table);
    const t = there.get(table);
    if (!h || !t) {
      if (h || t) out.push({ kind: 'table_missing', table, column: null, here: h ? 'present' : 'absent', there: t ? 'present' : 'absent' });
      continue;
    }
    const theirs = new Map(t.columns.map((c) => [c.name, c]));
    const mine = new Map(h.columns.map((c) => [c.name, c]));
    for (const name of [...new Set([...mine.keys(), ...theirs.keys()])].sort()) {
      const a = mine.get(name);
      const b = theirs.get(name);
      if (!a || !b) {
        out.push({ kind: 'column_missing', table, column: name, here: a ? a.type : 'absent', there: b ? b.type : 'absent' });
      } else if (a.type !== b.type) {
        out.push({ kind: 'column_type', table, column: name, here: a.type, there: b.type });
      } else if (a.notNull !== b.notNull) {
        out.push({ kind: 'column_nullability', table, column: name, here: a.notNull ? 'NOT NULL' : 'NULL', there: b.notNull ? 'NOT NULL' : 'NULL' });
      }
    }
    if (h.primaryKey.join(',') !== t.primaryKey.join(',')) {
      out.push({ kind: 'primary_key', table, column: null, here: `(${h.primaryKey.join(', ')})`, there: `(${t.primaryKey.join(', ')})` });
    }
  }
  return out;
}

/** One line per difference, naming the table, the column and both sides. */
export function describeDifference(d: SchemaDifference, self: string, peer: string): string {
  const where = d.column === null ? d.table : `${d.table}.${d.column}`;
  switch (d.kind) {
    case 'table_missing':
      return `${d.table} is ${d.here === 'absent' ? `missing on ${self}` : `missing on ${peer}`}`;
    case 'column_missing':
      return d.here === 'absent' ? `${where} (${d.there}) exists on ${peer} but not on ${self}` : `${where} (${d.here}) exists on ${self} but not on ${peer}`;
    case 'column_type':
      return `${where} is ${d.here} on ${self} but ${d.there} on ${peer}`;
    case 'column_nullability':
      return `${where} is ${d.here} on ${self} but ${d.there} on ${peer}`;
    case 'primary_key':
      return `${d.table} has primary key ${d.here} on ${self} but ${d.there} on ${peer}`;
  }
}

export interface PeerSchemaReport {
  readonly peer: string;
  /** null when the peer could not be read (unreachable): its own setup compares with this node. */
  readonly differences: readonly SchemaDifference[] | null;
}

/** Compares this node's replicated tables (`tables`, schema.name) with every peer's. */
export async function compareWithPeers(
  local: ClientBase,
  peers: readonly { name: string; dsn: string }[],
  tables: readonly string[],
  connect: (dsn: string) => Promise<ClientBase & { end(): Promise<void> }>,
): Promise<PeerSchemaReport[]> {
  const here = await readTableDefs(local, tables);
  const reports: PeerSchemaReport[] = [];
  for (const peer of peers) {
    let client: (ClientBase & { end(): Promise<void> }) | null = null;
    try {
      client = await connect(peer.dsn);
      reports.push({ peer: peer.name, differences: compareTableDefs(tables, here, await readTableDefs(client, tables)) });
    } catch {
      reports.push({ peer: peer.name, differences: null });
    } finally {
      await client?.end().catch(() => undefined);
    }
  }
  return reports;
}
