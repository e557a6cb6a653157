/**
 * The fault scenarios, in the order the suite runs them. Each one starts the workload, does its
 * damage, heals what it can itself, and returns what it did; the suite then heals the rest and
 * compares the nodes. Every random choice (which node, when) comes from the suite's seeded source.
 */
import { chmodSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { chown, open } from 'node:fs/promises';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { slotName } from '../../node/names.js';
import { ensureServerUser } from '../../pg-server/os-user.js';
import { sampleValue } from './fault-agent.js';
import { FAULT_RECONNECT, type FaultCluster } from './fault-cluster.js';
import { largeTransaction } from './fault-workload.js';
import type { ScenarioContext, ScenarioOutcome } from './fault-suite.js';
import { errorMessage } from '../../util/error-message.js';

const run = promisify(execFile);

export type ScenarioName =
  | 'kill-9-agents'
  | 'pg-restart-immediate'
  | 'node-down'
  | 'peer-unreachable-at-start'
  | 'peer-gone-mid-transaction'
  | 'local-gone-while-applying'
  | 'partition'
  | 'disk-full'
  | 'slot-lost';

export interface Scenario {
  readonly name: ScenarioName;
  run(ctx: ScenarioContext): Promise<ScenarioOutcome>;
}

/** Polls `check` until it returns a value (not undefined); undefined at the timeout. */
async function waitFor<T>(check: () => Promise<T | undefined>, timeoutMs: number, everyMs = 200): Promise<T | undefined> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > deadline) return undefined;
    await sleep(everyMs);
  }
}

function others(cluster: FaultCluster, node: string): string[] {
  return cluster.nodes.filter((n) => n !== node);
}

const killAgents: Scenario = {
  name: 'kill-9-agents',
  async run({ cluster, profile, startWorkload, pick, between }) {
    startWorkload();
    const byNode: Record<string, number> = {};
    for (let i = 0; i < profile.kills; i++) {
      await sleep(between(300, 2500));
      const node = pick(cluster.nodes);
      await cluster.agent(node).kill9();
      byNode[node] = (byNode[node] ?? 0) + 1;
      await sleep(between(50, 1500));
      await cluster.startAgent(node);
    }
    await sleep(profile.loadMs);
    const per = Object.entries(byNode)
      .sort()
      .map(([n, k]) => `${n} ${k}`)
      .join(', ');
    return { action: `kill -9 of an agent ${profile.kills} times (${per})`, kills: profile.kills };
  },
};

const restartImmediate: Scenario = {
  name: 'pg-restart-immediate',
  async run({ cluster, profile, startWorkload, pick, between }) {
    startWorkload();
    const node = pick(cluster.nodes);
    await sleep(between(1000, 3000));
    // What `pg_ctl restart -m immediate` does: SIGQUIT to the postmaster, then a new one on the same
    // data directory (crash recovery). Done directly so that the suite keeps owning the server.
    const server = cluster.local.server(node);
    await server.stopImmediate();
    await server.startAgain();
    await sleep(profile.loadMs);
    return { action: `PostgreSQL of ${node} restarted in immediate mode under load`, restarts: 1 };
  },
};

