import type pg from 'pg';
import { agentClient } from '../util/agent-client.js';
import type { Config } from '../config/config-schema.js';
import { qualifiedName, quoteIdent } from '../util/sql.js';
import { resolveTables } from './table-selection.js';

/**
 * Node-unique sequences. Every node of a group hands out keys from its own copy of a table's
 * sequence, and replicated rows do not advance the copies elsewhere: with the default increment of 1,
 * two nodes give the same key to different rows, which meet as insert_exists conflicts (one row
 * lost). BDR's answer before its global sequences was "step/offset" sequences; here it is
 * `sequences: { mode: node-offset, group_size: G, offset: K }`: `setup` makes every serial and identity
 * sequence of the replicated tables INCREMENT BY G, restarted at the first value ≡ K (mod G) above
 * every value already in the column (here and on reachable peers), so that each node's values are
 * its own residue class. UUID keys (gen_random_uuid()) need none of this.
 */

export interface SequenceColumn {
  readonly table: string;
  readonly column: string;
  /** The sequence, schema-qualified and quoted where needed (quote_ident). */
  readonly sequence: string;
  readonly increment: bigint;
  readonly start: bigint;
  readonly min: bigint;
  readonly max: bigint;
  /** The column is part of the primary key or of a unique index. */
  readonly key: boolean;
}

export interface SequenceAlignment {
  readonly sequence: string;
  readonly columns: readonly string[];
  readonly status: 'aligned' | 'unchanged';
  /** The next value this node hands out (when aligned now). */
  readonly restartAt: bigint | null;
}

export class SequenceError extends Error {
  readonly code = 'PGBIDI_SEQUENCE_FAILED';
  constructor(message: string) {
    super(message);
    this.name = 'SequenceError';
  }
}

/** The node's offset: configured, or its position among the group's names in C order. */
export function nodeOffset(config: Config): number {
  if (config.sequences.offset !== undefined) return config.sequences.offset;
  const names = [config.node.name, ...config.peers.map((p) => p.name)].sort();
  return names.indexOf(config.node.name);
}

/** The first value above `above` that is ≡ offset (mod group). */
export function firstValueAbove(above: bigint, offset: bigint, group: bigint): bigint {
  const next = above + 1n;
  return next + ((((offset - next) % group) + group) % group);
}

/** Serial, identity and nextval() columns of the given tables (schema.table). */
export async function sequenceColumns(client: pg.ClientBase, tables: readonly string[]): Promise<SequenceColumn[]> {
  if (tables.length === 0) return [];
  const r = await client.query<{ table: string; column: string; sequence: string; increment: string; start: string; min: string; max: string; key: boolean }>(
    `SELECT n.nspname || '.' || c.relname AS "table", a.attname AS "column", quote_ident(sn.nspname) || '.' || quote_ident(sq.relname) AS sequence,
            s.seqincrement::text AS increment, s.seqstart::text AS start, s.seqmin::text AS min, s.seqmax::text AS max,
            EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND (i.indisprimary OR i.indisunique) AND a.attnum = ANY(i.indkey)) AS key
       FROM pg_class c
       JOIN pg_namespace n ON n.oid = c.relnamespace
       JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
       JOIN pg_class sq ON sq.relkind = 'S' AND (
              -- serial (auto) and identity (internal) sequences belong to their column
              EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = sq.oid
                         AND d.refclassid = 'pg_class'::regclass AND d.refobjid = c.oid AND d.refobjsubid = a.attnum AND d.deptype IN ('a', 'i'))
              -- a DEFAULT nextval('…') on a sequence of its own
              OR EXISTS (SELECT 1 FROM pg_attrdef ad JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid
                          WHERE ad.adrelid = c.oid AND ad.adnum = a.attnum AND d.refclassid = 'pg_class'::regclass AND d.refobjid = sq.oid))
       JOIN pg_sequence s ON s.seqrelid = sq.oid
       JOIN pg_namespace sn ON sn.oid = sq.relnamespace
      WHERE n.nspname || '.' || c.relname = ANY($1::text[])
      ORDER BY 1, 2`,
    [tables],
  );
  return r.rows.map((x) => ({
    table: x.table,
    column: x.column,
    sequence: x.sequence,
    increment: BigInt(x.increment),
    start: BigInt(x.start),
    min: BigInt(x.min),
    max: BigInt(x.max),
    key: x.key,
  }));
}

const residue = (v: bigint, g: bigint): bigint => ((v % g) + g) % g;

/**
 * `setup` with `sequences.mode: node-offset`: aligns every sequence of the replicated tables
 * (idempotent: a sequence already on this node's residue class is left alone).
 */
