import type pg from 'pg';
import type { Config, PeerConfig } from '../config/config-schema.js';
import { redactedMessage } from '../config/redact.js';
import { sqlState } from '../apply/error-kind.js';
import { quoteIdent } from '../util/sql.js';
import { applicationName, METADATA_SCHEMA, originName, slotName } from './names.js';
import { forgetStandby } from './synchronous-links.js';
import { tryConnect } from './try-connect.js';
import { partedRecords, recordParted } from './parted-nodes.js';

/**
 * `pgbidi part`: a node leaves the group, and nothing of it is left behind that holds WAL or a
 * replication origin on any node.
 *
 * Two forms, as PGD's bdr.part_node and pglogical's drop_node are used:
 * - run on the leaving node x (its config lists its peers): x's changes are first confirmed by
 *   every peer (their slots on x reach x's current WAL position), then on every peer the record that
 *   x parted is written and x's slot (pgbidi_<peer>_to_x) and x's origin (pgbidi_x) are dropped; then
 *   on x its own slots, origins, publication and the pgbidi schema (with the tombstone triggers).
 * - run on a survivor with `--node x` when x is gone for good: the same on every reachable survivor
 *   listed in the config, without waiting for x.
 *
 * The record is written before anything is dropped, so an agent that still lists x and reconnects in
 * between finds it and stops that link ('parted', link/link.ts) instead of re-creating x's slot.
 * Sessions that hold a slot or an origin (the agents' walsenders and apply sessions) are terminated
 * first: PostgreSQL refuses to drop either while in use (SQLSTATE 55006).
 */

export class PartError extends Error {
  readonly code = 'PGBIDI_PART_FAILED';
  constructor(readonly problems: readonly string[]) {
    super(`part cannot continue:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'PartError';
  }
}

export interface PartOptions {
  /** The node that is gone for good; absent: the config's own node leaves. */
  readonly node?: string;
  /** How long to wait for every peer to confirm the leaving node's changes (form 1). */
  readonly waitTimeoutMs?: number;
  /** Go on although a peer did not answer or did not confirm the leaving node's last changes. */
  readonly force?: boolean;
  /** How long to keep trying to drop a slot or origin that an agent holds. */
  readonly dropTimeoutMs?: number;
}

/** What happened on one node of the group. */
export interface NodePartResult {
  readonly node: string;
  /** Objects dropped, as "slot pgbidi_a_to_x" etc. */
  readonly dropped: readonly string[];
  /** Where this node's origin for the leaving node stood before it was dropped (survivors only). */
  readonly originProgress: string | null;
  /** Set when the node could not be reached or cleaned: what is left there and how to finish. */
  readonly error: string | null;
}

export interface PartReport {
  readonly leaving: string;
  readonly nodes: readonly NodePartResult[];
  readonly warnings: readonly string[];
}

const POLL_MS = 200;

export async function partNode(config: Config, options: PartOptions = {}): Promise<PartReport> {
  // `--node` naming this node itself is the first form too.
  if (options.node === undefined || options.node === config.node.name) return partSelf(config, options);
  return partGone(config, options.node, options);
}

/** Form 1: this node leaves. */
async function partSelf(config: Config, options: PartOptions): Promise<PartReport> {
  const x = config.node.name;
  const local = await connect(config.node.dsn);
  if (local instanceof Error) throw new PartError([`this node (${x}) does not answer: ${local.message}`]);
  const peers = await connectAll(config.peers);
  try {
    const problems: string[] = [];
    const warnings: string[] = [];
    for (const [name, c] of peers) if (c instanceof Error) problems.push(`peer ${name} does not answer (${c.message})`);

    // Peers that already recorded x's part (a re-run, or `--node x` ran there) no longer read x's slot.
    const waiting = [];
    for (const [name, c] of peers) {
      if (c instanceof Error) continue;
      if ((await partedRecords(c, [x])).length === 0) waiting.push(name);
    }
    const lagging = await waitConfirmed(
      local,
      waiting.map((p) => slotName(x, p)),
      options.waitTimeoutMs ?? 60_000,
    );
    for (const l of lagging) {
      const peer = l.slot.slice(`pgbidi_${x}_to_`.length);
      problems.push(
        `peer ${peer} has not confirmed ${x}'s changes up to ${l.target} (slot ${l.slot} is at ${l.confirmed ?? 'nothing'}): ` +
          `is its agent running? Run part again once it has caught up`,
      );
    }
    if (problems.length && !options.force) {
      throw new PartError([...problems, 'nothing was dropped; --force parts anyway, and the changes not confirmed are lost to those peers']);
    }
    warnings.push(...problems.map((p) => `forced: ${p}`));

