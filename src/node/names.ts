/**
 * Deterministic names of everything pgbidi creates, so that a restarted or re-run agent finds its
 * own objects again (never temporary or random slot names).
 */
export const METADATA_SCHEMA = 'pgbidi';

/**
 * A key (a jsonb array of its typed values) in the form pgbidi.tombstones and pgbidi.row_versions
 * store and look it up in: pgbidi.stored_key, which setup creates (node/metadata-schema.ts).
 */
export function storedKey(jsonbKey: string): string {
  return `${METADATA_SCHEMA}.stored_key(${jsonbKey})`;
}

/** storedKey of the key whose values are these SQL expressions, in key order. */
export function storedKeyOf(values: readonly string[]): string {
  return storedKey(`jsonb_build_array(${values.join(', ')})`);
}

/** The replication origin on node `self` that tracks what it applied from `peer`. */
export function originName(peer: string): string {
  return `pgbidi_${peer}`;
}

/** Inverse of originName, for mapping roident → node in conflict versions. */
export const ORIGIN_PREFIX = 'pgbidi_';

/** The logical slot on `source` that `target` consumes. */
export function slotName(source: string, target: string): string {
  return `pgbidi_${source}_to_${target}`;
}

export function applicationName(source: string, target: string): string {
  return `pgbidi_${target}_from_${source}`;
}

/** Prefix of the logical messages pgbidi emits (heartbeats) and reads (traceparent). */
export const HEARTBEAT_PREFIX = 'pgbidi.heartbeat';
export const TRACEPARENT_PREFIX = 'traceparent';

/**
 * The advisory lock (bigint form) every writer of pgbidi.tombstones holds shared until it commits,
 * and the sequence it advances after taking it: the apply procedure's cheap test for tombstones
 * written since it last looked (apply-procedure-sql.ts, watchTombstoneWrites). The key spells
 * "pgbiditw" in ASCII; the two-int form of the procedure's key locks is another lock space.
 */
export const TOMBSTONE_WRITE_LOCK = '8099550659644847223';
export const TOMBSTONE_WRITES_SEQUENCE = 'tombstone_writes';
