import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { agentClient, agentConfig } from '../../src/util/agent-client.js';
import { availableServerVersions } from '../support/pg-versions.js';
import { useServer } from '../support/server-fixture.js';

/**
 * A DSN may carry its own options and application_name. node-postgres lets them win over the fields
 * given beside the connection string: `?options=-c search_path=public` replaced every pinned setting
 * of pgbidi's sessions, and `?application_name=…` renamed them (a synchronous link's peer waits for
 * its walsender by that name). The DSN's other options stay.
 */
describe.each(availableServerVersions())('sessions opened from a DSN with options on $label', ({ binDir }) => {
  const db = useServer(() => ({ binDir, name: 'agent-client' }));
  const settings = `SELECT current_setting('search_path') AS search_path, current_setting('default_transaction_read_only') AS read_only,
                           current_setting('work_mem') AS work_mem, current_setting('application_name') AS application_name`;
  const dsn = (): string =>
    `${db.server.connectionString()}?application_name=theirs&options=${encodeURIComponent('-c search_path=public -c default_transaction_read_only=on -c work_mem=7MB')}`;

  it('keeps the pinned settings and pgbidi’s application_name, and the DSN’s other options', async () => {
    const client = agentClient({ connectionString: dsn(), application_name: 'pgbidi_test' });
    await client.connect();
    try {
      const r = await client.query(settings);
      expect(r.rows).toEqual([{ search_path: 'pg_catalog', read_only: 'off', work_mem: '7MB', application_name: 'pgbidi_test' }]);
    } finally {
      await client.end();
    }
  });

  it('does the same for a pool (the metrics’ reads) and a walsender connection', async () => {
    const pool = new pg.Pool({ ...agentConfig({ connectionString: dsn(), application_name: 'pgbidi_pool' }), max: 1 });
    try {
      const r = await pool.query(settings);
      expect(r.rows).toEqual([{ search_path: 'pg_catalog', read_only: 'off', work_mem: '7MB', application_name: 'pgbidi_pool' }]);
    } finally {
      await pool.end();
    }
    const walsender = agentClient({ connectionString: dsn(), application_name: 'pgbidi_walsender', replication: 'database' });
    await walsender.connect();
    try {
      const seen = await db.server.query<{ application_name: string }>(`SELECT application_name FROM pg_stat_activity WHERE backend_type = 'walsender'`);
      expect(seen).toEqual([{ application_name: 'pgbidi_walsender' }]);
    } finally {
      await walsender.end();
    }
  });

  it('keeps the options when the DSN has none', async () => {
    const client = agentClient({ connectionString: db.server.connectionString(), application_name: 'pgbidi_plain' });
    await client.connect();
    try {
      const r = await client.query(settings);
      expect(r.rows[0]).toMatchObject({ search_path: 'pg_catalog', read_only: 'off', application_name: 'pgbidi_plain' });
    } finally {
      await client.end();
    }
  });
});
