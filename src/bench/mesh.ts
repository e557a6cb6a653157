/**
 * The 3-node mesh: W2's live load on A; B and C apply it. pgbidi runs all three agents, every node a
 * peer of every other. Native: subscriptions A -> B and A -> C; on 16+ a full origin = none mesh
 * (all six), the closest native equivalent of a multi-master group.
 */
import type { RunRecorder } from './bench-results.js';
import { measureLive } from './live-lag.js';
import { MarkWatcher, MarkWriter } from './mark-probes.js';
import { runPgbench } from './pgbench.js';
import { pgbenchConverged, pgbenchTopology } from './pgbench-topology.js';
import { fullMesh } from './replication.js';
import { withReplication } from './workload-runner.js';
import type { RunContext } from './workload-runner.js';

const NODES = ['a', 'b', 'c'];

export async function runMesh(ctx: RunContext, rec: RunRecorder): Promise<void> {
  const links =
    ctx.side.engine === 'pgbidi' || ctx.major >= 16
      ? fullMesh(NODES)
      : [
          { source: 'a', target: 'b' },
          { source: 'a', target: 'c' },
        ];
  const load = { seconds: ctx.sizes.pgbenchSeconds, clients: 4, threads: 2, rate: ctx.sizes.pgbenchRate };
  await withReplication(ctx, rec, pgbenchTopology(ctx, NODES, links, false), async (repl) => {
    const writer = await MarkWriter.open(repl.server('a'), 0);
    const watchers = [await MarkWatcher.open(repl.server('b'), 0), await MarkWatcher.open(repl.server('c'), 0)] as const;
    try {
      await repl.readyToStart();
      await repl.start();
      await repl.waitStreaming(ctx.timeoutMs);
      const result = await measureLive(
        rec,
        [
          { key: 'b', writer, watcher: watchers[0] },
          { key: 'c', writer, watcher: watchers[1] },
        ],
        ctx.timeoutMs,
        () => runPgbench(repl.server('a'), load, ctx.sizes.pgbenchScale),
      );
      rec.set('sourceTps', result.tps);
      rec.converged(await pgbenchConverged(repl, NODES));
    } finally {
      await Promise.all([writer.close(), ...watchers.map((w) => w.close())]);
    }
  });
}
