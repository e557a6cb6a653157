/** How hard and how long the fault suite pushes: `full` for `npm run faults`, `short` for CI. */
export interface FaultProfile {
  readonly name: 'full' | 'short';
  /** kill -9 of a random agent, this many times in a row. */
  readonly kills: number;
  /** How long a node stays down while the others write. */
  readonly downMs: number;
  /** How long two nodes stay cut from each other. */
  readonly partitionMs: number;
  /** Workload time around each fault. */
  readonly loadMs: number;
  /** Rows of the large transactions that streams while its peer, or the local node, goes away. */
  readonly bulkRows: number;
  /** How long the nodes may stay unchanged and still differ before the scenario counts as diverged. */
  readonly convergeTimeoutMs: number;
  /** Keys of the shared key space (fewer keys: more conflicts). */
  readonly keys: number;
  /** Pause between operations per writer. */
  readonly pauseMs: number;
}

export const PROFILES: Readonly<Record<FaultProfile['name'], FaultProfile>> = {
  full: {
    name: 'full',
    kills: 24,
    downMs: 60_000,
    partitionMs: 30_000,
    loadMs: 5000,
    bulkRows: 200_000,
    convergeTimeoutMs: 120_000,
    keys: 50,
    pauseMs: 40,
  },
  short: {
    name: 'short',
    kills: 5,
    downMs: 10_000,
    partitionMs: 8000,
    loadMs: 1500,
    bulkRows: 40_000,
    convergeTimeoutMs: 90_000,
    keys: 30,
    pauseMs: 20,
  },
};
