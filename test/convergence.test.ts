import { describe, expect, it } from 'vitest';
import { availableServerVersions } from './support/pg-versions.js';
import { useCluster } from './support/cluster-fixture.js';
import { identical } from '../src/testbed/local-cluster.js';
import { CONVERGENCE_SCHEMA, conflictCounts, runConvergenceWorkload } from '../src/testbed/convergence-workload.js';

const NODES = ['a', 'b', 'c'];
const SEED = Number(process.env.PGBIDI_TEST_SEED ?? 20261128);

/** The conflict types a primary-key-only workload of inserts, updates and deletes must produce. */
const EXPECTED_TYPES = ['insert_exists', 'update_origin_differs', 'update_missing', 'update_deleted', 'delete_origin_differs', 'delete_missing'];

describe.each(availableServerVersions())('3-node convergence under conflicts on $label', ({ binDir }) => {
  const cluster = useCluster(() => ({ binDir, nodes: NODES, schema: CONVERGENCE_SCHEMA }));

  it(`converges after concurrent random writes on a small key space (seed ${SEED})`, async () => {
    const c = cluster.get();
    await c.setupAll();
    for (const n of NODES) await c.startAgent(n);
    const result = await runConvergenceWorkload(c, NODES, { seed: SEED, durationMs: 15_000, keys: 20 });
    expect(result.operations).toBeGreaterThan(1000);

    const hashes = await c.waitConverged('public', 'items', 60_000);
    expect(identical(hashes), JSON.stringify(Object.fromEntries(hashes))).toBe(true);

    const seen = new Set<string>();
    const report: Record<string, Record<string, number>> = {};
    for (const n of NODES) {
      report[n] = await conflictCounts(c, n);
      for (const k of Object.keys(report[n] ?? {})) seen.add(k.split('/')[0] as string);
    }
    console.log(JSON.stringify({ seed: SEED, operations: result.operations, errors: result.errors, conflicts: report }));
    for (const type of EXPECTED_TYPES) expect([...seen]).toContain(type);
    // Metrics and the conflict table tell the same story.
    const fromStatus = NODES.map(
      (n) =>
        c.agents
          .get(n)
          ?.status()
          .reduce((s, l) => s + l.conflicts, 0) ?? 0,
    );
    const fromTable = NODES.map((n) => Object.values(report[n] ?? {}).reduce((s, v) => s + v, 0));
    expect(fromStatus).toEqual(fromTable);
  });
});

// PostgreSQL 18's own bidirectional replication (origin = none) on the same workload, for comparison.
const pg18 = availableServerVersions().find((v) => v.label === 'pg18');
describe.runIf(pg18 !== undefined)('native PostgreSQL 18 bidirectional replication on the same workload', () => {
  const cluster = useCluster(() => ({ binDir: (pg18 as { binDir: string }).binDir, nodes: NODES, schema: CONVERGENCE_SCHEMA }));

  it('reports whether native replication converges and what it did with the conflicts', async () => {
    const { setupNativeMesh, nativeConflictStats } = await import('../src/testbed/native-mesh.js');
    const c = cluster.get();
    await setupNativeMesh(c, NODES, 'items');
    const result = await runConvergenceWorkload(c, NODES, { seed: SEED, durationMs: 15_000, keys: 20 });
    const hashes = await c.waitConverged('public', 'items', 20_000);
    const converged = identical(hashes);
    const report = await nativeConflictStats(c, NODES);
    console.log(JSON.stringify({ native: true, seed: SEED, operations: result.operations, converged, ...report }));
    // The numbers are the point of this test; it checks that they were collected on every node.
    expect(Object.keys(report.stats)).toEqual(NODES);
    expect(Object.keys(report.stats.a ?? {})).toContain('confl_insert_exists');
  });
});
