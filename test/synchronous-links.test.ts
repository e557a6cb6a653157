import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { Agent } from '../src/agent.js';
import type { Config, RawConfig } from '../src/config/config-schema.js';
import { parseConfig } from '../src/config/load-config.js';
import { setupNode } from '../src/node/setup-node.js';
import { forgetStandby, formatStandbyNames, parseStandbyNames } from '../src/node/synchronous-links.js';
import { createLogger } from '../src/observability/logger.js';
import type { LocalCluster } from '../src/testbed/local-cluster.js';
import { eventually, sleep, useCluster } from './support/cluster-fixture.js';
import { availableServerVersions } from './support/pg-versions.js';

describe('synchronous_standby_names as pgbidi writes it', () => {
  it('reads back what it formats, and refuses forms it did not write', () => {
    expect(parseStandbyNames('')).toEqual([]);
    expect(parseStandbyNames(formatStandbyNames(['pgbidi_b_from_a']))).toEqual(['pgbidi_b_from_a']);
    expect(parseStandbyNames(formatStandbyNames(['pgbidi_b_from_a', 'pgbidi_c_from_a']))).toEqual(['pgbidi_b_from_a', 'pgbidi_c_from_a']);
    expect(formatStandbyNames([])).toBe('');
    // Someone else's settings: a physical standby, a priority list, a quorum smaller than the list.
    expect(parseStandbyNames('standby1')).toBeNull();
    expect(parseStandbyNames('FIRST 1 ("pgbidi_b_from_a")')).toBeNull();
    expect(parseStandbyNames('ANY 1 ("pgbidi_b_from_a", "pgbidi_c_from_a")')).toBeNull();
    expect(parseStandbyNames('ANY 2 ("pgbidi_b_from_a", "walreceiver")')).toBeNull();
    expect(parseStandbyNames('*')).toBeNull();
  });
});

const NODES = ['a', 'b'];
const SCHEMA = ['CREATE TABLE public.items (id text PRIMARY KEY, v int NOT NULL)'];

function syncConfig(c: LocalCluster, name: string, synchronous: boolean): Config {
  const raw: RawConfig = c.rawConfig(name);
  return parseConfig({ ...raw, peers: raw.peers.map((p) => ({ ...p, synchronous })) }, {}, `node ${name}`);
}

async function standbyNames(c: LocalCluster, node: string): Promise<string> {
  const r = await c.query<{ v: string }>(node, `SELECT current_setting('synchronous_standby_names') AS v`);
  return r[0]?.v ?? '';
}

/**
 * Inserts `count` rows on `from`, one autocommit transaction each, and reads each one on `to` right
 * after its COMMIT returned: a synchronous link must have applied and flushed it by then.
 */
async function writeAndReadBack(fromDsn: string, toDsn: string, prefix: string, count: number): Promise<{ missing: number; commitMs: number[] }> {
  const writer = new pg.Client({ connectionString: fromDsn });
  const reader = new pg.Client({ connectionString: toDsn });
  writer.on('error', () => undefined);
  reader.on('error', () => undefined);
  await writer.connect();
  await reader.connect();
  let missing = 0;
  const commitMs: number[] = [];
  try {
    for (let i = 0; i < count; i++) {
      const id = `${prefix}-${i}`;
      const t0 = performance.now();
      await writer.query('INSERT INTO public.items (id, v) VALUES ($1, $2)', [id, i]);
      commitMs.push(performance.now() - t0);
      const seen = await reader.query('SELECT 1 FROM public.items WHERE id = $1', [id]);
      if (seen.rowCount !== 1) missing++;
    }
  } finally {
    await writer.end();
    await reader.end();
  }
  return { missing, commitMs };
}

