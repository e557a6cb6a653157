import type pg from 'pg';
import { qualifiedName, quoteIdent, quoteLiteral } from '../util/sql.js';
import { COPY_SESSION_SQL } from '../util/session-limits.js';
import { pipeCopy } from './copy-pipe.js';
import { METADATA_SCHEMA, ORIGIN_PREFIX, storedKeyOf } from './names.js';

/**
 * Copies one table from the donor (a session inside the exported snapshot) to the joining node with
 * every row's version: the commit timestamp and origin node that last-update-wins compares
 * (docs/architecture.md "How a conflict is decided"). A row's version on the joining node is the
 * commit record of the transaction that wrote it, so rows are written in one local transaction per
 * version, under the replication origin of the version's node and with the version's time as the
 * commit timestamp (pg_replication_origin_xact_setup, as apply does). Such transactions carry an
 * origin, so no peer receives them back.
 *
 * The rows travel once, unparsed: COPY from the donor into a temporary stage table on the joining
 * node (with the version in two leading columns), then per version one INSERT … SELECT from the
 * stage, committed by a procedure that loops over the versions of one node (one round trip per
 * node and table, not per version).
 */

export interface CopyTable {
  readonly schema: string;
  readonly name: string;
  /** Primary key columns, to find a merged row's kept version in pgbidi.row_versions. */
  readonly primaryKey: readonly string[];
}

export interface TableCopyResult {
  readonly rows: number;
  /** The newest version copied per node (commit times as timestamptz text); empty for an empty table. */
  readonly newest: readonly string[];
  /** Nodes whose versions the table holds. */
  readonly nodes: readonly string[];
}

/** Serializes the use of one replication origin: a PostgreSQL origin is held by one session at a time. */
export type OriginLock = <T>(origin: string, work: () => Promise<T>) => Promise<T>;

export function originLock(): OriginLock {
  const tails = new Map<string, Promise<unknown>>();
  return async <T>(origin: string, work: () => Promise<T>): Promise<T> => {
    const before = tails.get(origin) ?? Promise.resolve();
    const run = before.then(work, work);
    tails.set(
      origin,
      run.catch(() => undefined),
    );
    return run;
  };
}

/** Origin on the joining node for versions whose node the donor could not name (an origin pgbidi did not create). */
export const UNNAMED_ORIGIN = 'pgbidi-join-unnamed';

const STAGE = 'pg_temp.pgbidi_join_stage';
const TS = 'pgbidi_join_version_ts';
const NODE = 'pgbidi_join_version_node';

/** Session settings of a target session: triggers and foreign keys as for apply, no wait for each commit. */
export const TARGET_SESSION_SQL = [
  // The rows are the donor's, already checked there; apply sessions run the same way.
  `SET session_replication_role = replica`,
  // Durability comes from the join's last commit, which flushes the WAL of every commit before it.
  `SET synchronous_commit = off`,
  `SET temp_buffers = '64MB'`,
  ...COPY_SESSION_SQL,
  `CREATE OR REPLACE PROCEDURE pg_temp.pgbidi_join_load(node text, ins text)
     LANGUAGE plpgsql AS $$
     DECLARE v record;
     BEGIN
       FOR v IN EXECUTE format('SELECT DISTINCT ${TS} AS ts FROM ${STAGE} WHERE ${NODE} = %L ORDER BY 1', node) LOOP
         PERFORM pg_catalog.pg_replication_origin_xact_setup('0/0', v.ts);
         EXECUTE ins USING node, v.ts;
         COMMIT;
       END LOOP;
     END $$`,
];

/** The origin on the joining node under which rows of `node`'s versions are written. */
export function versionOrigin(node: string): string {
  return node === '' ? UNNAMED_ORIGIN : `${ORIGIN_PREFIX}${node}`;
}

/** Columns that COPY can write (not generated, not dropped), in table order. */
async function writableColumns(client: pg.ClientBase, table: CopyTable): Promise<string[]> {
  const r = await client.query<{ n: string }>(
    `SELECT a.attname AS n FROM pg_attribute a
      WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
      ORDER BY a.attnum`,
    [qualifiedName(table.schema, table.name)],
  );
  return r.rows.map((x) => x.n);
}

/**
 * The donor's query: the row's version and its columns. A merged delta row's version is the one
 * pgbidi.row_versions keeps for it (metadata-schema.ts row_version); a row without a commit
 * timestamp (written before track_commit_timestamp was on) gets -infinity, which orders as the
 * donor's missing timestamp does (remote_wins coalesces it to -infinity).
 */
