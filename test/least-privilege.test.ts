import { describe, expect, it } from 'vitest';
import { Agent } from '../src/agent.js';
import { parseConfig } from '../src/config/load-config.js';
import { setupNode } from '../src/node/setup-node.js';
import { createLogger } from '../src/observability/logger.js';
import { eventually, useCluster } from './support/cluster-fixture.js';
import { availableServerVersions } from './support/pg-versions.js';

/**
 * The README's privileges, end to end: `setup` as the owner of the tables (no superuser), the agent
 * as the `pgbidi` role with exactly the README's GRANTs, replicating and resolving conflicts both ways.
 */
const OWNER_SQL = [
  'CREATE ROLE app_owner LOGIN REPLICATION',
  'GRANT CREATE ON DATABASE app TO app_owner',
  'GRANT CREATE ON SCHEMA public TO app_owner',
  // setup creates one replication origin per peer (superuser-only unless granted).
  'GRANT EXECUTE ON FUNCTION pg_replication_origin_create(text) TO app_owner',
  'CREATE ROLE pgbidi LOGIN REPLICATION',
];
const TABLE_SQL = 'CREATE TABLE public.kv (id int PRIMARY KEY, v text)';
/** A table with row-level security whose policies hide rows from roles without BYPASSRLS (as pgbidi). */
const GUARDED_SQL = [
  'CREATE TABLE public.guarded (id int PRIMARY KEY, v text)',
  'ALTER TABLE public.guarded ENABLE ROW LEVEL SECURITY',
  'CREATE POLICY may_insert ON public.guarded FOR INSERT WITH CHECK (true)',
  `CREATE POLICY sees ON public.guarded FOR SELECT USING (v IS DISTINCT FROM 'secret')`,
  `CREATE POLICY may_update ON public.guarded FOR UPDATE USING (v IS DISTINCT FROM 'secret') WITH CHECK (true)`,
];
/** The README's GRANTs for the agent, run by the owner after setup. */
const AGENT_GRANTS = [
  'GRANT USAGE ON SCHEMA pgbidi, public TO pgbidi',
  'GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA public TO pgbidi',
  'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA pgbidi TO pgbidi',
  'GRANT USAGE ON ALL SEQUENCES IN SCHEMA pgbidi TO pgbidi',
  'GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA pgbidi TO pgbidi',
];
/** The README's GRANTs that only a superuser can give (on functions and parameters of the catalog). */
const SUPERUSER_GRANTS = [
  `GRANT EXECUTE ON FUNCTION pg_replication_origin_session_setup(text), pg_replication_origin_xact_setup(pg_lsn, timestamptz),
     pg_replication_origin_progress(text, boolean), pg_replication_origin_session_progress(boolean),
     pg_replication_origin_session_reset() TO pgbidi`,
  'GRANT SET ON PARAMETER session_replication_role TO pgbidi',
];

