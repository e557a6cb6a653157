/**
 * Deterministic names of everything pgbidi creates, so that a restarted or re-run agent finds its
 * own objects again (never temporary or random slot names).
 */
export const METADATA_SCHEMA = 'pgbidi';

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
