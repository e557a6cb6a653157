/**
 * pg_stat_statements on the applying node: what the applier asked the server to do, per statement
 * and per applied transaction. The bench resets the view right before replication starts and reads
 * it when the fence row is visible, filtered to the role the applier connects as (the bench's own
 * probes connect as DRIVER_ROLE, so they stay out of it).
 *
 * With pg_stat_statements.track = all, statements run inside functions and procedures are counted
 * too (toplevel = false). "statements" counts top-level calls (round trips' worth of statements),
 * "calls" every call including nested ones. A nested statement's time is part of the top-level
 * statement that ran it, but only if that statement finished: pg_stat_statements records a statement
 * when it completes, so a CALL that ends in an error (after committing some of its transactions)
 * is missing while the statements it ran are there. Server time is therefore the larger of the two
 * sums, top-level and nested: the top-level sum when every caller was recorded, a lower bound
 * otherwise.
 *
 * Native logical replication's apply worker calls the executor directly, not through the hooks
 * pg_stat_statements uses, so for native the profile shows only what is visible: normally nothing.
 */
import type pg from 'pg';

export interface StatementRow {
  readonly query: string;
  readonly toplevel: boolean;
  readonly calls: number;
  readonly plans: number;
  readonly execMs: number;
  readonly planMs: number;
}

export interface StatementLine {
  readonly query: string;
  readonly toplevel: boolean;
  readonly calls: number;
  readonly plans: number;
  /** total_exec_time + total_plan_time, in µs. */
  readonly serverUs: number;
}

export interface StatementProfile {
  /** Transactions applied in the profiled interval (the divisor of the per-transaction figures). */
  readonly transactions: number;
  /** Distinct statements seen. */
  readonly distinct: number;
  /** The TOP_STATEMENTS statements with the most server time, most first. */
  readonly top: readonly StatementLine[];
  readonly total: {
    readonly statements: number;
    readonly calls: number;
    readonly plans: number;
    /** max(topLevelUs, nestedUs). */
    readonly serverUs: number;
    readonly topLevelUs: number;
    readonly nestedUs: number;
  };
  readonly perTransaction: { readonly statements: number; readonly calls: number; readonly plans: number; readonly serverUs: number };
}

export const TOP_STATEMENTS = 10;

/** Pure: the profile of `rows` over `transactions` applied transactions. */
export function profileStatements(rows: readonly StatementRow[], transactions: number): StatementProfile {
  const lines = rows.map((r) => ({
    query: r.query.replace(/\s+/g, ' ').trim(),
    toplevel: r.toplevel,
    calls: r.calls,
    plans: r.plans,
    serverUs: serverUs(r),
  }));
  const top = lines.filter((l) => l.toplevel);
  const topLevelUs = top.reduce((s, l) => s + l.serverUs, 0);
  const nestedUs = lines.filter((l) => !l.toplevel).reduce((s, l) => s + l.serverUs, 0);
  const total = {
    statements: top.reduce((s, l) => s + l.calls, 0),
    calls: lines.reduce((s, l) => s + l.calls, 0),
    plans: lines.reduce((s, l) => s + l.plans, 0),
    serverUs: Math.max(topLevelUs, nestedUs),
    topLevelUs,
    nestedUs,
  };
  const per = (n: number): number => (transactions > 0 ? n / transactions : Number.NaN);
  return {
    transactions,
    distinct: lines.length,
    top: [...lines].sort((x, y) => y.serverUs - x.serverUs || y.calls - x.calls).slice(0, TOP_STATEMENTS),
    total,
    perTransaction: { statements: per(total.statements), calls: per(total.calls), plans: per(total.plans), serverUs: per(total.serverUs) },
  };
}

/** Server time (exec + plan, µs) of the statements whose text matches `query`, top-level or nested. */
export function serverUsMatching(rows: readonly StatementRow[], query: RegExp): number {
  return rows.filter((r) => query.test(r.query)).reduce((s, r) => s + serverUs(r), 0);
}

/** A row's server time: execution plus planning, in µs. */
function serverUs(r: StatementRow): number {
  return (r.execMs + r.planMs) * 1000;
}

/** Forgets everything counted so far (all users, all databases). */
export async function resetStatementStats(client: pg.ClientBase): Promise<void> {
  await client.query('SELECT pg_stat_statements_reset()');
}

/** Every statement `role` ran in the client's database since the last reset. */
export async function readStatementStats(client: pg.ClientBase, role: string): Promise<StatementRow[]> {
  const r = await client.query<{ query: string; toplevel: boolean; calls: string; plans: string; exec_ms: number; plan_ms: number }>(
    `SELECT s.query, s.toplevel, s.calls::text AS calls, s.plans::text AS plans,
            s.total_exec_time AS exec_ms, s.total_plan_time AS plan_ms
       FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid
      WHERE r.rolname = $1 AND s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())`,
    [role],
  );
  return r.rows.map((row) => ({
    query: row.query,
    toplevel: row.toplevel,
    calls: Number(row.calls),
    plans: Number(row.plans),
    execMs: row.exec_ms,
    planMs: row.plan_ms,
  }));
}
