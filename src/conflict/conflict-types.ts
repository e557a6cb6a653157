/**
 * The conflict vocabulary: PostgreSQL 18's names (logical-replication-conflicts.html, conflict.c's
 * ConflictTypeNames) plus `update_deleted` from the retain_dead_tuples work. One closed list shared
 * by logs, the conflict table, metric labels and the documentation.
 */
export const CONFLICT_TYPES = [
  'insert_exists',
  'update_origin_differs',
  'update_exists',
  'update_missing',
  'update_deleted',
  'delete_origin_differs',
  'delete_missing',
  'multiple_unique_conflicts',
] as const;

export type ConflictType = (typeof CONFLICT_TYPES)[number];

/** What happened to the remote change. */
export const RESOLUTIONS = ['apply_remote', 'keep_local', 'skip', 'error', 'dead_letter'] as const;
export type Resolution = (typeof RESOLUTIONS)[number];

export interface ConflictRecord {
  readonly type: ConflictType;
  readonly resolution: Resolution;
  readonly schema: string;
  readonly table: string;
  /** Primary key (or full identity) values as text, in key order. */
  readonly key: readonly (string | null)[];
  readonly remoteCommitTimestamp: string;
  readonly remoteNode: string;
  /** The remote row (column → text value; unchanged TOAST values are left out), when there is one. */
  readonly remoteTuple?: Readonly<Record<string, string | null>>;
  /** The local row before the change, as PostgreSQL's to_jsonb gave it, when it existed. */
  readonly localTuple?: unknown;
}
