import { parseArgs } from 'node:util';
import { debianBinDir, embeddedBinDir } from '../pg-server/postgres-binaries.js';
import { stopAllServers } from '../pg-server/postgres-server.js';
import { CONVERGENCE_SCHEMA, conflictCounts, runConvergenceWorkload } from './convergence-workload.js';
import { identical, LocalCluster } from './local-cluster.js';
import { nativeConflictStats, setupNativeMesh } from './native-mesh.js';
import { errorMessage } from '../util/error-message.js';

/**
 * `npm run soak -- --seed N --minutes M [--pause-ms P]`: the convergence check for as long as you
 * like (P: pause per operation and node; 0 writes as fast as the nodes take it). Prints one JSON
 * summary with how long the agents took to catch up; exits 1 when the nodes did not end identical.
 */
/** How long the agents may take to apply what an unthrottled workload wrote. */
const CATCH_UP_TIMEOUT_MS = 30 * 60_000;

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      seed: { type: 'string', default: '1' },
      minutes: { type: 'string', default: '1' },
      nodes: { type: 'string', default: '3' },
      keys: { type: 'string', default: '20' },
      version: { type: 'string', default: '18' },
      native: { type: 'boolean', default: false },
      'pause-ms': { type: 'string', default: '0' },
    },
  });
  const pauseMs = Number(values['pause-ms']);
  const seed = Number(values.seed);
  const durationMs = Number(values.minutes) * 60_000;
  const nodes = Array.from({ length: Number(values.nodes) }, (_, i) => String.fromCharCode(97 + i));
  const binDir = values.version === '15' ? debianBinDir(15) : embeddedBinDir();
  if (!binDir) throw new Error('PostgreSQL 15 binaries not found at /usr/lib/postgresql/15/bin');
  const keys = Number(values.keys);
  process.stderr.write(`soak: ${nodes.length} nodes on PostgreSQL ${values.version}, seed ${seed}, ${values.minutes} min, ${keys} keys\n`);

  const summary: Record<string, unknown> = { seed, minutes: Number(values.minutes), version: values.version, nodes: nodes.length, keys };
  const cluster = await LocalCluster.start({ binDir, nodes, schema: CONVERGENCE_SCHEMA });
  let converged: boolean;
  try {
    await cluster.setupAll();
    for (const n of nodes) await cluster.startAgent(n);
    const result = await runConvergenceWorkload(cluster, nodes, { seed, durationMs, keys, pauseMs });
    // An unthrottled workload can outrun apply on a small machine: wait until every link has
    // applied everything written before the end, then compare.
    const catchUpMs = await cluster.waitCaughtUp(Date.now(), CATCH_UP_TIMEOUT_MS);
    const hashes = await cluster.waitConverged('public', 'items', 30_000);
    converged = identical(hashes);
    const conflicts: Record<string, Record<string, number>> = {};
    for (const n of nodes) conflicts[n] = await conflictCounts(cluster, n);
    const total = Object.values(conflicts).reduce((s, byType) => s + Object.values(byType).reduce((a, b) => a + b, 0), 0);
    Object.assign(summary, {
      pgbidi: {
        operations: result.operations,
        workloadErrors: result.errors,
        catchUpSeconds: catchUpMs === null ? null : catchUpMs / 1000,
        converged,
        conflictsTotal: total,
        conflicts,
        hashes: Object.fromEntries(hashes),
      },
    });
  } finally {
    await cluster.destroy();
  }

  if (values.native && values.version !== '15') {
    const native = await LocalCluster.start({ binDir, nodes, schema: CONVERGENCE_SCHEMA });
    try {
      await setupNativeMesh(native, nodes, 'items');
      const result = await runConvergenceWorkload(native, nodes, { seed, durationMs, keys });
      const hashes = await native.waitConverged('public', 'items', 30_000);
      const nativeConverged = identical(hashes);
      Object.assign(summary, { native: { operations: result.operations, converged: nativeConverged, ...(await nativeConflictStats(native, nodes)) } });
    } finally {
      await native.destroy();
    }
  }
  process.stdout.write(`${JSON.stringify(summary, null, 2)}\n`);
  return converged ? 0 : 1;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  async (err: unknown) => {
    process.stderr.write(`soak: ${errorMessage(err)}\n`);
    await stopAllServers();
    process.exitCode = 1;
  },
);
