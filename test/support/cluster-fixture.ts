import { afterAll, beforeAll } from 'vitest';
import { LocalCluster } from '../../src/testbed/local-cluster.js';
import type { LocalClusterOptions } from '../../src/testbed/local-cluster.js';

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