async function donorSelect(donor: pg.ClientBase, table: CopyTable, columns: readonly string[]): Promise<string> {
  const tbl = `${table.schema}.${table.name}`;
  const kind = await donor.query<{ k: string }>(`SELECT relkind AS k FROM pg_class WHERE oid = $1::regclass`, [qualifiedName(table.schema, table.name)]);
  const only = kind.rows[0]?.k === 'p' ? '' : 'ONLY ';
  const kept =
    table.primaryKey.length > 0 &&
    !(table.schema === METADATA_SCHEMA) &&
    (await donor.query(`SELECT 1 FROM ${METADATA_SCHEMA}.row_versions WHERE table_name = $1 LIMIT 1`, [tbl])).rowCount !== 0;
  const cols = columns.map((c) => `t.${quoteIdent(c)}`).join(', ');
  const from = `${only}${qualifiedName(table.schema, table.name)} AS t LEFT JOIN LATERAL pg_catalog.pg_xact_commit_timestamp_origin(t.xmin) AS c ON true`;
  if (!kept) {
    return `SELECT coalesce(c.timestamp, '-infinity'::timestamptz), coalesce(${METADATA_SCHEMA}.node_of_origin(c.roident), ''), ${cols} FROM ${from}`;
  }
  const key = storedKeyOf(table.primaryKey.map((k) => `t.${quoteIdent(k)}`));
  return (
    `SELECT coalesce(v.version_ts, c.timestamp, '-infinity'::timestamptz), coalesce(v.version_node, ${METADATA_SCHEMA}.node_of_origin(c.roident), ''), ${cols} ` +
    `FROM ${from} LEFT JOIN ${METADATA_SCHEMA}.row_versions AS v ON v.table_name = ${quoteLiteral(tbl)} AND v.key = ${key} AND v.xid = t.xmin`
  );
}

/**
 * Copies `table` from `donor` (inside the snapshot) into `target` (a session prepared with
 * TARGET_SESSION_SQL). `ensureOrigin` creates the origin for a node on the target when missing.
 */
export async function copyTable(
  donor: pg.ClientBase,
  target: pg.ClientBase,
  table: CopyTable,
  lock: OriginLock,
  ensureOrigin: (origin: string) => Promise<void>,
  onRows: (n: number) => void,
): Promise<TableCopyResult> {
  const qualified = qualifiedName(table.schema, table.name);
  const columns = await writableColumns(target, table);
  const donorColumns = new Set(await writableColumns(donor, table));
  const missing = columns.filter((c) => !donorColumns.has(c));
  if (missing.length) throw new Error(`${table.schema}.${table.name}: the donor has no column ${missing.join(', ')}`);
  const list = columns.map(quoteIdent).join(', ');

  await target.query(`DROP TABLE IF EXISTS ${STAGE}`);
  await target.query(`CREATE TEMP TABLE pgbidi_join_stage (${TS} timestamptz NOT NULL, ${NODE} text NOT NULL, LIKE ${qualified})`);
  const rows = await pipeCopy(
    donor,
    `COPY (${await donorSelect(donor, table, columns)}) TO STDOUT`,
    target,
    `COPY ${STAGE} (${TS}, ${NODE}, ${list}) FROM STDIN`,
    onRows,
  );
  if (rows === 0) {
    await target.query(`DROP TABLE ${STAGE}`);
    return { rows, newest: [], nodes: [] };
  }
  await target.query(`CREATE INDEX ON ${STAGE} (${NODE}, ${TS})`);
  await target.query(`ANALYZE ${STAGE}`);
  const summary = await target.query<{ node: string; newest: string }>(
    `SELECT ${NODE} AS node, max(${TS})::text AS newest FROM ${STAGE} GROUP BY 1 ORDER BY 1`,
  );
  const insert = `INSERT INTO ${qualified} (${list}) SELECT ${list} FROM ${STAGE} WHERE ${NODE} = $1 AND ${TS} = $2`;
  for (const { node } of summary.rows) {
    const origin = versionOrigin(node);
    await ensureOrigin(origin);
    await lock(origin, async () => {
      await target.query('SELECT pg_catalog.pg_replication_origin_session_setup($1)', [origin]);
      try {
        await target.query('CALL pg_temp.pgbidi_join_load($1, $2)', [node, insert]);
      } finally {
        await target.query('SELECT pg_catalog.pg_replication_origin_session_reset()');
      }
    });
  }
  await target.query(`DROP TABLE ${STAGE}`);
  return { rows, newest: summary.rows.map((r) => r.newest), nodes: summary.rows.map((r) => r.node) };
}
