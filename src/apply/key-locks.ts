/**
 * Advisory key locks that serialize the apply sessions of different peers on the same keys
 * (technical research §6.2, the "key-level race"): without them two sessions can each decide on a
 * snapshot that misses the other's uncommitted insert or delete of the key. Keys hash into a bounded
 * number of buckets per table (a large transaction cannot exhaust the lock table), and every session
 * takes its buckets in ascending order, so two sessions never wait on each other in a cycle. Computed
 * here, not in SQL, so that the multi-row statements and the apply procedure lock the same buckets.
 */
export const LOCK_BUCKETS = 256;

/** pg_advisory_xact_lock(int4, int4) arguments: the table's lock space and the key's bucket. */
export type KeyLock = readonly [space: number, bucket: number];

/** FNV-1a, 32 bits, over the UTF-16 code units: stable across processes and versions. */
function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

export function keyLock(table: string, key: readonly (string | null)[]): KeyLock {
  return [fnv1a(table) | 0, fnv1a(`${table}\u0000${JSON.stringify(key)}`) % LOCK_BUCKETS];
}

/** Distinct locks in the order every session takes them. */
export function lockOrder(locks: Iterable<KeyLock>): KeyLock[] {
  const seen = new Map<string, KeyLock>();
  for (const l of locks) seen.set(`${l[0]}:${l[1]}`, l);
  return [...seen.values()].sort((a, b) => a[0] - b[0] || a[1] - b[1]);
}
