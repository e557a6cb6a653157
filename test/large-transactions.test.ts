import { describe, expect, it } from 'vitest';
import type { LocalCluster } from '../src/testbed/local-cluster.js';
import { availableServerVersions } from './support/pg-versions.js';
import { eventually, useCluster } from './support/cluster-fixture.js';

/** Two nodes and one table; transactions above 20 changes take the statement path, in batches of 100. */
function useBatchCluster(binDir: string, table: string): ReturnType<typeof useCluster> {
  return useCluster(() => ({
    binDir,
    nodes: ['a', 'b'],
    schema: [`CREATE TABLE ${table} (id int PRIMARY KEY, v text)`],
    replication: { apply_batch_size: 100, apply_procedure_max_changes: 20 },
  }));
}

/**
 * What b's link from a shows after a transaction was applied again without the fast path: no
 * reconnect, no error, no apply error counted, and the restart counted.
 */
async function restartedQuietly(c: LocalCluster): Promise<void> {
  const agent = c.agents.get('b');
  const link = agent?.status().find((l) => l.peer === 'a');
  expect({ reconnects: link?.reconnects, lastError: link?.lastError }).toEqual({ reconnects: 0, lastError: null });
  const text = await (await fetch(`http://${agent?.httpAddress}/metrics`)).text();
  const samples = (name: string): number[] => [...text.matchAll(new RegExp(`^${name}\\{[^}]*peer="a"[^}]*\\} (\\S+)$`, 'gm'))].map((m) => Number(m[1]));
  expect(samples('pgbidi_transaction_restarts_total')).toEqual([1]);
  expect(samples('pgbidi_apply_errors_total').reduce((x, y) => x + y, 0)).toBe(0);
}

/**
 * Large transactions take the statement path in batches (apply_batch_size), each batch of inserts a
 * plain INSERT while nothing conflicts. A batch after the first that meets an existing row cannot
 * be redone alone: the transaction is applied again from its start, with conflict-aware upserts.
 */
describe.each(availableServerVersions())('large transactions on $label', ({ binDir }) => {
  const cluster = useBatchCluster(binDir, 'big');

  it('applies a 1,000-row transaction whose sixth batch meets an existing row, once, with the row resolved', async () => {
    const c = cluster.get();
    await c.setupAll();
    // b's row is older than a's transaction: a's version wins on both nodes.
    await c.query('b', `INSERT INTO big VALUES (550, 'from b')`);
    await c.query('a', `INSERT INTO big SELECT g, 'from a' FROM generate_series(1, 1000) g`);
    await c.startAgent('a');
    await c.startAgent('b');
    const expected = { rows: 1000 };
    await eventually(
      'both nodes hold a’s 1,000 rows',
      async () => {
        const counts = await Promise.all(
          ['a', 'b'].map(async (n) => (await c.query<{ n: number }>(n, `SELECT count(*)::int AS n FROM big WHERE v = 'from a'`))[0]?.n),
        );
        return counts.every((n) => n === expected.rows);
      },
      60_000,
    );
    const [ha, hb] = await Promise.all([c.tableHash('a', 'public', 'big'), c.tableHash('b', 'public', 'big')]);
    expect(hb).toEqual(ha);
    // The batch with row 550 failed its plain INSERT; the transaction was applied again from its start.
    await restartedQuietly(c);
    const link = c.agents
      .get('b')
      ?.status()
      .find((l) => l.peer === 'a');
    expect(link?.transactionsApplied).toBeGreaterThanOrEqual(1);
    const logged = await c.query<{ t: string }>('b', `SELECT conflict_type || '/' || resolution AS t FROM pgbidi.conflicts WHERE table_name = 'big'`);
    expect(logged).toEqual([{ t: 'insert_exists/apply_remote' }]);
    const onA = await c.query<{ t: string }>('a', `SELECT conflict_type || '/' || resolution AS t FROM pgbidi.conflicts WHERE table_name = 'big'`);
    expect(onA).toEqual([{ t: 'insert_exists/keep_local' }]);
  });
});

/**
 * Transactions of one batch each, every one a plain INSERT: each is sent ahead of its answers, its
 * COMMIT and the next transaction behind it. When one meets an existing row, its COMMIT finds it
 * aborted, nothing behind it commits, and the link applies it again from the origin's progress.
 */
