import { assertNever } from '../util/assert-never.js';
import type { ConflictType, Resolution } from './conflict-types.js';

/**
 * Conflict resolution policies and the pure rules behind them. The apply statements implement the
 * same rules in SQL (apply/statements.ts asks `remoteApplies` which predicate to generate); tests
 * check the two against each other on real servers.
 */
export const POLICIES = ['last_update_wins', 'first_update_wins', 'apply_remote', 'keep_local', 'skip', 'error', 'delta'] as const;
export type Policy = (typeof POLICIES)[number];

/** What happens to a change that violates a unique constraint other than the primary key. */
export const UNIQUE_POLICIES = ['dead_letter', 'error', 'skip'] as const;
export type UniquePolicy = (typeof UNIQUE_POLICIES)[number];

/**
 * What happens to a remote row that this node's schema refuses although its table and columns fit: a
 * CHECK or NOT NULL constraint the peer does not have, a value that does not convert to the local
 * type (apply/rejected-row.ts). `dead_letter` sets it aside and applies the rest; `error` stops the
 * link before the transaction until the schema accepts it. Never skipped: nothing is lost.
 */
export const REJECTED_ROW_POLICIES = ['dead_letter', 'error'] as const;
export type RejectedRowPolicy = (typeof REJECTED_ROW_POLICIES)[number];

/** A row version: origin commit time (µs since 2000) and origin node, ordered lexicographically. */
export interface Version {
  readonly ts: bigint;
  readonly node: string;
}

/** Total order on versions; node names compare bytewise (C collation), as remote_wins() does in SQL. */
export function compareVersions(a: Version, b: Version): number {
  if (a.ts !== b.ts) return a.ts < b.ts ? -1 : 1;
  return a.node < b.node ? -1 : a.node > b.node ? 1 : 0;
}

export type Operation = 'insert' | 'update' | 'delete';

/**
 * When a remote change overwrites an existing local row:
 * - `remote_newer`: its version is greater (last-update-wins);
 * - `remote_older`: its version is smaller (first-update-wins, for inserts: the first insert wins);
 * - `always`: unconditionally (apply_remote, PostgreSQL 18's behaviour for *_origin_differs);
 * - `same_origin`: only when the local row was last written by the same origin, i.e. when there is no
 *   conflict in PostgreSQL 18's sense (keep_local, skip, error).
 */
export type OverwriteRule = 'remote_newer' | 'remote_older' | 'always' | 'same_origin';

export function overwriteRule(policy: Policy, op: Operation): OverwriteRule {
  switch (policy) {
    case 'last_update_wins':
    case 'delta':
      return 'remote_newer';
    case 'first_update_wins':
      // Later updates of a row must still apply; only concurrent inserts keep the first one.
      return op === 'insert' ? 'remote_older' : 'remote_newer';
    case 'apply_remote':
      return 'always';
    case 'keep_local':
    case 'skip':
    case 'error':
      return 'same_origin';
    default:
      return assertNever(policy);
  }
}

/**
 * A missing row (update_missing) or one deleted by a newer delete elsewhere (update_deleted): is it
 * re-created from the remote update?
 */
export function recreatesMissing(policy: Policy, deletedLater: boolean): boolean {
  switch (policy) {
    case 'last_update_wins':
    case 'first_update_wins':
    case 'delta':
      return !deletedLater;
    case 'apply_remote':
      return true;
    case 'keep_local':
    case 'skip':
    case 'error':
      return false;
    default:
      return assertNever(policy);
  }
}

export interface ConflictCase {
  readonly type: ConflictType;
  readonly policy: Policy;
  /** The local row's (or the newer tombstone's) version; null when there is none. */
  readonly local: Version | null;
  readonly remote: Version;
  readonly uniquePolicy?: UniquePolicy;
}

function overwrites(rule: OverwriteRule, local: Version | null, remote: Version): boolean {
  if (local === null) return true;
  switch (rule) {
    case 'remote_newer':
      return compareVersions(remote, local) > 0;
    case 'remote_older':
      return compareVersions(remote, local) < 0;
    case 'always':
      return true;
    case 'same_origin':
      return local.node === remote.node;
    default:
      return assertNever(rule);
  }
}

/** The resolution of one conflict: the pure statement of what apply does. */
export function resolveConflict(c: ConflictCase): Resolution {
  const loses: Resolution = c.policy === 'error' ? 'error' : c.policy === 'skip' ? 'skip' : 'keep_local';
  switch (c.type) {
    case 'insert_exists':
      return overwrites(overwriteRule(c.policy, 'insert'), c.local, c.remote) ? 'apply_remote' : loses;
    case 'update_origin_differs':
      if (c.policy === 'delta') return 'apply_remote'; // counters merge whatever the order
      return overwrites(overwriteRule(c.policy, 'update'), c.local, c.remote) ? 'apply_remote' : loses;
    case 'delete_origin_differs':
      return overwrites(overwriteRule(c.policy, 'delete'), c.local, c.remote) ? 'apply_remote' : loses;
    case 'update_missing':
      return recreatesMissing(c.policy, false) ? 'apply_remote' : c.policy === 'error' ? 'error' : 'skip';
    case 'update_deleted':
      return recreatesMissing(c.policy, true) ? 'apply_remote' : c.policy === 'error' ? 'error' : 'skip';
    case 'delete_missing':
      return 'skip'; // nothing to delete; the tombstone is recorded whatever the policy
    case 'update_exists':
    case 'multiple_unique_conflicts': {
      const u = c.uniquePolicy ?? 'dead_letter';
      return u === 'dead_letter' ? 'dead_letter' : u;
    }
    default:
      return assertNever(c.type);
  }
}
