import { describe, expect, it } from 'vitest';
import { embeddedBinDir } from '../src/pg-server/postgres-binaries.js';
import { formatResult, formatTotals, runFaultSuite } from '../src/testbed/faults/fault-suite.js';
import { PROFILES } from '../src/testbed/faults/fault-profile.js';
import { SCENARIO_NAMES } from '../src/testbed/faults/scenarios.js';

/**
 * The fault suite's short profile (`npm run faults -- --profile short`): every scenario once, on
 * three PostgreSQL 18 nodes with agent processes (dist/, so `npm run build` first). Fails on any
 * divergence, any change lost or applied twice, and any fault the agent did not report as it must.
 * FAULTS_SEED picks another seed (the failing line names the scenario to rerun with --only).
 */
const seed = Number(process.env['FAULTS_SEED'] ?? 12);

describe('fault suite, short profile, PostgreSQL 18', () => {
  it('ends every scenario with identical nodes, nothing lost or applied twice, each fault reported', async () => {
    const lines: string[] = [];
    const result = await runFaultSuite({
      binDir: embeddedBinDir(),
      seed,
      profile: PROFILES.short,
      onLine: (l) => {
        lines.push(l);
        process.stderr.write(`${l}\n`); // progress in the CI log
      },
    });
    const report = [...lines, formatTotals(result)].join('\n');
    expect(
      result.scenarios.map((s) => s.name),
      report,
    ).toEqual(SCENARIO_NAMES);
    for (const s of result.scenarios) expect(s.failures, formatResult(s)).toEqual([]);
    // Every scenario that claims convergence was checked and converged (disk-full is skipped when not root).
    const checked = result.scenarios.filter((s) => s.skipped === null && s.name !== 'slot-lost');
    expect(
      checked.map((s) => [s.name, s.converged]),
      report,
    ).toEqual(checked.map((s) => [s.name, true]));
    expect(result.scenarios.reduce((n, s) => n + s.kills, 0)).toBe(PROFILES.short.kills);
    expect(result.scenarios.reduce((n, s) => n + s.operations, 0)).toBeGreaterThan(0);
    expect(result.ok, report).toBe(true);
  }, 420_000);
});
