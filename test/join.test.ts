import { describe, expect, it } from 'vitest';
import { availableServerVersions } from './support/pg-versions.js';
import { useCluster, eventually } from './support/cluster-fixture.js';
import { GrowingGroup, Writer } from './support/join-fixture.js';
import { identical } from '../src/testbed/local-cluster.js';
import type { LocalCluster } from '../src/testbed/local-cluster.js';

const ROWS = Number(process.env.PGBIDI_JOIN_TEST_ROWS ?? 50_000);
const SCHEMA = [
  'CREATE TABLE items (id bigint PRIMARY KEY, v int NOT NULL, note text)',
  'CREATE TABLE events (id bigint PRIMARY KEY, kind text NOT NULL, body jsonb, at timestamptz)',
];
/** The same rows on the founding nodes, loaded before setup (as from one dump). */
const LOAD = [
  `INSERT INTO items SELECT g, 0, 'seed ' || g FROM generate_series(0, ${ROWS - 1}) g`,
  `INSERT INTO events SELECT g, 'k' || (g % 7), jsonb_build_object('n', g, 'tab', E'a\\tb\\nc'), '2026-01-01'::timestamptz + g * interval '1 s' FROM generate_series(1, ${Math.floor(ROWS / 5)}) g`,
];

/** Every row's version (commit time, node) after the group began: must be the same on every node. */
async function versions(c: LocalCluster, node: string, since: string): Promise<string> {
  const r = await c.query<{ md5: string; n: number }>(
    node,
    `SELECT md5(coalesce(string_agg(x, ',' ORDER BY x), '')) AS md5, count(*)::int AS n FROM (
       SELECT t.id || ':' || v.timestamp || ':' || pgbidi.node_of_origin(v.roident) AS x
         FROM items t, pg_xact_commit_timestamp_origin(t.xmin) v WHERE v.timestamp > $1::timestamptz) s`,
    [since],
  );
  return `${r[0]?.n}:${r[0]?.md5}`;
}

async function conflictsOn(c: LocalCluster, node: string): Promise<{ type: string; id: string }[]> {
  return c.query<{ type: string; id: string }>(node, `SELECT conflict_type AS type, key->>0 AS id FROM pgbidi.conflicts ORDER BY id`);
}

async function converged(c: LocalCluster, nodes: readonly string[], table: string): Promise<boolean> {
  const hashes = new Map<string, { rows: number; md5: string }>();
  for (const n of nodes) hashes.set(n, await c.tableHash(n, 'public', table));
  return identical(hashes);
}

/**
 * Sets the session and transaction limits of each node's database (from new sessions on): `only`
 * those given, else idle_in_transaction_session_timeout, statement_timeout and, on 17+,
 * transaction_timeout.
 */
async function sessionLimits(c: LocalCluster, nodes: readonly string[], limit: string, only?: readonly string[]): Promise<{ reset: () => Promise<void> }> {
  const names = only ? [...only] : ['idle_in_transaction_session_timeout', 'statement_timeout'];
  if (!only) {
    const [v] = await c.query<{ n: number }>(nodes[0] as string, `SELECT current_setting('server_version_num')::int AS n`);
    if ((v?.n ?? 0) >= 170_000) names.push('transaction_timeout');
  }
  const alter = async (to: (name: string) => string): Promise<void> => {
    for (const node of nodes) {
      for (const name of names) await c.query(node, `DO $$ BEGIN EXECUTE format('ALTER DATABASE %I ${to(name)}', current_database()); END $$`);
    }
  };
  await alter((name) => `SET ${name} = ''${limit}''`);
  return { reset: () => alter((name) => `RESET ${name}`) };
}

