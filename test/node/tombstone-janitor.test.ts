import type pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { metadataSchemaSql, tombstoneTriggerSql } from '../../src/node/metadata-schema.js';
import { JANITOR_LOCK_TIMEOUT_MS, TombstoneJanitor } from '../../src/node/tombstone-janitor.js';
import type { TombstoneStatus } from '../../src/node/tombstone-janitor.js';
import { createLogger } from '../../src/observability/logger.js';
import { unixMsToPgMicros } from '../../src/protocol/pg-time.js';
import { settlesWithin } from '../../src/util/settles-within.js';
import { availableServerVersions } from '../support/pg-versions.js';
import { useServer } from '../support/server-fixture.js';

/** Far more than the janitor may wait; reaching it means the sweep was waiting for the lock. */
const STUCK_MS = 15_000;

/** The sweep, failed when it is still running after STUCK_MS (it was waiting for a lock). */
async function sweepWithin(janitor: TombstoneJanitor, ms: number): Promise<TombstoneStatus> {
  const sweep = janitor.sweep();
  if (!(await settlesWithin(sweep, ms))) throw new Error(`the sweep was still running after ${ms} ms`);
  return sweep;
}

/**
 * The janitor's sweep against rows that other sessions hold: it never waits for them (tombstones and
 * kept row versions are purged skipping locked rows, the conflict log's retention gives up after
 * JANITOR_LOCK_TIMEOUT_MS), so neither the agent's stop nor the apply transactions that write the
 * tombstones it reached wait behind an idle-in-transaction session.
 */
describe.each(availableServerVersions())('tombstone janitor on $label', ({ binDir }) => {
  let admin: pg.Client;
  let holder: pg.Client;
  let janitor: TombstoneJanitor | null = null;
  const db = useServer(
    () => ({ binDir, name: 'tombstone-janitor' }),
    async (f) => {
      admin = f.client;
      holder = await f.connect();
      for (const q of metadataSchemaSql('b')) await admin.query(q);
      await admin.query('CREATE TABLE public.t (id int PRIMARY KEY)');
      for (const q of tombstoneTriggerSql('public.t', ['id'])) await admin.query(q);
    },
  );

  afterEach(async () => {
    await holder.query('ROLLBACK').catch(() => undefined);
    await janitor?.stop();
    janitor = null;
  });

  /** Every link has applied a peer transaction an hour from now: every tombstone is past the cutoff. */
  function start(): TombstoneJanitor {
    const later = unixMsToPgMicros(Date.now() + 3_600_000);
    janitor = new TombstoneJanitor(
      db.server.connectionString(),
      () => [later],
      0,
      createLogger('silent'),
      () => undefined,
    );
    return janitor;
  }

  const tombstoneKeys = async (): Promise<unknown[]> =>
    (await admin.query<{ key: unknown }>(`SELECT key FROM pgbidi.tombstones ORDER BY key::text`)).rows.map((r) => r.key);

  it('purges the tombstones nobody holds at once and the held one at the next sweep after its writer commits', async () => {
    await admin.query('TRUNCATE pgbidi.tombstones');
    await admin.query('INSERT INTO public.t VALUES (1), (2), (3)');
    await admin.query('DELETE FROM public.t');
    await admin.query('INSERT INTO public.t VALUES (2)');
    // A local delete of key 2 again, left open: its trigger upserted the tombstone, whose row it now holds.
    await holder.query('BEGIN');
    await holder.query('DELETE FROM public.t WHERE id = 2');
    expect(await tombstoneKeys()).toEqual([[1], [2], [3]]);

    const j = start();
    const first = await sweepWithin(j, STUCK_MS);
    expect(first.purgedTotal).toBe(2);
    expect(await tombstoneKeys()).toEqual([[2]]);

    await holder.query('COMMIT');
    const second = await sweepWithin(j, STUCK_MS);
    expect(second.purgedTotal).toBe(3);
    expect(second.count).toBe(0);
    expect(await tombstoneKeys()).toEqual([]);
  });

  it("gives up on the conflict log's retention after its lock timeout, and purges once the lock is gone", async () => {
    const old = await admin.query<{ id: string }>(
      `INSERT INTO pgbidi.conflicts (logged_at, peer, conflict_type, resolution, table_schema, table_name, key)
       VALUES (now() - interval '30 days', 'a', 'insert_exists', 'apply_remote', 'public', 't', '[1]') RETURNING id`,
    );
    const id = old.rows[0]?.id;
    await holder.query('BEGIN');
    await holder.query('SELECT 1 FROM pgbidi.conflicts WHERE id = $1 FOR UPDATE', [id]);

    const j = start();
    const started = Date.now();
    await sweepWithin(j, STUCK_MS);
    // It waited for the lock (the DELETE reached the held row), then gave up.
    expect(Date.now() - started).toBeGreaterThanOrEqual(JANITOR_LOCK_TIMEOUT_MS - 100);
    expect((await admin.query('SELECT 1 FROM pgbidi.conflicts WHERE id = $1', [id])).rowCount).toBe(1);

    await holder.query('COMMIT');
    await sweepWithin(j, STUCK_MS);
    expect((await admin.query('SELECT 1 FROM pgbidi.conflicts WHERE id = $1', [id])).rowCount).toBe(0);
  });
});
