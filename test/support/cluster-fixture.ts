import { afterAll, beforeAll, describe } from 'vitest';
import { LocalCluster } from '../../src/testbed/local-cluster.js';
import type { LocalClusterOptions } from '../../src/testbed/local-cluster.js';
import { availableServerVersions } from './pg-versions.js';

/** Starts a cluster before the tests of a describe block and always destroys it afterwards. */
export function useCluster(options: () => LocalClusterOptions): { get: () => LocalCluster } {
  let cluster: LocalCluster | undefined;
  beforeAll(async () => {
    cluster = await LocalCluster.start(options());
  });
  afterAll(async () => {
    await cluster?.destroy();
  });
  return {
    get: () => {
      if (!cluster) throw new Error('cluster not started');
      return cluster;
    },
  };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls until `check` returns true, failing with `what` after the timeout. */
export async function eventually(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

/**
 * A row written into `marker` on each of a and b, seen on both: each direction has applied everything
 * committed before it.
 */
export async function caughtUp(c: LocalCluster): Promise<void> {
  const id = Math.floor(Math.random() * 1e9);
  await c.query('a', 'INSERT INTO marker VALUES ($1)', [id]);
  await c.query('b', 'INSERT INTO marker VALUES ($1)', [id + 1]);
  await eventually('markers replicated', async () => {
    const [x] = await c.query<{ n: number }>('a', 'SELECT count(*)::int AS n FROM marker WHERE id IN ($1, $2)', [id, id + 1]);
    const [y] = await c.query<{ n: number }>('b', 'SELECT count(*)::int AS n FROM marker WHERE id IN ($1, $2)', [id, id + 1]);
    return x?.n === 2 && y?.n === 2;
  });
}

/**
 * Both apply paths, which must decide alike: the apply procedure (small transactions, the default)
 * and the multi-row statements (apply_procedure_max_changes: 0).
 */
export const APPLY_PATHS = [
  { path: 'apply procedure', apply_procedure_max_changes: 100 },
  { path: 'statements', apply_procedure_max_changes: 0 },
] as const;

/** Every server version here with each apply path, for describe.each. */
export function versionsAndApplyPaths(): (ReturnType<typeof availableServerVersions>[number] & (typeof APPLY_PATHS)[number])[] {
  return availableServerVersions().flatMap((v) => APPLY_PATHS.map((p) => ({ ...v, ...p })));
}

/**
 * One describe block per server version and apply path, each with its own two-node cluster (a and b)
 * made from `schema` and the `marker` table that caughtUp writes to.
 */
export function describeOnEveryPath(title: string, schema: readonly string[], tests: (cluster: { get: () => LocalCluster }) => void): void {
  describe.each(versionsAndApplyPaths())(`${title} on $label through the $path`, ({ binDir, apply_procedure_max_changes }) => {
    tests(
      useCluster(() => ({
        binDir,
        nodes: ['a', 'b'],
        replication: { apply_procedure_max_changes },
        schema: ['CREATE TABLE marker (id int PRIMARY KEY)', ...schema],
      })),
    );
  });
}

/**
 * A schema statement that sets `name = value` (SQL, as ALTER DATABASE takes it) for the database it
 * runs in: for the sessions that start afterwards, the agent's among them, as a DBA would.
 */
export function databaseSetting(name: string, value: string): string {
  return `DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET ${name} = ${value.replace(/'/g, "''")}', current_database()); END $$`;
}
