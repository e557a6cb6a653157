/**
 * What a link checks on its own node, on its control connection, before it applies anything: each
 * problem an operator can fix, said in words, with the fix. The link stays in backoff meanwhile.
 */
import type { ClientBase } from 'pg';
import { NEWEST_SCHEMA_OBJECT } from './metadata-schema.js';
import { METADATA_SCHEMA } from './names.js';
import { partedLink } from './parted-nodes.js';
import { ServerSettingError } from './connection-problem.js';

export interface LinkNames {
  /** This node. */
  readonly self: string;
  readonly peer: string;
  /** The peer's replication origin on this node. */
  readonly origin: string;
}

/**
 * Throws PeerPartedError for a peer that left the group (pgbidi part: it is neither read nor given
 * its slot back), ServerSettingError for a node not set up for the peer, without
 * track_commit_timestamp, or set up by an older version of pgbidi.
 */
export async function checkLocalNode(control: ClientBase, names: LinkNames): Promise<void> {
  const parted = await partedLink(control, null, names.self, names.peer);
  if (parted) throw parted;
  // track_commit_timestamp is checked by setup, but a restart with another postgresql.conf would make
  // every conflict check fail ("could not get commit timestamp data"). The schema: apply's statements
  // name what setup creates, and a node set up by an older version lacks the newest (after an upgrade
  // without setup, every tombstone lookup failed).
  const r = await control.query<{ t: string; origin: boolean; schema: boolean }>(
    `SELECT current_setting('track_commit_timestamp') AS t, EXISTS (SELECT 1 FROM pg_replication_origin WHERE roname = $1) AS origin, ` +
      `to_regprocedure($2) IS NOT NULL AS schema`,
    [names.origin, NEWEST_SCHEMA_OBJECT],
  );
  const row = r.rows[0];
  if (row?.origin !== true) {
    throw new ServerSettingError(
      `this node is not set up for peer ${names.peer} (no replication origin ${names.origin}): run pgbidi setup --config FILE for it; the link retries with backoff`,
    );
  }
  if (row.t !== 'on') {
    throw new ServerSettingError(
      `track_commit_timestamp is '${row.t}' on this node: set track_commit_timestamp = on in its postgresql.conf and restart PostgreSQL (conflict resolution reads commit times); the link retries with backoff`,
    );
  }
  if (row.schema !== true) {
    throw new ServerSettingError(
      `this node's ${METADATA_SCHEMA} schema was set up by an older version of pgbidi (no ${NEWEST_SCHEMA_OBJECT}): run pgbidi setup --config FILE here again; the link retries with backoff`,
    );
  }
}