const nodeDown: Scenario = {
  name: 'node-down',
  async run({ cluster, profile, startWorkload, pick }) {
    startWorkload();
    const node = pick(cluster.nodes);
    const failures: string[] = [];
    await sleep(1000);
    const server = cluster.local.server(node);
    await server.stop();
    // The peers keep WAL for the node's slots; their agents report it (the node's own agent cannot).
    const retained = async (peer: string): Promise<{ bytes: number; active: number } | undefined> => {
      const text = await cluster.agent(peer).metrics();
      const labels = { peer: node, slot: slotName(peer, node) };
      const bytes = sampleValue(text, 'pgbidi_local_slot_retained_wal_bytes', labels);
      const active = sampleValue(text, 'pgbidi_local_slot_active', labels);
      return bytes === undefined || active === undefined ? undefined : { bytes, active };
    };
    await sleep(Math.min(3000, profile.downMs / 3));
    const first = new Map<string, { bytes: number; active: number } | undefined>();
    for (const p of others(cluster, node)) first.set(p, await retained(p).catch(() => undefined));
    await sleep(profile.downMs - Math.min(3000, profile.downMs / 3));
    const seen: string[] = [];
    for (const p of others(cluster, node)) {
      const a = first.get(p);
      const b = await retained(p).catch(() => undefined);
      if (!a || !b) failures.push(`${p}'s /metrics has no pgbidi_local_slot_retained_wal_bytes for ${slotName(p, node)}`);
      else if (b.active !== 0 || !(b.bytes > a.bytes)) {
        failures.push(`${p}'s /metrics: slot ${slotName(p, node)} active ${b.active}, retained ${a.bytes} then ${b.bytes} B (expected inactive and growing)`);
      } else seen.push(`${p} ${Math.round(a.bytes / 1024)}->${Math.round(b.bytes / 1024)} KiB`);
    }
    await server.startAgain();
    await sleep(profile.loadMs);
    return {
      action: `${node} down ${Math.round(profile.downMs / 1000)} s while the others write (WAL kept for it on /metrics: ${seen.join(', ') || 'not seen'})`,
      restarts: 1,
      failures,
    };
  },
};

const peerUnreachableAtStart: Scenario = {
  name: 'peer-unreachable-at-start',
  async run({ cluster, profile, startWorkload, pick }) {
    const node = pick(cluster.nodes);
    const peer = pick(others(cluster, node));
    const failures: string[] = [];
    await cluster.agent(node).stop();
    cluster.proxy(peer, node).cutAll();
    startWorkload();
    await cluster.startAgent(node);
    // The agent runs and serves /status; the link to the unreachable peer says why it waits, and
    // the other link streams.
    const links = await waitFor(async () => {
      const s = await cluster.agent(node).status();
      const bad = s.find((l) => l.peer === peer);
      const good = s.filter((l) => l.peer !== peer);
      return bad?.lastError && bad.state !== 'streaming' && good.every((l) => l.state === 'streaming') ? s : undefined;
    }, 60_000);
    if (!links) failures.push(`${node}'s /status never showed the link from ${peer} failing with the other links streaming: ${await cluster.describeLinks()}`);
    const error = links?.find((l) => l.peer === peer)?.lastError;
    await sleep(profile.loadMs);
    cluster.proxy(peer, node).restore();
    const back = await waitFor(async () => ((await cluster.agent(node).link(peer))?.state === 'streaming' ? true : undefined), 60_000);
    if (!back) failures.push(`the link ${peer}->${node} did not stream once ${peer} was reachable again`);
    await sleep(profile.loadMs);
    return {
      action: `${node}'s agent started with ${peer} unreachable (status: ${error ? `${error.code ?? ''} ${error.message}`.trim() : '?'}), then reachable`,
      failures,
    };
  },
};

/** Changes queued on a link that only a large transaction in flight explains (batches of 1,000). */
const IN_FLIGHT_QUEUED = 1000;

/**
 * Starts the workload, picks a node and one of its peers, and after a second commits a large
 * transaction on the peer; resolves once the node's link from it is in the middle of it, saying where.
 */
async function largeTransactionInFlight(ctx: ScenarioContext, batch: number): Promise<{ node: string; peer: string; when: string }> {
  const { cluster, profile, startWorkload, pick } = ctx;
  startWorkload();
  const node = pick(cluster.nodes);
  const peer = pick(others(cluster, node));
  await sleep(1000);
  const before = await cluster.agent(node).link(peer);
  const applied = before?.changesApplied ?? 0;
  await largeTransaction(cluster.dsn(peer), peer, batch, profile.bulkRows);
  // In flight: batches of it queued (the workload's one-row transactions never queue this many),
  // before all of its rows are applied.
  const l = await waitFor(
    async () => {
      const l = await cluster.agent(node).link(peer);
      return l && l.queuedChanges >= IN_FLIGHT_QUEUED && l.changesApplied - applied < profile.bulkRows ? l : undefined;
    },
    60_000,
    25,
  );
  return { node, peer, when: l ? `with ${l.queuedChanges} changes queued` : 'not caught in flight (applied, or still decoded on the peer)' };
}

