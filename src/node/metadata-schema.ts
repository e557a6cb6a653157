import { KEY_FORMAT_SETTINGS } from '../util/key-format-settings.js';
import { quoteIdent, quoteLiteral } from '../util/sql.js';
import { METADATA_SCHEMA, ORIGIN_PREFIX, storedKey, TOMBSTONE_WRITE_LOCK, TOMBSTONE_WRITES_SEQUENCE } from './names.js';

/**
 * The object that setup created last (a function's signature, as to_regprocedure reads it). A link
 * checks it exists on its node before it applies anything: a node set up by an older version lacks
 * it, and apply's statements would fail on it one by one. Name the newest object here whenever
 * setup creates a new one that apply uses.
 */
export const NEWEST_SCHEMA_OBJECT = `${METADATA_SCHEMA}.stored_key(jsonb)`;

/**
 * Keys longer than this (bytes of their jsonb) are stored by their digest (pgbidi.stored_key): the
 * btree limit of 2,704 bytes less the table name (up to 127 bytes), the index tuple's header and
 * alignment. A key that fits stays as it is, readable by an operator, and as it was stored before.
 */
const STORED_KEY_MAX_BYTES = 2500;

/**
 * The mark of a tombstone write (see the sequence's comment in metadataSchemaSql): the lock, then
 * the sequence, in that order (AND evaluates left to right and stops at the first false), always
 * false. The trigger's WHEN clause and record_tombstone both evaluate it.
 */
const TOMBSTONE_WRITE_MARK =
  `pg_catalog.pg_advisory_xact_lock_shared(${TOMBSTONE_WRITE_LOCK}::pg_catalog.int8) IS NOT NULL ` +
  `AND pg_catalog.nextval('${METADATA_SCHEMA}.${TOMBSTONE_WRITES_SEQUENCE}') IS NULL`;

/**
 * The pgbidi schema on each node. It is never published: it describes this node.
 * remote_wins() is the last-update-wins order on (commit timestamp, node name), evaluated against
 * the local row's xmin (technical research §5.1): pg_xact_commit_timestamp_origin gives the commit
 * time and the replication origin of the transaction that wrote the row; origin 0 is this node.
 * Names compare in the C collation so that every node orders them the same way.
 */
