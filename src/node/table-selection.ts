import type { ClientBase } from 'pg';
import { PRIMARY_KEY_COLUMNS_SQL } from '../apply/local-catalog.js';
import { globToRegExp } from '../util/glob.js';
import { METADATA_SCHEMA } from './names.js';

export interface SelectedTable {
  readonly schema: string;
  readonly name: string;
  /** Primary key columns in index order; empty when there is none. */
  readonly primaryKey: readonly string[];
  readonly replicaIdentity: 'd' | 'n' | 'f' | 'i';
  /** Columns of the index named by REPLICA IDENTITY USING INDEX; empty otherwise. */
  readonly identityIndex: readonly string[];
  /** UNLOGGED: not in the WAL, so logical decoding never sees its changes. */
  readonly unlogged: boolean;
}

export function matchesAny(qualified: string, patterns: readonly string[]): boolean {
  return patterns.some((p) => globToRegExp(p).test(qualified));
}

export async function resolveTables(client: ClientBase, include: readonly string[], exclude: readonly string[]): Promise<SelectedTable[]> {
  const r = await client.query<{ schema: string; name: string; pk: string[]; replident: SelectedTable['replicaIdentity']; ident: string[]; unlogged: boolean }>(
    `SELECT n.nspname AS schema, c.relname AS name, c.relreplident AS replident, c.relpersistence = 'u' AS unlogged,
            ${PRIMARY_KEY_COLUMNS_SQL} AS pk,
            coalesce((SELECT array_agg(a.attname::text ORDER BY a.attnum)
                        FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
                       WHERE i.indrelid = c.oid AND i.indisreplident), '{}'::text[]) AS ident
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
        AND n.nspname NOT IN ('pg_catalog', 'information_schema', $1) AND NOT starts_with(n.nspname, 'pg_')
      ORDER BY 1, 2`,
    [METADATA_SCHEMA],
  );
  return r.rows
    .filter((t) => matchesAny(`${t.schema}.${t.name}`, include) && !matchesAny(`${t.schema}.${t.name}`, exclude))
    .map((t) => ({ schema: t.schema, name: t.name, primaryKey: t.pk, replicaIdentity: t.replident, identityIndex: t.ident, unlogged: t.unlogged }));
}

/**
 * Why the old rows the table's replica identity makes PostgreSQL log cannot be applied by primary
 * key, or null. pgoutput's old key (proto.c logicalrep_write_tuple of the 'K' tuple) holds only the
 * identity's columns, and an update's old key only when one of them changed: under USING INDEX on an
 * index without every primary key column, a peer would find no key for a delete and would not see a
 * primary key change. Under NOTHING, PostgreSQL refuses UPDATE and DELETE on a published table
 * (CheckCmdReplicaIdentity, SQLSTATE 55000): the application's writes would start failing.
 */
export function replicaIdentityProblem(t: SelectedTable): string | null {
  if (t.primaryKey.length === 0) return null;
  if (t.replicaIdentity === 'n') return `${t.schema}.${t.name} (REPLICA IDENTITY NOTHING: its updates and deletes would fail once published)`;
  if (t.replicaIdentity === 'i' && !t.primaryKey.every((k) => t.identityIndex.includes(k))) {
    return `${t.schema}.${t.name} (REPLICA IDENTITY USING INDEX on (${t.identityIndex.join(', ')}), without the primary key's ${t.primaryKey.join(', ')})`;
  }
  return null;
}