describe.each(availableServerVersions())('pgbidi join under writes on $label', ({ binDir }) => {
  const cluster = useCluster(() => ({ binDir, nodes: ['a', 'b', 'c'], schema: SCHEMA }));

  it('fills c from a while a and b write, then all three converge with the same row versions and no conflict', async () => {
    const c = cluster.get();
    const group = new GrowingGroup(c);
    const writers: Writer[] = [];
    try {
      for (const n of ['a', 'b']) for (const sql of LOAD) await c.query(n, sql);
      const { setupNode } = await import('../src/node/setup-node.js');
      const { parseConfig } = await import('../src/config/load-config.js');
      for (const n of ['a', 'b']) await setupNode(parseConfig(group.rawConfig(n, ['a', 'b']), {}, n));
      const groupStart = (await c.query<{ t: string }>('a', 'SELECT now()::text AS t'))[0]?.t as string;
      await group.startAgent('a', ['a', 'b']);
      await group.startAgent('b', ['a', 'b']);
      // Tombstones on a and b before the join: c must receive them with their versions.
      await c.query('a', 'DELETE FROM items WHERE id IN (0, 2, 4)');
      await c.query('b', 'DELETE FROM items WHERE id IN (1, 3, 5)');

      writers.push(new Writer(c.dsn('a'), 0, 2, ROWS, 1_000_000));
      writers.push(new Writer(c.dsn('b'), 1, 2, ROWS, 1_000_000));
      // Limits a DBA may set for application sessions must not end the join's copy sessions: the
      // donor's snapshot is held in one transaction for the whole copy, and a table's COPY or load
      // may take longer than any statement limit.
      const limits = await sessionLimits(c, ['a', 'c'], '300ms');
      const joined = await group.join('c', ['a', 'b', 'c'], 'a');
      await limits.reset();
      console.log(joined.out);
      expect(joined.err).toBe('');
      expect(joined.code).toBe(0);
      expect(joined.out).toMatch(/rows\/s/);
      const rate = /(\d+) rows in ([\d.]+) s: (\d+) rows\/s/.exec(joined.out);
      expect(rate).not.toBeNull();
      expect(Number(rate?.[1])).toBeGreaterThanOrEqual(ROWS);

      // The donor's tombstones came along (the deletes above at least, unless a's janitor had
      // purged them already, which it does only after its margin), and with versions from a and b.
      const copiedTombstones = Number(/pgbidi\.tombstones: (\d+) rows/.exec(joined.out)?.[1]);
      expect(copiedTombstones).toBeGreaterThan(0);
      const onC = await c.query<{ n: number; nodes: string[] }>(
        'c',
        `SELECT count(*)::int AS n, array_agg(DISTINCT pgbidi.node_of_origin(v.roident) ORDER BY pgbidi.node_of_origin(v.roident)) AS nodes
           FROM pgbidi.tombstones t, pg_xact_commit_timestamp_origin(t.xmin) v`,
      );
      expect(onC[0]?.n).toBe(copiedTombstones);
      expect(onC[0]?.nodes).toEqual(['a', 'b']);

      // Running it again finds the join done.
      const again = await group.join('c', ['a', 'b', 'c'], 'a');
      expect(again.code).toBe(0);
      expect(again.out).toMatch(/already joined from a/);

      await group.startAgent('c', ['a', 'b', 'c']);
      // The existing nodes learn about c by a restart with c in their config, one after the other.
      await group.startAgent('a', ['a', 'b', 'c']);
      await group.startAgent('b', ['a', 'b', 'c']);
      writers.push(new Writer(c.dsn('c'), 2, 3, 0, 5_000_000));
      await new Promise((r) => setTimeout(r, 3000));
      const ops = await Promise.all(writers.map((w) => w.stop()));
      console.log(JSON.stringify({ writerOps: ops, writerErrors: writers.flatMap((w) => w.errors).slice(0, 5) }));
      expect(ops.every((n) => n > 0)).toBe(true);

      for (const table of ['items', 'events']) {
        await eventually(`${table} identical on a, b and c`, () => converged(c, ['a', 'b', 'c'], table), 120_000);
      }
      // Conflict resolution on c decides as on the others: every row written since the group began
      // holds the same version (commit time and node) on every node.
      const v = await Promise.all(['a', 'b', 'c'].map((n) => versions(c, n, groupStart)));
      expect(v[1]).toBe(v[0]);
      expect(v[2]).toBe(v[0]);
      // No two nodes wrote the same row, so no conflict anywhere, least of all for pre-existing rows.
      for (const n of ['a', 'b', 'c']) {
        const logged = await conflictsOn(c, n);
        expect(
          logged.filter((x) => Number(x.id) < ROWS),
          `conflicts on ${n}`,
        ).toEqual([]);
        expect(logged, `conflicts on ${n}`).toEqual([]);
      }
    } finally {
      await Promise.all(writers.map((w) => w.stop().catch(() => 0)));
      await group.stop();
    }
  }, 600_000);
});