    const results: NodePartResult[] = [];
    for (const [name, c] of peers) {
      if (c instanceof Error) {
        results.push(unreachable(name, x, c));
        continue;
      }
      results.push(await dropSurvivorObjects(c, name, x, x, options));
    }
    results.push(await dropOwnObjects(local, config, options));
    return { leaving: x, nodes: results, warnings };
  } finally {
    await Promise.all([
      local.end().catch(() => undefined),
      ...[...peers.values()].map((c) => (c instanceof Error ? undefined : c.end().catch(() => undefined))),
    ]);
  }
}

/** Form 2: `x` is gone for good; every reachable survivor listed here forgets it. */
async function partGone(config: Config, x: string, options: PartOptions): Promise<PartReport> {
  const survivors: PeerConfig[] = [{ name: config.node.name, dsn: config.node.dsn, synchronous: false }, ...config.peers.filter((p) => p.name !== x)];
  const clients = await connectAll(survivors);
  try {
    const results: NodePartResult[] = [];
    const warnings: string[] = [];
    for (const [name, c] of clients) {
      if (c instanceof Error) {
        results.push(unreachable(name, x, c));
        continue;
      }
      results.push(await dropSurvivorObjects(c, name, x, config.node.name, options));
    }
    const progress = results.filter((r) => r.error === null && r.originProgress !== null);
    if (new Set(progress.map((r) => r.originProgress)).size > 1) {
      warnings.push(
        `the survivors had applied ${x}'s changes up to different positions (${progress.map((r) => `${r.node}: ${r.originProgress}`).join(', ')}): ` +
          `rows ${x} wrote in between reached only some of them and are not replicated further; compare the tables across the survivors`,
      );
    }
    const listed = config.peers.find((p) => p.name === x);
    if (listed) {
      const gone = await connect(listed.dsn);
      if (!(gone instanceof Error)) {
        warnings.push(
          `${x} still answers at its dsn: its own slots and metadata are left there; run 'pgbidi part --config <${x}'s config>' on ${x} to drop them`,
        );
        await gone.end().catch(() => undefined);
      }
    }
    return { leaving: x, nodes: results, warnings };
  } finally {
    await closeAll(clients.values());
  }
}