const peerGoneMidTransaction: Scenario = {
  name: 'peer-gone-mid-transaction',
  async run(ctx) {
    const { cluster, profile } = ctx;
    const { node, peer, when } = await largeTransactionInFlight(ctx, 1);
    cluster.proxy(peer, node).cutAll();
    await sleep(2000);
    cluster.proxy(peer, node).restore();
    await sleep(profile.loadMs);
    return { action: `${peer} cut off from ${node}'s agent during a ${profile.bulkRows}-row transaction ${when}, 2 s`, partitions: 1 };
  },
};

const localGoneWhileApplying: Scenario = {
  name: 'local-gone-while-applying',
  async run(ctx) {
    const { cluster, profile } = ctx;
    const { node, peer, when } = await largeTransactionInFlight(ctx, 2);
    const server = cluster.local.server(node);
    await server.stopImmediate();
    await sleep(2000);
    await server.startAgain();
    await sleep(profile.loadMs);
    return { action: `PostgreSQL of ${node} stopped (immediate) while applying a ${profile.bulkRows}-row transaction from ${peer} ${when}, 2 s`, restarts: 1 };
  },
};

const partition: Scenario = {
  name: 'partition',
  async run({ cluster, profile, startWorkload, pick }) {
    startWorkload();
    const a = pick(cluster.nodes);
    const b = pick(others(cluster, a));
    await sleep(1000);
    cluster.partition(a, b, true);
    await sleep(profile.partitionMs);
    cluster.partition(a, b, false);
    await sleep(profile.loadMs);
    return { action: `${a} and ${b} cut from each other ${Math.round(profile.partitionMs / 1000)} s, all writing, then healed`, partitions: 1 };
  },
};

/** Fills the file system of `dir` with one file until ENOSPC; returns the file. */
async function fill(dir: string): Promise<string> {
  const file = join(dir, 'ballast');
  const handle = await open(file, 'w');
  const chunk = Buffer.alloc(1 << 20);
  try {
    for (;;) await handle.write(chunk);
  } catch (err) {
    if ((err as { code?: unknown }).code !== 'ENOSPC') throw err;
  } finally {
    await handle.close();
  }
  return file;
}

