import { quoteLiteral } from '../util/sql.js';
import { METADATA_SCHEMA, ORIGIN_PREFIX } from './names.js';

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
  ];
}
