import pg from 'pg';
import type { LocalCluster } from './local-cluster.js';

/**
 * A seeded random workload for convergence checks: every node inserts, updates, deletes and
 * increments counters on one small key space at once, so that every row-level conflict type that
 * primary keys alone can cause happens often. The same seed gives the same per-node sequence of
 * operations (timing still varies).
 */
export const CONVERGENCE_SCHEMA = [`CREATE TABLE items (id int PRIMARY KEY, v text NOT NULL, n bigint NOT NULL DEFAULT 0, written_by text NOT NULL)`];

export interface WorkloadOptions {
  readonly seed: number;
  readonly durationMs: number;
  readonly keys: number;
  /** Pause between operations per node, to leave CPU to the agents on small machines. */
  readonly pauseMs?: number;
}

export interface WorkloadResult {
  readonly operations: number;
  readonly byNode: Record<string, number>;
  readonly errors: number;
}

/** mulberry32: a small, well-distributed 32-bit PRNG. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export async function runConvergenceWorkload(cluster: LocalCluster, nodes: readonly string[], options: WorkloadOptions): Promise<WorkloadResult> {
  const stopAt = Date.now() + options.durationMs;
  const byNode: Record<string, number> = {};
  let errors = 0;
  await Promise.all(
    nodes.map(async (node, index) => {
      const random = seededRandom(options.seed * 1000 + index);
      const client = new pg.Client({ connectionString: cluster.dsn(node), application_name: `workload_${node}` });
      client.on('error', () => undefined);
      await client.connect();
      let ops = 0;
      try {
        while (Date.now() < stopAt) {
          const id = 1 + Math.floor(random() * options.keys);
          const r = random();
          try {
            if (r < 0.3) {
              await client.query(
                `INSERT INTO items (id, v, written_by) VALUES ($1, $2, $3)
                 ON CONFLICT (id) DO UPDATE SET v = EXCLUDED.v, written_by = EXCLUDED.written_by`,
                [id, `${node}:${ops}`, node],
              );
            } else if (r < 0.55) {
              await client.query(`UPDATE items SET v = $2, written_by = $3 WHERE id = $1`, [id, `${node}:${ops}`, node]);
            } else if (r < 0.8) {
              await client.query(`UPDATE items SET n = n + 1, written_by = $2 WHERE id = $1`, [id, node]);
            } else {
              await client.query(`DELETE FROM items WHERE id = $1`, [id]);
            }
          } catch {
            errors++; // e.g. a serialization problem on the hot keys; the run goes on
          }
          ops++;
          if (options.pauseMs) await new Promise((res) => setTimeout(res, options.pauseMs));
        }
      } finally {
        await client.end();
      }
      byNode[node] = ops;
    }),
  );
  return { operations: Object.values(byNode).reduce((a, b) => a + b, 0), byNode, errors };
}

/** Conflicts recorded in pgbidi.conflicts on one node, by type and resolution. */
export async function conflictCounts(cluster: LocalCluster, node: string): Promise<Record<string, number>> {
  const rows = await cluster.query<{ k: string; n: number }>(
    node,
    `SELECT conflict_type || '/' || resolution AS k, count(*)::int AS n FROM pgbidi.conflicts GROUP BY 1 ORDER BY 1`,
  );
  return Object.fromEntries(rows.map((r) => [r.k, r.n]));
}
