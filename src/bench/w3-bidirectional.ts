/**
 * W3 bidirectional (research/baselines.md): the -N transaction on A and on B at once, 2 clients per
 * node, on disjoint accounts (A the lower half, B the upper half; history ids odd on A, even on B),
 * both directions replicating. Native needs origin = none for this (PostgreSQL 16+); on 15 its run
 * is skipped and reported as n/a.
 */
import type { RunRecorder } from './bench-results.js';
import { measureLive } from './live-lag.js';
import { MarkWatcher, MarkWriter } from './mark-probes.js';
import { ACCOUNTS_PER_SCALE, runPgbench } from './pgbench.js';
import { pgbenchConverged, pgbenchTopology } from './pgbench-topology.js';
import { withReplication } from './workload-runner.js';
import type { RunContext } from './workload-runner.js';

const NODES = ['a', 'b'];

export async function runBidirectional(ctx: RunContext, rec: RunRecorder): Promise<void> {
  if (ctx.side.engine === 'native' && ctx.major < 16) {
    rec.skip(`native replication in both directions needs origin = none (PostgreSQL 16+); PostgreSQL ${ctx.major} has none`);
    return;
  }
  const links = [
    { source: 'a', target: 'b' },
    { source: 'b', target: 'a' },
  ];
  const accounts = ctx.sizes.pgbenchScale * ACCOUNTS_PER_SCALE;
  const half = Math.floor(accounts / 2);
  const base = { seconds: ctx.sizes.pgbenchSeconds, clients: 2, threads: 1, rate: ctx.sizes.pgbenchRate };
  await withReplication(ctx, rec, pgbenchTopology(ctx, NODES, links, false), async (repl) => {
    const a = repl.server('a');
    const b = repl.server('b');
    const writers = [await MarkWriter.open(a, 0), await MarkWriter.open(b, 1)] as const;
    const watchers = [await MarkWatcher.open(b, 0), await MarkWatcher.open(a, 1)] as const;
    try {
      await repl.readyToStart();
      await repl.start();
      await repl.waitStreaming(ctx.timeoutMs);
      const directions = [
        { key: 'ab', writer: writers[0], watcher: watchers[0] },
        { key: 'ba', writer: writers[1], watcher: watchers[1] },
      ];
      const [onA, onB] = await measureLive(rec, directions, ctx.timeoutMs, () =>
        Promise.all([
          runPgbench(a, { ...base, aids: { from: 1, to: half } }, ctx.sizes.pgbenchScale),
          runPgbench(b, { ...base, aids: { from: half + 1, to: accounts } }, ctx.sizes.pgbenchScale),
        ]),
      );
      rec.set('a.tps', onA.tps);
      rec.set('b.tps', onB.tps);
      rec.converged(await pgbenchConverged(repl, NODES));
    } finally {
      await Promise.all([...writers, ...watchers].map((p) => p.close()));
    }
  });
}