const diskFull: Scenario = {
  name: 'disk-full',
  async run(ctx) {
    const { cluster, profile, startWorkload, pick } = ctx;
    if (process.getuid?.() !== 0) return { action: 'disk full on a node', skipped: 'needs root to mount a tmpfs' };
    const node = pick(cluster.nodes);
    const peer = pick(others(cluster, node));
    const failures: string[] = [];
    // The node's items and ledger move to a tablespace on a small tmpfs: the data files fill up
    // (SQLSTATE 53100 when a table must grow, as soon as the peers' ledger rows need a new page)
    // while pg_wal, elsewhere, keeps the server up.
    const tables = ['items', 'ledger'];
    const [{ bytes } = { bytes: '0' }] = await cluster.local.query<{ bytes: string }>(
      node,
      `SELECT sum(pg_total_relation_size(t::regclass))::text AS bytes FROM unnest($1::text[]) AS t`,
      [tables],
    );
    const sizeMb = Math.ceil((Number(bytes) * 2) / 2 ** 20) + 16;
    // Outside the suite's own directory (mode 0700, root's): the server's OS user must reach it.
    const mount = mkdtempSync(join(tmpdir(), 'pgbidi-faults-disk-'));
    chmodSync(mount, 0o755);
    const location = join(mount, 'ts');
    try {
      await run('mount', ['-t', 'tmpfs', '-o', `size=${sizeMb}m,mode=0755`, 'tmpfs', mount]);
    } catch (err) {
      // Root in a container without CAP_SYS_ADMIN: the scenario cannot be made here, and says so.
      rmSync(mount, { recursive: true, force: true });
      return { action: 'disk full on a node', skipped: `cannot mount a tmpfs here (${errorMessage(err).split('\n')[0] ?? ''})` };
    }
    const moved: string[] = [];
    let tablespace = false;
    try {
      mkdirSync(location);
      const user = await ensureServerUser();
      if (user) await chown(location, user.uid, user.gid);
      await cluster.local.query(node, `CREATE TABLESPACE faults_small LOCATION '${location}'`);
      tablespace = true;
      for (const t of tables) {
        await cluster.local.query(node, `ALTER TABLE ${t} SET TABLESPACE faults_small`);
        moved.push(t);
      }
      startWorkload();
      await sleep(1000);
      const ballast = await fill(mount);
      const stopped = await waitFor(async () => {
        const l = await cluster.agent(node).link(peer);
        return l?.lastError?.code === '53100' ? l : undefined;
      }, 60_000);
      if (!stopped) failures.push(`${node}'s /status never showed the link from ${peer} stopped by SQLSTATE 53100: ${await cluster.describeLinks()}`);
      // No tight loop: once the backoff has grown (0.2, 0.4, ... 3 s here), the delays are 1.5-3 s
      // (full jitter), so a 10 s window holds at most 7 reconnects (5 is usual; 6 was seen); a
      // backoff that starts over at every attempt made 50.
      const reconnects = async (): Promise<number> => sampleValue(await cluster.agent(node).metrics(), 'pgbidi_link_reconnects_total', { peer }) ?? 0;
      const windowMs = 10_000;
      const most = Math.floor(windowMs / (FAULT_RECONNECT.max_delay_ms / 2)) + 1;
      await sleep(6000);
      const r0 = await reconnects();
      await sleep(windowMs);
      const r1 = await reconnects();
      if (r1 - r0 > most) failures.push(`the link ${peer}->${node} reconnected ${r1 - r0} times in 10 s while the disk was full (at most ${most} expected)`);
      const kind = sampleValue(await cluster.agent(node).metrics(), 'pgbidi_apply_errors_total', { peer, kind: 'resources' }) ?? 0;
      if (!(kind > 0)) failures.push(`pgbidi_apply_errors_total{peer="${peer}",kind="resources"} is ${kind} on ${node}`);
      const before = (await cluster.agent(node).link(peer))?.transactionsApplied ?? 0;
      rmSync(ballast);
      // Resumed: applying again (lastError keeps the last failure, it is not cleared on success).
      const resumed = await waitFor(async () => {
        const l = await cluster.agent(node).link(peer);
        return l && l.state !== 'backoff' && l.state !== 'connecting' && l.transactionsApplied > before ? l : undefined;
      }, 120_000);
      if (!resumed) failures.push(`the link ${peer}->${node} did not resume once space was freed`);
      await sleep(profile.loadMs);
      const msg = stopped?.lastError?.message ?? '';
      return {
        action: `${node}'s tables on a full ${sizeMb} MB tmpfs while applying from ${peer} (status: 53100 ${msg.slice(0, 60)}; ${r1 - r0} reconnects in 10 s), then freed`,
        failures,
      };
    } finally {
      await ctx.stopWorkload();
      rmSync(join(mount, 'ballast'), { force: true });
      let back = true;
      for (const t of moved) {
        await cluster.local.query(node, `ALTER TABLE ${t} SET TABLESPACE pg_default`).catch(() => (back = false));
      }
      if (tablespace) await cluster.local.query(node, `DROP TABLESPACE faults_small`).catch(() => (back = false));
      // Never unmount under a table still there: its data would be gone. Left mounted, it says so.
      if (back) {
        await run('umount', [mount]);
        rmSync(mount, { recursive: true, force: true });
      } else process.stderr.write(`faults: ${mount} left mounted: the tables of ${node} could not be moved back\n`);
    }
  },
};