/** On survivor `node`: record that `x` parted, drop the slot x read here and the origin of x's changes. */
async function dropSurvivorObjects(client: pg.Client, node: string, x: string, by: string, options: PartOptions): Promise<NodePartResult> {
  try {
    const origin = originName(x);
    const p = await client.query<{ lsn: string | null }>(
      `SELECT pg_replication_origin_progress($1, false)::text AS lsn FROM pg_replication_origin WHERE roname = $1`,
      [origin],
    );
    await recordParted(client, x, by);
    const dropped: string[] = [];
    // Before its walsender goes: commits here must not wait for x's agent any more.
    const standby = applicationName(x, node);
    if (await forgetStandby(client, node, standby)) dropped.push(`synchronous standby ${standby}`);
    const slot = slotName(node, x);
    if ((await dropSlot(client, slot, options.dropTimeoutMs)) === 'dropped') dropped.push(`slot ${slot}`);
    const progress = p.rows[0]?.lsn ?? null;
    const holders = [standby];
    const version = await client.query<{ v: number }>(`SELECT current_setting('server_version_num')::int AS v`);
    if ((version.rows[0]?.v ?? 0) < 160000 && progress !== null) {
      // PostgreSQL 15's pgoutput sends a transaction's Origin message only while the origin's name
      // exists (replorigin_by_oid, missing_ok); without it, x's changes applied here would look local
      // to the other survivors' links and be applied there a second time. So the other slots here
      // first decode past every transaction applied from x.
      await terminate(client, holders);
      const others = await client.query<{ slot_name: string }>(
        `SELECT slot_name FROM pg_replication_slots WHERE database = current_database() AND starts_with(slot_name, $1)`,
        [`pgbidi_${node}_to_`],
      );
      const lagging = await waitConfirmed(
        client,
        others.rows.map((o) => o.slot_name),
        options.waitTimeoutMs ?? 60_000,
      );
      if (lagging.length) {
        return {
          node,
          dropped,
          originProgress: progress,
          error:
            `origin ${origin} kept: on PostgreSQL 15 it may go only once ${lagging.map((l) => l.slot).join(', ')} decoded past ${lagging[0]?.target ?? '?'} ` +
            `(are those agents running?); run part again`,
        };
      }
    }
    if ((await dropOrigin(client, origin, holders, options.dropTimeoutMs)) === 'dropped') dropped.push(`origin ${origin}`);
    return { node, dropped, originProgress: progress, error: null };
  } catch (err) {
    return { node, dropped: [], originProgress: null, error: `failed: ${message(err)}; run part again` };
  }
}

