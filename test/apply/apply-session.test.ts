import { afterAll, describe, expect, it } from 'vitest';
import { ApplySession } from '../../src/apply/apply-session.js';
import { formatLsn } from '../../src/protocol/lsn.js';
import { availableServerVersions } from '../support/pg-versions.js';
import { useServer } from '../support/server-fixture.js';

/**
 * The apply session's setup is sent pipelined and read in order: every setting holds, the origin's
 * progress comes back, and a session that cannot take the origin (another one holds it) fails with
 * that error, not with a later statement's, and leaves the holder working.
 */
describe.each(availableServerVersions())('apply session setup on $label', ({ binDir }) => {
  const db = useServer(
    () => ({ binDir, name: 'apply-session' }),
    async ({ client }) => {
      await client.query(`SELECT pg_replication_origin_create('pgbidi_session_test')`);
      await client.query(`SELECT pg_replication_origin_advance('pgbidi_session_test', '0/1A2B3C4')`);
      // Limits a DBA may give application sessions: the apply session lifts them for itself.
      for (const name of ['lock_timeout', 'idle_in_transaction_session_timeout', 'idle_session_timeout', 'transaction_timeout']) {
        const known = await client.query(`SELECT 1 FROM pg_settings WHERE name = $1`, [name]);
        if (known.rowCount) await client.query(`ALTER ROLE CURRENT_USER SET ${name} = '5min'`);
      }
    },
  );
  const sessions: ApplySession[] = [];
  const open = (synchronousCommit: 'off' | 'local' = 'off'): ApplySession => {
    const s = new ApplySession({
      dsn: db.server.connectionString(),
      origin: 'pgbidi_session_test',
      applicationName: 'pgbidi_session_test',
      statementTimeoutMs: 12_345,
      synchronousCommit,
    });
    sessions.push(s);
    return s;
  };

  afterAll(async () => {
    for (const s of sessions) await s.close().catch(() => undefined);
  });

  it('applies every setting, returns the origin progress, and refuses a second holder of the origin', async () => {
    const first = open();
    const progress = await first.connect(() => undefined);
    expect(formatLsn(progress)).toBe('0/1A2B3C4');
    const r = await first.pg.query<Record<string, string>>(
      `SELECT current_setting('session_replication_role') AS role, current_setting('synchronous_commit') AS sync,
              current_setting('default_transaction_isolation') AS iso, current_setting('statement_timeout') AS timeout,
              current_setting('plan_cache_mode') AS plans, pg_replication_origin_session_is_setup()::text AS origin,
              current_setting('lock_timeout') AS lock, current_setting('idle_in_transaction_session_timeout') AS idle_in_transaction, current_setting('idle_session_timeout') AS idle,
              coalesce(current_setting('transaction_timeout', true), 'none before 17') AS transaction`,
    );
    expect(r.rows[0]).toEqual({
      role: 'replica',
      sync: 'off',
      iso: 'read committed',
      timeout: '12345ms',
      plans: 'force_generic_plan',
      origin: 'true',
      lock: '0',
      idle_in_transaction: '0',
      idle: '0',
      transaction: db.server.versionNum >= 170_000 ? '0' : 'none before 17',
    });

    const second = open('local');
    const err = await second
      .connect(() => undefined)
      .then(
        () => null,
        (e: unknown) => e as { code?: string; message?: string },
      );
    expect(err?.code).toBe('55006');
    expect(err?.message).toMatch(/already active/);
    const still = await first.pg.query<{ ok: string }>(`SELECT pg_replication_origin_session_is_setup()::text AS ok`);
    expect(still.rows[0]?.ok).toBe('true');
  });
});