const slotLost: Scenario = {
  name: 'slot-lost',
  async run({ cluster, pick }) {
    const node = pick(cluster.nodes);
    const peer = pick(others(cluster, node));
    const slot = slotName(peer, node);
    const failures: string[] = [];
    await cluster.agent(node).stop();
    const client = new pg.Client({ connectionString: cluster.dsn(peer) });
    await client.connect();
    try {
      await client.query(`ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'`);
      await client.query(`SELECT pg_reload_conf()`);
      // Each switch ends the segment: a few of them move the WAL far past what the slot may keep.
      for (let i = 0; i < 4; i++) await client.query(`SELECT pg_logical_emit_message(false, 'pgbidi.faults', repeat('x', 1000)), pg_switch_wal()`);
      const [{ lsn } = { lsn: '0/0' }] = (await client.query<{ lsn: string }>(`SELECT pg_current_wal_lsn()::text AS lsn`)).rows;
      // The other node's slot on the peer is streamed; give its restart_lsn time to pass the switches
      // (a running-xacts record lets it move) so that only the stopped node's slot is lost.
      const otherSlots = others(cluster, peer)
        .filter((n) => n !== node)
        .map((n) => slotName(peer, n));
      if ((await client.query<{ ok: boolean }>(`SELECT current_setting('server_version_num')::int >= 160000 AS ok`)).rows[0]?.ok)
        await client.query(`SELECT pg_log_standby_snapshot()`);
      await waitFor(async () => {
        const r = await client.query<{ behind: number }>(
          `SELECT count(*)::int AS behind FROM pg_replication_slots WHERE slot_name = ANY($1) AND restart_lsn < $2::pg_lsn`,
          [otherSlots, lsn],
        );
        return r.rows[0]?.behind === 0 ? true : undefined;
      }, 40_000);
      await client.query(`CHECKPOINT`);
      const r = await client.query<{ slot_name: string; wal_status: string }>(`SELECT slot_name, wal_status FROM pg_replication_slots ORDER BY slot_name`);
      const status = new Map(r.rows.map((x) => [x.slot_name, x.wal_status]));
      if (status.get(slot) !== 'lost') failures.push(`${slot} on ${peer} is ${status.get(slot) ?? 'absent'}, not lost, after the checkpoint`);
      const collateral = r.rows.filter((x) => x.slot_name !== slot && x.wal_status === 'lost').map((x) => x.slot_name);
      await cluster.startAgent(node);
      const shown = await waitFor(async () => {
        const l = await cluster.agent(node).link(peer);
        return l?.lastError?.code === 'PGBIDI_SLOT_LOST' ? l : undefined;
      }, 60_000);
      if (!shown) failures.push(`${node}'s /status does not show PGBIDI_SLOT_LOST for the link from ${peer}: ${await cluster.describeLinks()}`);
      else if (!shown.lastError?.message.includes(slot) || !shown.lastError.message.includes('pgbidi join')) {
        failures.push(`the error does not name the slot and the fix: ${shown.lastError?.message ?? ''}`);
      }
      const lost = await waitFor(async () => {
        const v = sampleValue(await cluster.agent(node).metrics(), 'pgbidi_slot_wal_status', { peer, slot, wal_status: 'lost' });
        return v === 1 ? v : undefined;
      }, 30_000);
      if (lost === undefined) failures.push(`${node}'s /metrics has no pgbidi_slot_wal_status{slot="${slot}",wal_status="lost"} 1`);
      return {
        action: `${slot} invalidated by max_slot_wal_keep_size on ${peer} (state ${shown?.state ?? '?'}: ${shown?.lastError?.message.slice(0, 60) ?? 'not shown'}...; metric lost=${lost ?? 0}${collateral.length ? `; also lost: ${collateral.join(', ')}` : ''})`,
        failures,
        noConvergence: true,
      };
    } finally {
      await client.query(`ALTER SYSTEM RESET max_slot_wal_keep_size`).catch(() => undefined);
      await client.query(`SELECT pg_reload_conf()`).catch(() => undefined);
      await client.end().catch(() => undefined);
    }
  },
};

export const SCENARIOS: readonly Scenario[] = [
  killAgents,
  restartImmediate,
  nodeDown,
  peerUnreachableAtStart,
  peerGoneMidTransaction,
  localGoneWhileApplying,
  partition,
  diskFull,
  slotLost,
];

export const SCENARIO_NAMES: readonly ScenarioName[] = SCENARIOS.map((s) => s.name);