describe.each(availableServerVersions())('transactions sent ahead of their answers on $label', ({ binDir }) => {
  const cluster = useBatchCluster(binDir, 'ahead');

  it('applies three one-batch transactions, the second meeting an existing row, each once and in order', async () => {
    const c = cluster.get();
    await c.setupAll();
    await c.startAgent('a');
    await c.startAgent('b');
    // b's link knows the table (a batch is built ahead only for a table it has mapped).
    await c.query('a', `INSERT INTO ahead SELECT g, 'warm' FROM generate_series(1001, 1060) g`);
    await eventually('b holds the first rows', async () => (await c.query<{ n: number }>('b', `SELECT count(*)::int AS n FROM ahead`))[0]?.n === 60);
    // b's row stays away from a for now, and is older than a's transaction: a's version wins.
    await c.stopAgent('a');
    await c.query('b', `INSERT INTO ahead VALUES (130, 'from b')`);
    for (const first of [1, 101, 201]) {
      await c.query('a', `INSERT INTO ahead SELECT g, 'from a' FROM generate_series(${first}, ${first + 59}) g`);
    }
    await c.startAgent('a');
    await eventually(
      'both nodes hold a’s 180 rows',
      async () => {
        const counts = await Promise.all(
          ['a', 'b'].map(async (n) => (await c.query<{ n: number }>(n, `SELECT count(*)::int AS n FROM ahead WHERE v = 'from a'`))[0]?.n),
        );
        return counts.every((n) => n === 180);
      },
      60_000,
    );
    await c.waitConverged('public', 'ahead');
    // The transaction with row 130 failed its plain INSERT after it was sent ahead: applied again.
    await restartedQuietly(c);
    // Each remote transaction committed once and alone (a later one committed ahead of a failed one
    // would have moved the origin past it, and its rows would be missing above): three local
    // transactions on b, each with its remote commit time.
    const commits = await c.query<{ first: number }>(
      'b',
      `SELECT min(id) AS first FROM ahead WHERE v = 'from a' GROUP BY xmin ORDER BY min(pg_xact_commit_timestamp(xmin))`,
    );
    expect(commits.map((r) => r.first)).toEqual([1, 101, 201]);
    const logged = await c.query<{ t: string }>('b', `SELECT conflict_type || '/' || resolution AS t FROM pgbidi.conflicts WHERE table_name = 'ahead'`);
    expect(logged).toEqual([{ t: 'insert_exists/apply_remote' }]);
  });
});

/**
 * A table with a tombstone (a recent delete) closes the plain INSERT to every transaction (the
 * gate's PB001), most often to one whose batches were sent ahead: it is applied again, row-checked,
 * as an expected restart that neither fails the link nor counts as a reconnect.
 */
describe.each(availableServerVersions())('a large transaction into a table with a tombstone on $label', ({ binDir }) => {
  const cluster = useBatchCluster(binDir, 'tomb');

  it('applies it once, all rows, after one quiet restart, and the next one without a restart', async () => {
    const c = cluster.get();
    await c.setupAll();
    await c.startAgent('a');
    await c.startAgent('b');
    await c.query('a', `INSERT INTO tomb VALUES (5000, 'gone soon')`);
    await eventually('b holds the row', async () => (await c.query<{ n: number }>('b', `SELECT count(*)::int AS n FROM tomb`))[0]?.n === 1);
    await c.query('a', `DELETE FROM tomb WHERE id = 5000`);
    await eventually(
      'b holds its tombstone',
      async () => (await c.query<{ n: number }>('b', `SELECT count(*)::int AS n FROM pgbidi.tombstones WHERE table_name = 'public.tomb'`))[0]?.n === 1,
    );
    await c.query('a', `INSERT INTO tomb SELECT g, 'from a' FROM generate_series(1, 1000) g`);
    await eventually('b holds a’s 1,000 rows', async () => (await c.query<{ n: number }>('b', `SELECT count(*)::int AS n FROM tomb`))[0]?.n === 1000, 60_000);
    // The next one into that table, right after, takes the row-checked path at once (the table's
    // fast path is paused across the restart's new connection): no second restart.
    await c.query('a', `INSERT INTO tomb SELECT g, 'from a' FROM generate_series(1001, 2000) g`);
    await eventually('b holds a’s 2,000 rows', async () => (await c.query<{ n: number }>('b', `SELECT count(*)::int AS n FROM tomb`))[0]?.n === 2000, 60_000);
    await c.waitConverged('public', 'tomb');
    const commits = await c.query<{ n: number }>('b', `SELECT count(DISTINCT xmin::text)::int AS n FROM tomb`);
    expect(commits).toEqual([{ n: 2 }]);
    await restartedQuietly(c);
  });
});
