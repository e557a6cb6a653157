import type pg from 'pg';
import { describe, expect, it } from 'vitest';
import { metadataSchemaSql, tombstoneTriggerSql } from '../../src/node/metadata-schema.js';
import { TOMBSTONE_WRITE_LOCK } from '../../src/node/names.js';
import { availableServerVersions } from '../support/pg-versions.js';
import { useServer } from '../support/server-fixture.js';

/**
 * The mark every tombstone writer leaves (metadata-schema.ts): TOMBSTONE_WRITE_LOCK held shared
 * until its transaction ends, and the sequence advanced, whoever writes: a local delete through
 * record_tombstone, an apply session (session_replication_role = replica) writing its own, a join.
 * The apply procedure trusts its remembered inserts on this alone (apply-procedure-sql.ts).
 */
describe.each(availableServerVersions())('tombstone-write mark on $label', ({ binDir }) => {
  let writer: pg.Client;
  let observer: pg.Client;
  useServer(
    () => ({ binDir, name: 'tombstone-writes' }),
    async (db) => {
      writer = db.client;
      observer = await db.connect();
      // Twice: setup runs again on a node set up before, and the trigger stays ENABLE ALWAYS.
      for (let n = 0; n < 2; n++) for (const q of metadataSchemaSql('b')) await writer.query(q);
      await writer.query('CREATE TABLE public.t (id int PRIMARY KEY)');
      for (const q of tombstoneTriggerSql('public.t', ['id'])) await writer.query(q);
    },
  );

  const writes = async (): Promise<number> =>
    Number((await observer.query<{ n: string | null }>(`SELECT pg_sequence_last_value('pgbidi.tombstone_writes') AS n`)).rows[0]?.n ?? 0);
  const lockFree = async (): Promise<boolean> => {
    const r = await observer.query<{ free: boolean }>(`SELECT pg_try_advisory_lock(${TOMBSTONE_WRITE_LOCK}::int8) AS free`);
    if (r.rows[0]?.free) await observer.query(`SELECT pg_advisory_unlock(${TOMBSTONE_WRITE_LOCK}::int8)`);
    return r.rows[0]?.free === true;
  };

  /** Runs `write` in an open transaction of the writer: the lock is held until it ends, the sequence moved before. */
  async function marks(write: () => Promise<unknown>): Promise<void> {
    const before = await writes();
    expect(await lockFree()).toBe(true);
    await writer.query('BEGIN');
    await write();
    expect(await writes()).toBeGreaterThan(before);
    expect(await lockFree()).toBe(false);
    await writer.query('COMMIT');
    expect(await lockFree()).toBe(true);
  }

  it('marks a local delete (record_tombstone)', async () => {
    await writer.query('INSERT INTO public.t VALUES (1), (2)');
    await marks(() => writer.query('DELETE FROM public.t WHERE id = 1'));
    expect((await observer.query('SELECT key FROM pgbidi.tombstones')).rows).toEqual([{ key: [1] }]);
  });

  it("marks an apply session's own tombstone (session_replication_role = replica: only ALWAYS triggers fire)", async () => {
    await writer.query('SET session_replication_role = replica');
    try {
      await marks(() => writer.query(`INSERT INTO pgbidi.tombstones (table_name, key) VALUES ('public.t', '[5]')`));
      await marks(() =>
        writer.query(
          `INSERT INTO pgbidi.tombstones (table_name, key) VALUES ('public.t', '[5]') ON CONFLICT (table_name, key) DO UPDATE SET deleted_at = now()`,
        ),
      );
    } finally {
      await writer.query('SET session_replication_role = origin');
    }
  });

  it("marks a join's copy (snapshot-copy.ts: COPY into a staging table, then INSERT … SELECT)", async () => {
    await marks(async () => {
      await writer.query(`CREATE TEMP TABLE stage AS SELECT 'public.t'::text AS table_name, '[9]'::jsonb AS key, now() AS deleted_at`);
      await writer.query(`INSERT INTO pgbidi.tombstones SELECT * FROM stage`);
    });
  });
});