/** On the leaving node itself: its slots, its origins, its publication and the pgbidi schema. */
async function dropOwnObjects(client: pg.Client, config: Config, options: PartOptions): Promise<NodePartResult> {
  const x = config.node.name;
  try {
    const dropped: string[] = [];
    // Every slot of this node in this database (also those of peers no longer in the config).
    const slots = await client.query<{ slot_name: string }>(
      `SELECT slot_name FROM pg_replication_slots WHERE database = current_database() AND starts_with(slot_name, $1) ORDER BY 1`,
      [`pgbidi_${x}_to_`],
    );
    for (const s of slots.rows) if ((await dropSlot(client, s.slot_name, options.dropTimeoutMs)) === 'dropped') dropped.push(`slot ${s.slot_name}`);
    for (const peer of config.peers) {
      const origin = originName(peer.name);
      if ((await dropOrigin(client, origin, [applicationName(peer.name, x)], options.dropTimeoutMs)) === 'dropped') dropped.push(`origin ${origin}`);
    }
    // A bounded wait for the locks DROP SCHEMA needs: a long transaction on a replicated table would
    // otherwise hold part here without a word.
    await client.query(`SET lock_timeout = '30s'`);
    await client.query('BEGIN');
    const pub = await client.query('SELECT 1 FROM pg_publication WHERE pubname = $1', [config.replication.publication]);
    if (pub.rowCount) {
      await client.query(`DROP PUBLICATION ${quoteIdent(config.replication.publication)}`);
      dropped.push(`publication ${config.replication.publication}`);
    }
    const schema = await client.query('SELECT 1 FROM pg_namespace WHERE nspname = $1', [METADATA_SCHEMA]);
    if (schema.rowCount) {
      const triggers = await client.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM pg_trigger WHERE tgfoid = to_regprocedure('${METADATA_SCHEMA}.record_tombstone()')`,
      );
      // CASCADE takes the tombstone triggers on the replicated tables with it (they call its function).
      await client.query(`DROP SCHEMA ${METADATA_SCHEMA} CASCADE`);
      dropped.push(`schema ${METADATA_SCHEMA} (with ${triggers.rows[0]?.n ?? 0} tombstone triggers)`);
    }
    await client.query('COMMIT');
    return { node: x, dropped, originProgress: null, error: null };
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    return { node: x, dropped: [], originProgress: null, error: `failed: ${message(err)}; run part again` };
  }
}

interface Lagging {
  readonly slot: string;
  readonly target: string;
  readonly confirmed: string | null;
}

/**
 * Waits until the given slots on this node have confirmed its WAL position at the start (the agents
 * confirm only what they committed: link/progress-tracker.ts). Returns the slots that did not get
 * there in time; a missing slot has nothing to wait for.
 */
async function waitConfirmed(client: pg.Client, slots: readonly string[], timeoutMs: number): Promise<Lagging[]> {
  const target = (await client.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn')).rows[0]?.lsn ?? '0/0';
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await client.query<{ slot: string; confirmed: string | null }>(
      `SELECT slot_name::text AS slot, confirmed_flush_lsn::text AS confirmed FROM pg_replication_slots
        WHERE slot_name = ANY($1::text[]) AND coalesce(confirmed_flush_lsn < $2::pg_lsn, true)`,
      [slots, target],
    );
    const lagging = r.rows.map((x) => ({ slot: x.slot, target, confirmed: x.confirmed }));
    if (lagging.length === 0 || Date.now() > deadline) return lagging;
    await sleep(POLL_MS);
  }
}

/** Drops a slot, terminating the walsender that streams it first. */
export async function dropSlot(client: pg.Client, slot: string, timeoutMs = 30_000): Promise<'dropped' | 'absent'> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await client.query<{ pid: number | null }>('SELECT active_pid AS pid FROM pg_replication_slots WHERE slot_name = $1', [slot]);
    const row = r.rows[0];
    if (!row) return 'absent';
    if (row.pid !== null) await client.query('SELECT pg_terminate_backend($1)', [row.pid]);
    try {
      await client.query('SELECT pg_drop_replication_slot($1)', [slot]);
      return 'dropped';
    } catch (err) {
      // 55006 object_in_use: the walsender has not exited yet, or the agent reconnected.
      if (sqlState(err) !== '55006' || Date.now() > deadline) throw err;
      await sleep(POLL_MS);
    }
  }
}

/** Drops a replication origin, terminating the apply sessions (by application name) that hold it. */
export async function dropOrigin(client: pg.Client, origin: string, holders: readonly string[], timeoutMs = 30_000): Promise<'dropped' | 'absent'> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await client.query('SELECT 1 FROM pg_replication_origin WHERE roname = $1', [origin]);
    if (!r.rowCount) return 'absent';
    await terminate(client, holders);
    try {
      await client.query('SELECT pg_replication_origin_drop($1)', [origin]);
      return 'dropped';
    } catch (err) {
      if (sqlState(err) !== '55006' || Date.now() > deadline) throw err;
      await sleep(POLL_MS);
    }
  }
}

/** Ends the sessions with these application names (the agents' apply sessions). */
async function terminate(client: pg.Client, applicationNames: readonly string[]): Promise<void> {
  await client.query(
    `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
      WHERE application_name = ANY($1::text[]) AND backend_type = 'client backend' AND pid <> pg_backend_pid()`,
    [applicationNames],
  );
}

function unreachable(node: string, x: string, err: Error): NodePartResult {
  return {
    node,
    dropped: [],
    originProgress: null,
    error:
      `did not answer (${err.message}): slot ${slotName(node, x)} and origin ${originName(x)} may be left there; ` +
      `run 'pgbidi part --config <${node}'s config> --node ${x}' when it is back`,
  };
}

function connect(dsn: string): Promise<pg.Client | Error> {
  return tryConnect(dsn, 'pgbidi_part');
}

async function connectAll(nodes: readonly PeerConfig[]): Promise<Map<string, pg.Client | Error>> {
  const clients = await Promise.all(nodes.map((n) => connect(n.dsn)));
  return new Map(nodes.map((n, i) => [n.name, clients[i] as pg.Client | Error]));
}

async function closeAll(clients: Iterable<pg.Client | Error>): Promise<void> {
  await Promise.all([...clients].filter((c): c is pg.Client => !(c instanceof Error)).map((c) => c.end().catch(() => undefined)));
}

function message(err: unknown): string {
  return redactedMessage(err);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
