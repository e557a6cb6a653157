import pg from 'pg';
import type { Config } from '../config/config-schema.js';
import { qualifiedName } from '../util/sql.js';
import { compareTableDefs, describeDifference, readTableDefs } from './schema-compare.js';
import { resolveTables } from './table-selection.js';
import { errorMessage } from '../util/error-message.js';

/**
 * `pgbidi ddl --config a.yaml "<statement>"`: one schema change on every node of the group, in an
 * order in which no node applies a change of a shape it does not have yet:
 *
 *   1. lock   on every node (in node-name order, so two concurrent runs cannot deadlock), one
 *             transaction takes EXCLUSIVE locks on every replicated table: local writers and the
 *             agents' apply sessions wait (reads go on); in-flight changes queue in the slots
 *   2. apply  the statement runs in that transaction on every node; any failure rolls all back
 *   3. commit every node, then the writers and the apply sessions go on
 *
 * A change written before step 1 and applied after step 3 has the old shape; apply matches columns
 * by name (apply/table-mapping.ts), so additive changes (a column with a default, a table, an index)
 * are safe in any order. Removing a column that changes still carry stops the links that carry them
 * until the writers stop writing it (README "Schema changes").
 */

export interface DdlArgs {
  readonly statement: string | undefined;
  readonly lockTimeoutMs: number;
}

interface Io {
  out: (s: string) => void;
  err: (s: string) => void;
}

interface NodeSession {
  readonly name: string;
  readonly client: pg.Client;
  phase: 'connected' | 'locked' | 'applied' | 'committed' | 'rolled back' | 'failed';
  detail: string;
  ms: number;
}

export async function ddlCommand(config: Config, args: DdlArgs, io: Io): Promise<number> {
  if (!args.statement || args.statement.trim() === '') {
    io.err('pgbidi: ddl needs the statement as its argument, e.g. pgbidi ddl --config a.yaml "ALTER TABLE t ADD COLUMN c int"\n');
    return 2;
  }
  const nodes = [{ name: config.node.name, dsn: config.node.dsn }, ...config.peers].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const sessions: NodeSession[] = [];
  let ok = false;
  try {
    for (const n of nodes) {
      const client = new pg.Client({ connectionString: n.dsn, application_name: 'pgbidi_ddl', connectionTimeoutMillis: 10_000 });
      client.on('error', () => undefined);
      const s: NodeSession = { name: n.name, client, phase: 'connected', detail: '', ms: 0 };
      sessions.push(s);
      try {
        await client.connect();
      } catch (err) {
        s.phase = 'failed';
        s.detail = `cannot connect: ${errorMessage(err)}`;
        throw err;
      }
    }
    for (const s of sessions) {
      const tables = await resolveTables(s.client, config.replication.tables, config.replication.exclude_tables);
      await s.client.query('BEGIN');
      await s.client.query(`SET LOCAL lock_timeout = ${Math.max(1, Math.round(args.lockTimeoutMs))}`);
      if (tables.length) {
        await step(s, 'locked', () => s.client.query(`LOCK TABLE ${tables.map((t) => qualifiedName(t.schema, t.name)).join(', ')} IN EXCLUSIVE MODE`));
      } else s.phase = 'locked';
    }
    for (const s of sessions) {
      // Several statements separated by semicolons give one result each (node-postgres returns an array).
      const r = await step(s, 'applied', () => s.client.query(args.statement as string) as Promise<pg.QueryResult | pg.QueryResult[]>);
      const result: pg.QueryResult | undefined = Array.isArray(r) ? r.at(-1) : r;
      s.detail = result?.command ?? '';
    }
    for (const s of sessions) await step(s, 'committed', () => s.client.query('COMMIT'));
    ok = true;
  } catch {
    for (const s of sessions) {
      if (s.phase === 'locked' || s.phase === 'applied' || s.phase === 'failed') {
        await s.client.query('ROLLBACK').catch(() => undefined);
        if (s.phase !== 'failed') s.phase = 'rolled back';
      }
    }
  }
  for (const s of sessions) io.out(`  ${s.name}: ${s.phase}${s.detail ? ` (${s.detail})` : ''}${s.ms ? ` ${s.ms} ms` : ''}\n`);
  if (ok) {
    const drift = await remainingDifferences(config, sessions);
    for (const line of drift) io.out(`  schema still differs: ${line}\n`);
    io.out(`ddl applied on ${sessions.length} nodes\n`);
  } else {
    io.err(
      `pgbidi: ddl not applied: ${sessions.some((s) => s.phase === 'committed') ? 'committed on some nodes only (see above)' : 'rolled back on every node'}\n`,
    );
  }
  await Promise.all(sessions.map((s) => s.client.end().catch(() => undefined)));
  return ok ? 0 : 1;
}

async function step<T>(s: NodeSession, phase: NodeSession['phase'], work: () => Promise<T>): Promise<T> {
  const started = performance.now();
  try {
    const r = await work();
    s.phase = phase;
    return r;
  } catch (err) {
    s.phase = 'failed';
    const e = err as Error & { code?: string };
    s.detail = `${phase === 'locked' ? 'lock' : phase === 'applied' ? 'statement' : 'commit'} failed: ${e.message}${e.code ? ` [${e.code}]` : ''}`;
    throw err;
  } finally {
    s.ms += Math.round(performance.now() - started);
  }
}

/** After the change: the replicated tables compared between the first node and every other. */
async function remainingDifferences(config: Config, sessions: readonly NodeSession[]): Promise<string[]> {
  const [first, ...rest] = sessions;
  if (!first) return [];
  const tables = (await resolveTables(first.client, config.replication.tables, config.replication.exclude_tables)).map((t) => `${t.schema}.${t.name}`);
  const here = await readTableDefs(first.client, tables);
  const lines: string[] = [];
  for (const s of rest) {
    for (const d of compareTableDefs(tables, here, await readTableDefs(s.client, tables))) lines.push(describeDifference(d, first.name, s.name));
  }
  return lines;
}