describe.each(availableServerVersions())('pgbidi join under a donor idle limit shorter than its set-up on $label', ({ binDir }) => {
  const cluster = useCluster(() => ({ binDir, nodes: ['a', 'c'], schema: SCHEMA }));

  it('holds the exported snapshot until every copy session has imported it', async () => {
    const c = cluster.get();
    const group = new GrowingGroup(c);
    try {
      await c.query('a', `INSERT INTO items SELECT g, 0, 'seed ' || g FROM generate_series(0, 999) g`);
      const { setupNode } = await import('../src/node/setup-node.js');
      const { parseConfig } = await import('../src/config/load-config.js');
      await setupNode(parseConfig(group.rawConfig('a', ['a', 'c']), {}, 'a'));
      // The replication connection that exported the snapshot waits idle in its transaction while
      // each copy session connects and imports it, milliseconds at least: a limit the walsender
      // keeps ends it, and the snapshot with it (SET TRANSACTION SNAPSHOT: "does not exist").
      await sessionLimits(c, ['a'], '1ms', ['idle_in_transaction_session_timeout']);
      const joined = await group.join('c', ['a', 'c'], 'a');
      expect(joined.err).toBe('');
      expect(joined.code).toBe(0);
      expect(await converged(c, ['a', 'c'], 'items')).toBe(true);
    } finally {
      await group.stop();
    }
  }, 120_000);
});

const pg18 = availableServerVersions().find((v) => v.label === 'pg18');
describe.runIf(pg18 !== undefined)('a 5-node mesh built by successive joins on pg18', () => {
  const NODES = ['a', 'b', 'c', 'd', 'e'];
  const MESH_ROWS = 20_000;
  const cluster = useCluster(() => ({ binDir: (pg18 as { binDir: string }).binDir, nodes: NODES, schema: SCHEMA }));

  it('grows a, b into a, b, c, d, e under writes (one join fails and is run again), ending identical without conflicts', async () => {
    const c = cluster.get();
    const group = new GrowingGroup(c);
    const writers: Writer[] = [];
    const write = (n: string): void => {
      const residue = NODES.indexOf(n);
      writers.push(new Writer(c.dsn(n), residue, NODES.length, MESH_ROWS, 1_000_000));
    };
    try {
      for (const n of ['a', 'b']) {
        await c.query(n, `INSERT INTO items SELECT g, 0, 'seed ' || g FROM generate_series(0, ${MESH_ROWS - 1}) g`);
      }
      const { setupNode } = await import('../src/node/setup-node.js');
      const { parseConfig } = await import('../src/config/load-config.js');
      for (const n of ['a', 'b']) await setupNode(parseConfig(group.rawConfig(n, ['a', 'b']), {}, n));
      const groupStart = (await c.query<{ t: string }>('a', 'SELECT now()::text AS t'))[0]?.t as string;
      for (const n of ['a', 'b']) await group.startAgent(n, ['a', 'b']);
      write('a');
      write('b');

      const grow = async (node: string, donor: string): Promise<void> => {
        const members = NODES.slice(0, NODES.indexOf(node) + 1);
        const joined = await group.join(node, members, donor);
        console.log(`${node} from ${donor}: ${joined.out}${joined.err}`);
        expect(joined.code, joined.err).toBe(0);
        await group.startAgent(node, members);
        for (const m of members.filter((x) => x !== node)) await group.startAgent(m, members);
        write(node);
      };
      await grow('c', 'a');

      // d's table has a column the donor lacks: the copy fails after the slots were made and some
      // rows copied; once fixed, the second run drops that attempt and joins.
      await c.query('d', 'ALTER TABLE events ADD COLUMN extra int');
      const failed = await group.join('d', ['a', 'b', 'c', 'd'], 'b');
      expect(failed.code).toBe(1);
      expect(failed.err).toMatch(/the donor has no column extra/);
      expect((await c.query<{ state: string }>('d', 'SELECT state FROM pgbidi.join_state'))[0]?.state).toBe('copying');
      await c.query('d', 'ALTER TABLE events DROP COLUMN extra');
      await grow('d', 'b');
      await grow('e', 'c');

      await new Promise((r) => setTimeout(r, 3000));
      const ops = await Promise.all(writers.map((w) => w.stop()));
      expect(ops.every((n) => n > 0)).toBe(true);
      await eventually('items identical on all five', () => converged(c, NODES, 'items'), 180_000);
      const v = await Promise.all(NODES.map((n) => versions(c, n, groupStart)));
      for (const x of v) expect(x).toBe(v[0]);
      for (const n of NODES) expect(await conflictsOn(c, n), `conflicts on ${n}`).toEqual([]);
      for (const n of NODES) {
        const slots = await c.query<{ n: number }>(n, `SELECT count(*)::int AS n FROM pg_replication_slots WHERE slot_name LIKE 'pgbidi\\_%'`);
        expect(slots[0]?.n, `slots on ${n}`).toBe(NODES.length - 1);
      }
    } finally {
      await Promise.all(writers.map((w) => w.stop().catch(() => 0)));
      await group.stop();
    }
  }, 900_000);
});
