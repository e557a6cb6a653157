import { globToRegExp } from '../util/glob.js';
import { overwriteRule, recreatesMissing } from './policy.js';
import type { Policy, RejectedRowPolicy, UniquePolicy } from './policy.js';

/** The policy of one table: the first `conflicts.tables` entry that matches, else the default. */
export interface TablePolicy {
  readonly policy: Policy;
  readonly deltaColumns: readonly string[];
  readonly unique: UniquePolicy;
  /** A row this node's constraints or column types refuse (apply/rejected-row.ts); default dead_letter. */
  readonly rejected?: RejectedRowPolicy;
}

export interface PolicyConfig {
  readonly default_policy: Policy;
  readonly unique_violation: UniquePolicy;
  readonly rejected_row?: RejectedRowPolicy;
  readonly tables: readonly { readonly match: readonly string[]; readonly policy: Policy; readonly delta_columns: readonly string[] }[];
}

export function tablePolicy(config: PolicyConfig, qualifiedTable: string): TablePolicy {
  for (const t of config.tables) {
    if (t.match.some((p) => globToRegExp(p).test(qualifiedTable))) {
      return { policy: t.policy, deltaColumns: t.delta_columns, unique: config.unique_violation, rejected: config.rejected_row ?? 'dead_letter' };
    }
  }
  return { policy: config.default_policy, deltaColumns: [], unique: config.unique_violation, rejected: config.rejected_row ?? 'dead_letter' };
}

/** The SQL-level rules (apply/statements.ts) that implement a policy. */
export function applyRules(p: TablePolicy): {
  insert: ReturnType<typeof overwriteRule>;
  update: ReturnType<typeof overwriteRule>;
  delete: ReturnType<typeof overwriteRule>;
  recreate: 'unless_deleted_later' | 'always' | 'never';
  deltaColumns: readonly string[];
} {
  const recreate = recreatesMissing(p.policy, true) ? 'always' : recreatesMissing(p.policy, false) ? 'unless_deleted_later' : 'never';
  return {
    insert: overwriteRule(p.policy, 'insert'),
    update: overwriteRule(p.policy, 'update'),
    delete: overwriteRule(p.policy, 'delete'),
    recreate,
    deltaColumns: p.deltaColumns,
  };
}
