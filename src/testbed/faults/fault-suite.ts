/**
 * The fault suite: one group of three nodes, a seeded conflicting workload on every node, and one
 * fault after another. Every scenario ends the same way: faults healed, workload stopped, and the
 * nodes compared (items checksum, every writer's ledger rows exactly once, bulk rows); a scenario
 * whose nodes differ fails the run. The slot-invalidation scenario runs last: it breaks a link for
 * good on purpose (resynchronising is `pgbidi join`'s job), so it checks the detection only.
 */
import { seededRandom } from '../convergence-workload.js';
import { FaultCluster } from './fault-cluster.js';
import type { FaultProfile } from './fault-profile.js';
import { FaultWorkload } from './fault-workload.js';
import type { WorkloadTotals } from './fault-workload.js';
import { SCENARIOS } from './scenarios.js';
import type { ScenarioName } from './scenarios.js';
import { errorMessage } from '../../util/error-message.js';

export interface FaultSuiteOptions {
  readonly binDir: string;
  readonly seed: number;
  readonly profile: FaultProfile;
  /** Run only these (in the suite's order); default: all. */
  readonly only?: readonly ScenarioName[];
  /** Called with each result line as soon as a scenario ends. */
  readonly onLine?: (line: string) => void;
  readonly keepLogs?: boolean;
}

export interface ScenarioResult {
  readonly name: ScenarioName;
  /** What was done, in a few words. */
  readonly action: string;
  readonly operations: number;
  readonly errors: number;
  readonly conflicts: number;
  readonly kills: number;
  readonly restarts: number;
  readonly partitions: number;
  /** null: the scenario does not claim convergence (the lost slot), or was skipped. */
  readonly converged: boolean | null;
  readonly skipped: string | null;
  /** Checks of the scenario itself that failed (detection, status, metrics). */
  readonly failures: readonly string[];
  readonly seconds: number;
}

export interface FaultSuiteResult {
  readonly seed: number;
  readonly profile: string;
  readonly serverVersionNum: number;
  readonly scenarios: readonly ScenarioResult[];
  readonly ok: boolean;
  readonly logDir: string;
}

/** What a scenario reports of itself; the suite adds workload, conflicts and convergence. */
export interface ScenarioOutcome {
  readonly action: string;
  readonly kills?: number;
  readonly restarts?: number;
  readonly partitions?: number;
  readonly failures?: readonly string[];
  /** Set by a scenario that cannot run here (e.g. not root). */
  readonly skipped?: string;
  /** The scenario breaks a link on purpose: no convergence check. */
  readonly noConvergence?: boolean;
}

/** What a scenario works with. */
export interface ScenarioContext {
  readonly cluster: FaultCluster;
  readonly profile: FaultProfile;
  readonly random: () => number;
  /** Starts the workload of this scenario on every node (at most once per scenario). */
  readonly startWorkload: () => void;
  /** Stops it early (the suite stops it anyway at the end of the scenario). */
  readonly stopWorkload: () => Promise<void>;
  readonly pick: <T>(items: readonly T[]) => T;
  /** A random duration between min and max ms. */
  readonly between: (minMs: number, maxMs: number) => number;
}