describe.each(availableServerVersions())('least privilege ($label)', ({ binDir }) => {
  const cluster = useCluster(() => ({ binDir, nodes: ['a', 'b'], schema: OWNER_SQL }));

  it('sets up as the table owner and runs the agent as a role without superuser', async () => {
    const c = cluster.get();
    const asRole = (dsn: string, role: string): string => {
      const url = new URL(dsn);
      url.username = role;
      return url.toString();
    };
    const config = (node: string, role: string) => {
      const raw = c.rawConfig(node);
      return parseConfig(
        { ...raw, node: { ...raw.node, dsn: asRole(raw.node.dsn, role) }, peers: (raw.peers ?? []).map((p) => ({ ...p, dsn: asRole(p.dsn, role) })) },
        {},
        `node ${node} as ${role}`,
      );
    };
    for (const n of ['a', 'b']) {
      await c.query(n, `SET ROLE app_owner; ${TABLE_SQL}; ${GUARDED_SQL.join('; ')}`);
      expect(await c.query(n, `SELECT tableowner FROM pg_tables WHERE tablename = 'kv'`)).toEqual([{ tableowner: 'app_owner' }]);
    }
    for (const n of ['a', 'b']) await setupNode(config(n, 'app_owner'));
    for (const n of ['a', 'b']) {
      for (const sql of AGENT_GRANTS) await c.query(n, `SET ROLE app_owner; ${sql}`);
      for (const sql of SUPERUSER_GRANTS) await c.query(n, sql);
    }
    expect(await c.query('a', `SELECT rolname, rolsuper FROM pg_roles WHERE rolname IN ('app_owner', 'pgbidi') ORDER BY 1`)).toEqual([
      { rolname: 'app_owner', rolsuper: false },
      { rolname: 'pgbidi', rolsuper: false },
    ]);

    // The same key on both nodes before the agents run: each side logs insert_exists.
    await c.query('a', `INSERT INTO kv VALUES (1, 'from a'), (10, 'a only')`);
    await c.query('b', `INSERT INTO kv VALUES (1, 'from b'), (20, 'b only')`);
    for (const n of ['a', 'b']) c.agents.set(n, await Agent.start({ config: config(n, 'pgbidi'), log: createLogger('silent'), defaultMetrics: false }));
    await c.query('b', `UPDATE kv SET v = 'b later' WHERE id = 20`);
    await c.query('a', `DELETE FROM kv WHERE id = 10`);
    await eventually('both links streaming', () => [...c.agents.values()].every((a) => a.status().every((l) => l.state === 'streaming')));
    const hashes = await c.waitConverged('public', 'kv');
    expect(new Set([...hashes.values()].map((h) => h.md5)).size).toBe(1);
    const rows = await c.query<{ id: number; v: string }>('a', 'SELECT id, v FROM kv ORDER BY id');
    expect(rows.map((r) => r.id)).toEqual([1, 20]);
    expect(rows[1]?.v).toBe('b later');
    for (const n of ['a', 'b']) {
      expect(await c.query(n, `SELECT conflict_type FROM pgbidi.conflicts WHERE key = '["1"]'`)).toEqual([{ conflict_type: 'insert_exists' }]);
      // Nothing the agents did ran as a superuser: their sessions are pgbidi's.
      expect(await c.query(n, `SELECT DISTINCT usename FROM pg_stat_activity WHERE application_name LIKE 'pgbidi%'`)).toEqual([{ usename: 'pgbidi' }]);
    }

    // Row-level security: the policies would hide the secret row from pgbidi on b, and its update
    // would be logged as update_missing while b kept the old value. Apply runs with row_security
    // off, so the link stops on it instead, and resumes once pgbidi may bypass row security.
    await c.query('a', `INSERT INTO guarded VALUES (1, 'open'), (2, 'secret')`);
    await c.query('a', `UPDATE guarded SET v = 'secret, changed' WHERE id = 2`);
    const fromA = () =>
      c.agents
        .get('b')
        ?.status()
        .find((l) => l.peer === 'a');
    await eventually('b stops on the policy', () => /row-level security/.test(fromA()?.lastError?.message ?? ''), 60_000);
    expect(fromA()?.lastError?.message).toContain('user pgbidi lacks a privilege');
    expect(await c.query('b', 'SELECT id, v FROM guarded ORDER BY id')).toEqual([]);
    await c.query('b', 'ALTER ROLE pgbidi BYPASSRLS');
    const guarded = await c.waitConverged('public', 'guarded', 60_000);
    expect(new Set([...guarded.values()].map((h) => `${h.rows}:${h.md5}`)).size).toBe(1);
    expect(await c.query('b', 'SELECT id, v FROM guarded ORDER BY id')).toEqual([
      { id: 1, v: 'open' },
      { id: 2, v: 'secret, changed' },
    ]);
    expect(await c.query('b', `SELECT conflict_type FROM pgbidi.conflicts WHERE table_name = 'guarded'`)).toEqual([]);
  });
});
