import { describe, expect, it } from 'vitest';
import { CONFLICT_TYPES } from '../../src/conflict/conflict-types.js';
import type { ConflictType, Resolution } from '../../src/conflict/conflict-types.js';
import { compareVersions, POLICIES, resolveConflict } from '../../src/conflict/policy.js';
import type { Policy, Version } from '../../src/conflict/policy.js';
import { applyRules, tablePolicy } from '../../src/conflict/table-policies.js';

const older: Version = { ts: 1_000n, node: 'b' };
const newer: Version = { ts: 2_000n, node: 'a' };
const remote: Version = { ts: 1_500n, node: 'c' };

/**
 * The whole decision table: for each conflict type and policy, the resolution when the local version
 * is older than the remote change, newer, or (for the *_missing types) absent.
 */
const TABLE: Record<ConflictType, Record<Policy, [localOlder: Resolution, localNewer: Resolution]>> = {
  insert_exists: {
    last_update_wins: ['apply_remote', 'keep_local'],
    first_update_wins: ['keep_local', 'apply_remote'],
    apply_remote: ['apply_remote', 'apply_remote'],
    keep_local: ['keep_local', 'keep_local'],
    skip: ['skip', 'skip'],
    error: ['error', 'error'],
    delta: ['apply_remote', 'keep_local'],
  },
  update_origin_differs: {
    last_update_wins: ['apply_remote', 'keep_local'],
    first_update_wins: ['apply_remote', 'keep_local'],
    apply_remote: ['apply_remote', 'apply_remote'],
    keep_local: ['keep_local', 'keep_local'],
    skip: ['skip', 'skip'],
    error: ['error', 'error'],
    delta: ['apply_remote', 'apply_remote'],
  },
  delete_origin_differs: {
    last_update_wins: ['apply_remote', 'keep_local'],
    first_update_wins: ['apply_remote', 'keep_local'],
    apply_remote: ['apply_remote', 'apply_remote'],
    keep_local: ['keep_local', 'keep_local'],
    skip: ['skip', 'skip'],
    error: ['error', 'error'],
    delta: ['apply_remote', 'keep_local'],
  },
  update_missing: {
    last_update_wins: ['apply_remote', 'apply_remote'],
    first_update_wins: ['apply_remote', 'apply_remote'],
    apply_remote: ['apply_remote', 'apply_remote'],
    keep_local: ['skip', 'skip'],
    skip: ['skip', 'skip'],
    error: ['error', 'error'],
    delta: ['apply_remote', 'apply_remote'],
  },
  update_deleted: {
    last_update_wins: ['skip', 'skip'],
    first_update_wins: ['skip', 'skip'],
    apply_remote: ['apply_remote', 'apply_remote'],
    keep_local: ['skip', 'skip'],
    skip: ['skip', 'skip'],
    error: ['error', 'error'],
    delta: ['skip', 'skip'],
  },
  delete_missing: Object.fromEntries(POLICIES.map((p) => [p, ['skip', 'skip']])) as Record<Policy, [Resolution, Resolution]>,
  update_exists: Object.fromEntries(POLICIES.map((p) => [p, ['dead_letter', 'dead_letter']])) as Record<Policy, [Resolution, Resolution]>,
  multiple_unique_conflicts: Object.fromEntries(POLICIES.map((p) => [p, ['dead_letter', 'dead_letter']])) as Record<Policy, [Resolution, Resolution]>,
};

describe('conflict resolution (pure)', () => {
  const cases = CONFLICT_TYPES.flatMap((type) => POLICIES.map((policy) => ({ type, policy })));
  it.each(cases)('$type under $policy', ({ type, policy }) => {
    const [whenOlder, whenNewer] = TABLE[type][policy];
    expect(resolveConflict({ type, policy, local: older, remote })).toBe(whenOlder);
    expect(resolveConflict({ type, policy, local: newer, remote })).toBe(whenNewer);
  });

  it('applies the unique-violation policy to update_exists and multiple_unique_conflicts', () => {
    for (const type of ['update_exists', 'multiple_unique_conflicts'] as const) {
      expect(resolveConflict({ type, policy: 'last_update_wins', local: null, remote, uniquePolicy: 'skip' })).toBe('skip');
      expect(resolveConflict({ type, policy: 'last_update_wins', local: null, remote, uniquePolicy: 'error' })).toBe('error');
    }
  });

  it('orders versions by time, then node name bytewise, the same on every node', () => {
    expect(compareVersions({ ts: 5n, node: 'a' }, { ts: 5n, node: 'b' })).toBe(-1);
    expect(compareVersions({ ts: 5n, node: 'b' }, { ts: 5n, node: 'a' })).toBe(1);
    expect(compareVersions({ ts: 6n, node: 'a' }, { ts: 5n, node: 'z' })).toBe(1);
    expect(compareVersions({ ts: 5n, node: 'a' }, { ts: 5n, node: 'a' })).toBe(0);
    // Tie between two concurrent writes: exactly one side wins, on both nodes.
    const x = { ts: 7n, node: 'a' };
    const y = { ts: 7n, node: 'b' };
    expect(resolveConflict({ type: 'insert_exists', policy: 'last_update_wins', local: x, remote: y })).toBe('apply_remote');
    expect(resolveConflict({ type: 'insert_exists', policy: 'last_update_wins', local: y, remote: x })).toBe('keep_local');
  });

  it('picks a table policy by the first matching pattern and derives the SQL rules from it', () => {
    const config = {
      default_policy: 'last_update_wins' as const,
      unique_violation: 'dead_letter' as const,
      tables: [
        { match: ['public.acc*'], policy: 'delta' as const, delta_columns: ['balance'] },
        { match: ['public.*'], policy: 'first_update_wins' as const, delta_columns: [] },
      ],
    };
    expect(tablePolicy(config, 'public.accounts')).toEqual({ policy: 'delta', deltaColumns: ['balance'], unique: 'dead_letter', rejected: 'dead_letter' });
    expect(tablePolicy(config, 'public.users').policy).toBe('first_update_wins');
    expect(tablePolicy(config, 'other.t').policy).toBe('last_update_wins');
    expect(applyRules(tablePolicy(config, 'public.users'))).toEqual({
      insert: 'remote_older',
      update: 'remote_newer',
      delete: 'remote_newer',
      recreate: 'unless_deleted_later',
      deltaColumns: [],
    });
    expect(applyRules({ policy: 'apply_remote', deltaColumns: [], unique: 'skip' }).recreate).toBe('always');
    expect(applyRules({ policy: 'keep_local', deltaColumns: [], unique: 'skip' })).toMatchObject({ update: 'same_origin', recreate: 'never' });
  });
});
