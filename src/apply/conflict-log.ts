import type { ConflictRecord } from '../conflict/conflict-types.js';
import { METADATA_SCHEMA } from '../node/names.js';
import { formatLsn } from '../protocol/lsn.js';
import type { Lsn } from '../protocol/lsn.js';
import type { Statement } from './statements.js';

/**
 * The rows of pgbidi.conflicts for one transaction's conflicts, written by the statement path in the
 * transaction that applied them (the apply procedure writes its own, the same way).
 */
export function conflictLogStatement(peer: string, conflicts: readonly ConflictRecord[], commitLsn: Lsn): Statement {
  return {
    text: `INSERT INTO ${METADATA_SCHEMA}.conflicts (peer, conflict_type, resolution, table_schema, table_name, key, remote_commit_ts, remote_commit_lsn, remote_node, local_tuple, remote_tuple)
           SELECT $1, c.type, c.resolution, c.schema, c.tbl, c.key, c.ts::timestamptz, $2::pg_lsn, c.node, c.local, c.remote
             FROM jsonb_to_recordset($3::jsonb) AS c(type text, resolution text, schema text, tbl text, key jsonb, ts text, node text, local jsonb, remote jsonb)`,
    values: [
      peer,
      formatLsn(commitLsn),
      JSON.stringify(
        conflicts.map((c) => ({
          type: c.type,
          resolution: c.resolution,
          schema: c.schema,
          tbl: c.table,
          key: c.key,
          ts: c.remoteCommitTimestamp,
          node: c.remoteNode,
          local: c.localTuple ?? null,
          remote: c.remoteTuple ?? null,
        })),
      ),
    ],
  };
}