describe.each(availableServerVersions())('synchronous links on $label', ({ binDir }) => {
  const cluster = useCluster(() => ({ binDir, nodes: NODES, schema: SCHEMA }));

  it('makes commits wait for the peer in both directions at once, without deadlock, and can be switched off', async () => {
    const c = cluster.get();
    const log = createLogger('silent');
    for (const n of NODES) await setupNode(syncConfig(c, n, true));
    // Setup of b lists b's agent on a, and the other way round (pg_reload_conf is asynchronous).
    await eventually('a waits for b', async () => (await standbyNames(c, 'a')) === 'ANY 1 ("pgbidi_b_from_a")');
    await eventually('b waits for a', async () => (await standbyNames(c, 'b')) === 'ANY 1 ("pgbidi_a_from_b")');
    // Idempotent: a second setup changes nothing.
    const again = await setupNode(syncConfig(c, 'a', true));
    expect(again.synchronous.map((s) => s.status)).toEqual(['already set']);

    const agents = new Map<string, Agent>();
    try {
      for (const n of NODES) agents.set(n, await Agent.start({ config: syncConfig(c, n, true), log }));
      for (const [node, standby] of [
        ['a', 'pgbidi_b_from_a'],
        ['b', 'pgbidi_a_from_b'],
      ] as const) {
        await eventually(`${standby} is a synchronous standby of ${node}`, async () => {
          const r = await c.query<{ s: string }>(node, 'SELECT sync_state AS s FROM pg_stat_replication WHERE application_name = $1', [standby]);
          return r[0]?.s === 'sync' || r[0]?.s === 'quorum';
        });
      }
      expect(agents.get('b')?.status()[0]?.synchronous).toBe(true);

      // Both directions at once: every row is on the other node as soon as its COMMIT returns.
      const [ab, ba] = await Promise.all([writeAndReadBack(c.dsn('a'), c.dsn('b'), 'a', 150), writeAndReadBack(c.dsn('b'), c.dsn('a'), 'b', 150)]);
      expect(ab.missing).toBe(0);
      expect(ba.missing).toBe(0);
      const median = (xs: number[]): number => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)] ?? 0;
      console.log(JSON.stringify({ syncCommitMedianMs: { aToB: median(ab.commitMs), bToA: median(ba.commitMs) } }));

      // With b's agent gone, a commit on a waits (SyncRep) until the agent is back and has applied it.
      await agents.get('b')?.stop();
      agents.delete('b');
      const writer = new pg.Client({ connectionString: c.dsn('a') });
      writer.on('error', () => undefined);
      await writer.connect();
      try {
        let committed = false;
        const insert = writer.query(`INSERT INTO public.items (id, v) VALUES ('while-b-down', 1)`).then(() => (committed = true));
        await eventually('the commit on a waits for b', async () => {
          const r = await c.query<{ n: number }>('a', `SELECT count(*)::int AS n FROM pg_stat_activity WHERE wait_event = 'SyncRep'`);
          return (r[0]?.n ?? 0) > 0;
        });
        await sleep(500);
        expect(committed).toBe(false);
        agents.set('b', await Agent.start({ config: syncConfig(c, 'b', true), log }));
        await insert;
        const onB = await c.query('b', `SELECT 1 FROM public.items WHERE id = 'while-b-down'`);
        expect(onB).toHaveLength(1);
      } finally {
        await writer.end();
      }
    } finally {
      for (const a of agents.values()) await a.stop();
    }

    // Switched off: b's setup takes b's agent out of a's list again.
    const off = await setupNode(syncConfig(c, 'b', false));
    expect(off.synchronous.map((s) => s.status)).toEqual(['removed']);
    await eventually('a no longer waits for b', async () => (await standbyNames(c, 'a')) === '');
    // pgbidi part takes a leaving node's agent out of the list the same way.
    await setupNode(syncConfig(c, 'b', true));
    await eventually('a waits for b again', async () => (await standbyNames(c, 'a')) !== '');
    const admin = new pg.Client({ connectionString: c.dsn('a') });
    await admin.connect();
    try {
      expect(await forgetStandby(admin, 'a', 'pgbidi_b_from_a')).toBe(true);
      expect(await forgetStandby(admin, 'a', 'pgbidi_b_from_a')).toBe(false);
    } finally {
      await admin.end();
    }
    await eventually('a forgot b', async () => (await standbyNames(c, 'a')) === '');
    const hashes = await c.waitConverged('public', 'items');
    expect(new Set([...hashes.values()].map((h) => h.md5)).size).toBe(1);
    expect(hashes.get('a')?.rows).toBe(301);
  }, 300_000);
});