export async function runFaultSuite(options: FaultSuiteOptions): Promise<FaultSuiteResult> {
  const { profile } = options;
  const random = seededRandom(options.seed);
  const cluster = await FaultCluster.start({
    binDir: options.binDir,
    nodes: ['a', 'b', 'c'],
    ...(options.keepLogs ? { keepLogs: true } : {}),
  });
  const results: ScenarioResult[] = [];
  const nextSeq = new Map<string, number>();
  try {
    await cluster.startAll();
    const initial = await cluster.waitConverged(profile.convergeTimeoutMs);
    if (initial !== null) throw new Error(`the nodes differ before any fault: ${initial}`);
    const selected = SCENARIOS.filter((s) => !options.only || options.only.includes(s.name));
    for (const [index, scenario] of selected.entries()) {
      let workload: FaultWorkload | null = null;
      let totals: WorkloadTotals = { operations: 0, errors: 0 };
      const stopWorkload = async (): Promise<void> => {
        if (!workload) return;
        const w = workload;
        workload = null;
        const end = await w.stop();
        totals = end.totals;
        for (const [n, s] of end.nextSeq) nextSeq.set(n, s);
      };
      const ctx: ScenarioContext = {
        cluster,
        profile,
        random,
        startWorkload: () => {
          if (workload) return;
          workload = new FaultWorkload(
            cluster.nodes.map((n) => ({ name: n, dsn: () => cluster.dsn(n) })),
            { seed: options.seed * 100 + index, keys: profile.keys, pauseMs: profile.pauseMs },
            nextSeq,
          );
        },
        stopWorkload,
        pick: <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)] as T,
        between: (min, max) => Math.round(min + random() * (max - min)),
      };
      const started = Date.now();
      const conflictsBefore = await cluster.conflicts();
      let outcome: ScenarioOutcome;
      const failures: string[] = [];
      try {
        outcome = await scenario.run(ctx);
      } catch (err) {
        outcome = { action: 'aborted' };
        failures.push(`scenario failed: ${errorMessage(err)}`);
      }
      await stopWorkload();
      failures.push(...(outcome.failures ?? []));
      // Heal whatever the scenario left: every proxy open, every server and agent up.
      for (const p of cluster.proxies.values()) p.restore();
      for (const n of cluster.nodes) {
        await cluster.local.server(n).startAgain();
        if (!cluster.agent(n).running) await cluster.startAgent(n);
      }
      let converged: boolean | null = null;
      if (!outcome.skipped && !outcome.noConvergence) {
        const difference = await cluster.waitConverged(profile.convergeTimeoutMs);
        converged = difference === null;
        if (difference !== null) failures.push(`diverged: ${difference}; links: ${await cluster.describeLinks()}`);
      }
      for (const [n, a] of cluster.agents) {
        for (const e of a.unexpectedExits.splice(0)) failures.push(`agent ${n} exited unasked (${e})`);
      }
      const result: ScenarioResult = {
        name: scenario.name,
        action: outcome.action,
        operations: totals.operations,
        errors: totals.errors,
        conflicts: (await cluster.conflicts().catch(() => conflictsBefore)) - conflictsBefore,
        kills: outcome.kills ?? 0,
        restarts: outcome.restarts ?? 0,
        partitions: outcome.partitions ?? 0,
        converged,
        skipped: outcome.skipped ?? null,
        failures,
        seconds: Math.round((Date.now() - started) / 1000),
      };
      results.push(result);
      options.onLine?.(formatResult(result));
    }
    const version = await cluster.local.query<{ v: number }>('a', `SELECT current_setting('server_version_num')::int AS v`);
    return {
      seed: options.seed,
      profile: profile.name,
      serverVersionNum: version[0]?.v ?? 0,
      scenarios: results,
      ok: results.every((r) => r.failures.length === 0),
      logDir: cluster.dir,
    };
  } finally {
    await cluster.destroy();
  }
}

/** The line of one scenario: what was done, operations, conflicts, converged or not. */
export function formatResult(r: ScenarioResult): string {
  const verdict = r.skipped !== null ? `SKIPPED (${r.skipped})` : r.failures.length ? 'FAILED' : r.converged === null ? 'ok (detection only)' : 'converged';
  const head = `${r.name.padEnd(24)} ${r.action}; ops ${r.operations} (failed ${r.errors}), conflicts ${r.conflicts}, ${r.seconds} s: ${verdict}`;
  return r.failures.length ? `${head}\n${r.failures.map((f) => `    - ${f}`).join('\n')}` : head;
}

/** The closing line: totals over the run. */
export function formatTotals(result: FaultSuiteResult): string {
  const s = result.scenarios;
  const sum = (f: (r: ScenarioResult) => number): number => s.reduce((a, r) => a + f(r), 0);
  const checked = s.filter((r) => r.converged !== null);
  return (
    `faults: seed ${result.seed}, profile ${result.profile}, PostgreSQL ${result.serverVersionNum}: ${s.length} scenarios ` +
    `(${s.filter((r) => r.skipped !== null).length} skipped), kills ${sum((r) => r.kills)}, restarts ${sum((r) => r.restarts)}, ` +
    `partitions ${sum((r) => r.partitions)}, operations ${sum((r) => r.operations)} (failed ${sum((r) => r.errors)}), ` +
    `conflicts ${sum((r) => r.conflicts)}, converged ${checked.filter((r) => r.converged).length}/${checked.length}: ${result.ok ? 'PASS' : 'FAIL'}`
  );
}
