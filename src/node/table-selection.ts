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
}

export function matchesAny(qualified: string, patterns: readonly string[]): boolean {
  return patterns.some((p) => globToRegExp(p).test(qualified));
}

export async function resolveTables(client: ClientBase, include: readonly string[], exclude: readonly string[]): Promise<SelectedTable[]> {
  const r = await client.query<{ schema: string; name: string; pk: string[]; replident: SelectedTable['replicaIdentity'] }>(
    `SELECT n.nspname AS schema, c.relname AS name, c.relreplident AS replident,
            ${PRIMARY_KEY_COLUMNS_SQL} AS pk
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
        AND n.nspname NOT IN ('pg_catalog', 'information_schema', $1) AND n.nspname NOT LIKE 'pg\\_%'
      ORDER BY 1, 2`,
    [METADATA_SCHEMA],
  );
  return r.rows
    .filter((t) => matchesAny(`${t.schema}.${t.name}`, include) && !matchesAny(`${t.schema}.${t.name}`, exclude))
    .map((t) => ({ schema: t.schema, name: t.name, primaryKey: t.pk, replicaIdentity: t.replident }));
}