export function metadataSchemaSql(selfName: string): string[] {
  const s = METADATA_SCHEMA;
  return [
    `CREATE SCHEMA IF NOT EXISTS ${s}`,
    `CREATE TABLE IF NOT EXISTS ${s}.node (
       singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
       name text NOT NULL,
       created_at timestamptz NOT NULL DEFAULT now())`,
    `ALTER TABLE ${s}.node ADD COLUMN IF NOT EXISTS conflict_policy jsonb`,
    `CREATE TABLE IF NOT EXISTS ${s}.conflicts (
       id bigserial PRIMARY KEY,
       logged_at timestamptz NOT NULL DEFAULT clock_timestamp(),
       peer text NOT NULL,
       conflict_type text NOT NULL,
       resolution text NOT NULL,
       table_schema text NOT NULL,
       table_name text NOT NULL,
       key jsonb NOT NULL,
       remote_commit_ts timestamptz,
       remote_commit_lsn pg_lsn,
       remote_node text,
       local_tuple jsonb,
       remote_tuple jsonb)`,
    `CREATE INDEX IF NOT EXISTS conflicts_logged_at ON ${s}.conflicts (logged_at)`,
    // Remote changes that could not be applied because they violate a unique constraint other than
    // the primary key (update_exists, multiple_unique_conflicts): kept whole, with the reason, for
    // `pgbidi dead-letters` to list and retry.
    `CREATE TABLE IF NOT EXISTS ${s}.dead_letters (
       id bigserial PRIMARY KEY,
       logged_at timestamptz NOT NULL DEFAULT clock_timestamp(),
       peer text NOT NULL,
       conflict_type text NOT NULL,
       table_schema text NOT NULL,
       table_name text NOT NULL,
       op text NOT NULL,
       change jsonb NOT NULL,
       reason text NOT NULL,
       sqlstate text,
       constraint_name text,
       remote_commit_ts timestamptz NOT NULL,
       remote_commit_lsn pg_lsn NOT NULL,
       status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'applied', 'discarded')),
       attempts int NOT NULL DEFAULT 0,
       last_attempt_at timestamptz)`,
    // Rows this node's schema refused (apply/rejected-row.ts) are dead letters too: the column at
    // fault and the row's key, for the operator (added after the first release: IF NOT EXISTS).
    `ALTER TABLE ${s}.dead_letters ADD COLUMN IF NOT EXISTS column_name text`,
    `ALTER TABLE ${s}.dead_letters ADD COLUMN IF NOT EXISTS key jsonb`,
    // The form a key is stored and looked up in (storedKey): the key itself, or, when it is longer
    // than STORED_KEY_MAX_BYTES, an object with its SHA-256 (a key is always an array, so the two
    // forms never meet). A btree entry holds at most 2,704 bytes with 8 kB pages: a bytea key prints
    // as hex, twice its length, and a key its own table's index held (up to ~2,700 bytes) could not
    // be a tombstone's, so the application's DELETE of such a row failed (54000). Written as one
    // SQL expression so that the planner inlines it (STABLE like pg_column_size and textsend) and an
    // index scan on (table_name, key) still finds it.
    `CREATE OR REPLACE FUNCTION ${s}.stored_key(k jsonb) RETURNS jsonb
       LANGUAGE sql STABLE AS $$
         SELECT CASE WHEN pg_catalog.pg_column_size(k) <= ${STORED_KEY_MAX_BYTES} THEN k
                ELSE pg_catalog.jsonb_build_object('sha256', pg_catalog.encode(pg_catalog.sha256(pg_catalog.textsend(CAST(k AS pg_catalog.text))), 'hex')) END $$`,
    // Deleted keys, so that an older write cannot bring a row back (technical research §6.2). The
    // version of a tombstone is its own xmin, like a live row's. Never published.
    `CREATE TABLE IF NOT EXISTS ${s}.tombstones (
       table_name text NOT NULL,
       key jsonb NOT NULL,
       deleted_at timestamptz NOT NULL DEFAULT now(),
       PRIMARY KEY (table_name, key))`,
    // Every transaction that writes a tombstone first takes TOMBSTONE_WRITE_LOCK shared (held until
    // it ends) and then advances this sequence, which no rollback takes back: an apply session that
    // read the sequence, found the lock free and then read the tombstones knows that nothing it did
    // not see was written while the sequence stays where it was (apply-procedure-sql.ts,
    // watchTombstoneWrites). The statement trigger covers every writer at trigger depth 0 (apply
    // sessions, whose session_replication_role = replica fires only ALWAYS triggers, and a join's
    // INSERT from its staging table); record_tombstone, one INSERT per deleted row, does the same
    // itself, without a second trigger call per row. The trigger's WHEN clause is the mark: its
    // conditions run in order (ExecQual stops at the first false one), the lock, then nextval, which
    // is never NULL, so the clause is false and the function is never called. A PL/pgSQL call per
    // statement made each tombstone-writing statement ~8 us slower (one-row INSERT … ON CONFLICT
    // into pgbidi.tombstones, in a loop of transactions, 15 and 18); the clause alone, ~4 us.
    `CREATE SEQUENCE IF NOT EXISTS ${s}.${TOMBSTONE_WRITES_SEQUENCE}`,
    `CREATE OR REPLACE FUNCTION ${s}.mark_tombstone_write() RETURNS trigger
       LANGUAGE plpgsql AS $$
       BEGIN
         RETURN NULL;
       END $$`,
    `CREATE OR REPLACE TRIGGER mark_tombstone_write BEFORE INSERT OR UPDATE ON ${s}.tombstones
       FOR EACH STATEMENT WHEN (pg_catalog.pg_trigger_depth() = 0 AND ${TOMBSTONE_WRITE_MARK})
       EXECUTE FUNCTION ${s}.mark_tombstone_write()`,
    `ALTER TABLE ${s}.tombstones ENABLE ALWAYS TRIGGER mark_tombstone_write`,
    // Local deletes (and key changes) leave a tombstone through this trigger. It is an ordinary
    // trigger: it does not fire in apply sessions (session_replication_role = replica), which write
    // their tombstones themselves with the remote version. It runs in the application's sessions,
    // under their search_path: every function, operator and type it names is pg_catalog's, so that
    // one of the same name earlier in that path (public.unnest, say) is never called (a SET
    // search_path clause would do the same at the cost of a setting saved and restored per row).
    // The settings that decide how a key prints (KEY_FORMAT_SETTINGS) are another matter: the
    // application's own (a TimeZone other than UTC, say) gave keys that apply, under pgbidi's, never
    // looked for, and an older update brought back a row deleted here. Per deleted row (50,000-row
    // DELETEs of a timestamptz key, PG 18, medians of 5): 24.3 us without either, 25.9 with the SET
    // clause alone, 25.4 with stored_key alone, 27.2 with both.
    `CREATE OR REPLACE FUNCTION ${s}.record_tombstone() RETURNS trigger
       LANGUAGE plpgsql ${KEY_FORMAT_SETTINGS.map(([name, value]) => `SET ${name} = ${quoteLiteral(value)}`).join(' ')} AS $$
       BEGIN
         PERFORM ${TOMBSTONE_WRITE_MARK};
         INSERT INTO ${s}.tombstones AS tb (table_name, key)
         SELECT pg_catalog.concat_ws('.', TG_TABLE_SCHEMA, TG_TABLE_NAME),
                ${storedKey('pg_catalog.jsonb_agg(pg_catalog.jsonb_object_field(pg_catalog.to_jsonb(OLD), k) ORDER BY o)')}
           FROM pg_catalog.unnest(TG_ARGV) WITH ORDINALITY AS u(k, o)
         ON CONFLICT (table_name, key) DO UPDATE SET deleted_at = pg_catalog.now();
         RETURN NULL;
       END $$`,
    // The insert fast path's gate (apply/statements.ts insertRowsFast): with a tombstone for the
    // table, inserts must be checked row by row, so the plain INSERT stops with SQLSTATE PB001.
    `CREATE OR REPLACE FUNCTION ${s}.no_tombstones(tbl text) RETURNS boolean
       LANGUAGE plpgsql STABLE AS $$
       BEGIN
         IF EXISTS (SELECT 1 FROM ${s}.tombstones WHERE table_name = tbl) THEN
           RAISE EXCEPTION 'pgbidi: % has tombstones', tbl USING ERRCODE = 'PB001';
         END IF;
         RETURN true;
       END $$`,
    `CREATE OR REPLACE FUNCTION ${s}.node_of_origin(roident oid) RETURNS text
       LANGUAGE sql STABLE AS $$
         SELECT CASE WHEN roident = 0 THEN ${quoteLiteral(selfName)}
                ELSE (SELECT substr(o.roname, ${ORIGIN_PREFIX.length + 1}) FROM pg_catalog.pg_replication_origin o
                       WHERE o.roident = node_of_origin.roident AND o.roname LIKE ${quoteLiteral(`${ORIGIN_PREFIX.replace(/_/g, '\\_')}%`)})
                END $$`,
    `CREATE OR REPLACE FUNCTION ${s}.remote_wins(local_xmin xid, remote_ts timestamptz, remote_node text) RETURNS boolean
       LANGUAGE sql STABLE AS $$
         SELECT (coalesce(c.timestamp, '-infinity'::timestamptz), coalesce(${s}.node_of_origin(c.roident), '') COLLATE "C")
                < (remote_ts, remote_node COLLATE "C")
           FROM pg_catalog.pg_xact_commit_timestamp_origin(local_xmin) c $$`,
    // Tables with delta counters: a merge that keeps newer local columns writes the row with the
    // remote (older) version as its xmin. The version the row really holds is kept here, valid while
    // the row's xmin is still \`xid\`; purged like tombstones once no older write can arrive.
    `CREATE TABLE IF NOT EXISTS ${s}.row_versions (
       table_name text NOT NULL,
       key jsonb NOT NULL,
       xid xid NOT NULL,
       version_ts timestamptz NOT NULL,
       version_node text NOT NULL,
       PRIMARY KEY (table_name, key))`,
    `CREATE OR REPLACE FUNCTION ${s}.row_version(tbl text, k jsonb, local_xmin xid, OUT ts timestamptz, OUT node text)
       LANGUAGE sql STABLE AS $$
         SELECT coalesce(v.version_ts, c.timestamp, '-infinity'::timestamptz),
                coalesce(v.version_node, ${s}.node_of_origin(c.roident), '')
           FROM pg_catalog.pg_xact_commit_timestamp_origin(local_xmin) c
           LEFT JOIN ${s}.row_versions v ON v.table_name = tbl AND v.key = k AND v.xid = local_xmin $$`,
    `CREATE OR REPLACE FUNCTION ${s}.row_remote_wins(tbl text, k jsonb, local_xmin xid, remote_ts timestamptz, remote_node text) RETURNS boolean
       LANGUAGE sql STABLE AS $$
         SELECT (r.ts, r.node COLLATE "C") < (remote_ts, remote_node COLLATE "C")
           FROM ${s}.row_version(tbl, k, local_xmin) r $$`,
    `CREATE OR REPLACE FUNCTION ${s}.remote_older(local_xmin xid, remote_ts timestamptz, remote_node text) RETURNS boolean
       LANGUAGE sql STABLE AS $$
         SELECT (remote_ts, remote_node COLLATE "C")
                < (coalesce(c.timestamp, '-infinity'::timestamptz), coalesce(${s}.node_of_origin(c.roident), '') COLLATE "C")
           FROM pg_catalog.pg_xact_commit_timestamp_origin(local_xmin) c $$`,
  ];
}

/** The tombstone triggers of one replicated table with a primary key. */
export function tombstoneTriggerSql(qualifiedTable: string, keyColumns: readonly string[]): string[] {
  const args = keyColumns.map((k) => quoteLiteral(k)).join(', ');
  const changed = keyColumns.map((k) => `OLD.${quoteIdent(k)} IS DISTINCT FROM NEW.${quoteIdent(k)}`).join(' OR ');
  return [
    `CREATE OR REPLACE TRIGGER pgbidi_tombstone_delete AFTER DELETE ON ${qualifiedTable}
       FOR EACH ROW EXECUTE FUNCTION ${METADATA_SCHEMA}.record_tombstone(${args})`,
    `CREATE OR REPLACE TRIGGER pgbidi_tombstone_key_change AFTER UPDATE OF ${keyColumns.map(quoteIdent).join(', ')} ON ${qualifiedTable}
       FOR EACH ROW WHEN (${changed}) EXECUTE FUNCTION ${METADATA_SCHEMA}.record_tombstone(${args})`,
  ];
}