export async function alignSequences(config: Config): Promise<SequenceAlignment[]> {
  if (config.sequences.mode !== 'node-offset' || config.sequences.group_size === undefined) return [];
  const group = BigInt(config.sequences.group_size);
  const offset = BigInt(nodeOffset(config));
  const client = agentClient({ connectionString: config.node.dsn, application_name: 'pgbidi_setup' });
  await client.connect();
  try {
    const tables = (await resolveTables(client, config.replication.tables, config.replication.exclude_tables)).map((t) => `${t.schema}.${t.name}`);
    const bySequence = new Map<string, SequenceColumn[]>();
    for (const c of await sequenceColumns(client, tables)) bySequence.set(c.sequence, [...(bySequence.get(c.sequence) ?? []), c]);
    const out: SequenceAlignment[] = [];
    for (const [sequence, columns] of bySequence) {
      const first = columns[0] as SequenceColumn;
      const names = columns.map((c) => `${c.table}.${c.column}`);
      if (first.increment === group && residue(first.start, group) === offset) {
        out.push({ sequence, columns: names, status: 'unchanged', restartAt: null });
        continue;
      }
      if (first.increment < 0n) throw new SequenceError(`${sequence} counts down (increment ${first.increment}): pgbidi aligns ascending sequences only`);
      // Rows other nodes wrote that have not arrived here yet count too, where they can be asked.
      const peersMax = await maxOnPeers(config, columns);
      await client.query('BEGIN');
      try {
        // No insert takes a value while the sequence moves: EXCLUSIVE still lets readers in.
        for (const t of new Set(columns.map((c) => c.table))) await client.query(`LOCK TABLE ${qualifiedTable(t)} IN EXCLUSIVE MODE`);
        let above = first.min - 1n;
        for (const c of columns) above = max(above, await columnMax(client, c));
        // Before its first nextval (is_called false) last_value is the next value, not a used one.
        const last = await client.query<{ v: string }>(`SELECT (CASE WHEN is_called THEN last_value ELSE last_value - 1 END)::text AS v FROM ${sequence}`);
        above = max(max(above, BigInt(last.rows[0]?.v ?? '0')), peersMax);
        const restartAt = firstValueAbove(above, offset, group);
        if (restartAt > first.max) throw new SequenceError(`${sequence} would restart at ${restartAt}, above its maximum ${first.max}`);
        await client.query(`ALTER SEQUENCE ${sequence} INCREMENT BY ${group} START WITH ${restartAt} RESTART WITH ${restartAt}`);
        await client.query('COMMIT');
        out.push({ sequence, columns: names, status: 'aligned', restartAt });
      } catch (err) {
        await client.query('ROLLBACK').catch(() => undefined);
        throw err;
      }
    }
    return out;
  } finally {
    await client.end();
  }
}

/**
 * Replicated key columns whose values would collide between nodes: a sequence that steps by less
 * than the number of nodes, or one on the same residue class as the same sequence on a peer.
 */
export async function sequenceWarnings(config: Config): Promise<string[]> {
  const nodes = BigInt(config.peers.length + 1);
  const client = agentClient({ connectionString: config.node.dsn, application_name: 'pgbidi_cli' });
  await client.connect();
  let mine: SequenceColumn[];
  try {
    const tables = (await resolveTables(client, config.replication.tables, config.replication.exclude_tables)).map((t) => `${t.schema}.${t.name}`);
    mine = (await sequenceColumns(client, tables)).filter((c) => c.key);
  } finally {
    await client.end();
  }
  const warnings: string[] = [];
  for (const c of mine.filter((c) => c.increment < nodes)) {
    warnings.push(
      `${c.table}.${c.column} takes its values from ${c.sequence} (increment ${c.increment}): every node hands out the same values and ` +
        `concurrent inserts collide; set sequences: { mode: node-offset, group_size: <at least ${nodes}> } and run 'pgbidi setup' on every node, or use uuid keys`,
    );
  }
  const stepped = mine.filter((c) => c.increment >= nodes);
  if (stepped.length === 0) return warnings;
  for (const peer of config.peers) {
    const theirs = await onPeer(peer.dsn, (p) =>
      sequenceColumns(
        p,
        stepped.map((c) => c.table),
      ),
    );
    if (theirs === null) continue;
    for (const c of stepped) {
      const t = theirs.find((x) => x.table === c.table && x.column === c.column);
      if (t && t.increment === c.increment && residue(t.start, t.increment) === residue(c.start, c.increment)) {
        warnings.push(
          `${c.table}.${c.column}: ${c.sequence} hands out the same values here and on ${peer.name} (≡ ${residue(c.start, c.increment)} mod ${c.increment}): ` +
            `give each node its own sequences.offset and run 'pgbidi setup'`,
        );
      }
    }
  }
  return warnings;
}

async function maxOnPeers(config: Config, columns: readonly SequenceColumn[]): Promise<bigint> {
  let above = -1n << 63n;
  for (const peer of config.peers) {
    const values = await onPeer(peer.dsn, async (p) => Promise.all(columns.map((c) => columnMax(p, c))));
    for (const v of values ?? []) above = max(above, v);
  }
  return above;
}

async function columnMax(client: pg.ClientBase, c: SequenceColumn): Promise<bigint> {
  const r = await client.query<{ v: string | null }>(`SELECT max(${quoteIdent(c.column)})::text AS v FROM ${qualifiedTable(c.table)}`);
  const v = r.rows[0]?.v;
  return v === null || v === undefined ? -1n << 63n : BigInt(v);
}

/** Runs `task` on a peer; null when the peer does not answer or lacks the objects. */
async function onPeer<T>(dsn: string, task: (client: pg.Client) => Promise<T>): Promise<T | null> {
  const client = agentClient({ connectionString: dsn, application_name: 'pgbidi_setup', connectionTimeoutMillis: 5000 });
  client.on('error', () => undefined);
  try {
    await client.connect();
    return await task(client);
  } catch {
    return null;
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** schema.table as sequenceColumns reports it, quoted (names with a dot are not replicated patterns). */
function qualifiedTable(t: string): string {
  const i = t.indexOf('.');
  return qualifiedName(t.slice(0, i), t.slice(i + 1));
}

const max = (a: bigint, b: bigint): bigint => (a > b ? a : b);
