/**
 * Scrape-time metrics read from the peers: how much of a peer's WAL this node has not confirmed yet,
 * and the state of the slot this node consumes on the peer (pgbidi_<peer>_to_<self>).
 *
 * On each /metrics scrape every gauge's collect() hook awaits one shared read of all peers (concurrent
 * hooks and the scrape of the second registry within REUSE_MS share it). Each peer is read with one
 * query over a pooled connection (at most one per peer, closed when idle), bounded by a timeout; a
 * failure never fails the scrape: it increments pgbidi_scrape_errors_total{peer} and the gauges keep
 * the values of the last successful read.
 *
 * Series (every label combination starts at 0, except the safe WAL size, which is absent until known):
 *   pgbidi_apply_lag_bytes{peer}                        peer pg_current_wal_lsn() − our slot's confirmed_flush_lsn
 *   pgbidi_slot_active{peer,slot}                       1 when a walsender streams the slot
 *   pgbidi_slot_retained_wal_bytes{peer,slot}           peer pg_current_wal_lsn() − the slot's restart_lsn
 *   pgbidi_slot_safe_wal_size_bytes{peer,slot}          bytes writable before the slot is lost; absent when
 *                                                       max_slot_wal_keep_size is unlimited (or the slot is lost)
 *   pgbidi_slot_wal_status{peer,slot,wal_status}        state set: 1 for the slot's current wal_status
 *   pgbidi_scrape_errors_total{peer}                    failed reads (peer = this node for its own slots)
 * A slot missing on the peer reads as inactive, every wal_status 0, and the byte series absent.
 *
 * And the slots on this node that the peers consume (pgbidi_<self>_to_<peer>), so that the WAL this
 * node keeps for a peer whose agent is down is still reported (that agent reports it no more):
 *   pgbidi_local_slot_active{peer,slot}                 1 when the peer's walsender streams it
 *   pgbidi_local_slot_retained_wal_bytes{peer,slot}     our pg_current_wal_lsn() − the slot's restart_lsn
 *   pgbidi_local_slot_wal_status{peer,slot,wal_status}  state set, as for the peer's slot
 */
import pg from 'pg';
import { agentConfig } from '../util/agent-client.js';
import { Counter, Gauge } from 'prom-client';
import type { Registry } from 'prom-client';
import { redactedMessage } from '../config/redact.js';
import { slotName } from '../node/names.js';
import { parseLsn } from '../protocol/lsn.js';
import type { Logger } from './logger.js';

/** PostgreSQL's pg_replication_slots.wal_status values (PG 13+). */
export const WAL_STATUSES = ['reserved', 'extended', 'unreserved', 'lost'] as const;
export type WalStatus = (typeof WAL_STATUSES)[number];

/** Two scrapes (text and OpenMetrics, or two Prometheus servers) this close share one read. */
const REUSE_MS = 1000;
const DEFAULT_TIMEOUT_MS = 3000;

export interface PeerTarget {
  readonly name: string;
  readonly dsn: string;
}

export interface PeerCollectorsOptions {
  readonly node: string;
  readonly peers: readonly PeerTarget[];
  /** Both registries of Metrics: the gauges are registered on each. */
  readonly registries: readonly Registry[];
  readonly timeoutMs?: number;
  /** This node's connection string: its own slots are read too (the local_slot series). */
  readonly localDsn?: string;
  readonly log?: Logger;
  readonly clock?: () => number;
}

/** One read of a peer, as numbers ready for the gauges. */
export interface PeerSlotReading {
  readonly applyLagBytes: number | null;
  readonly active: boolean;
  readonly retainedWalBytes: number | null;
  readonly safeWalSizeBytes: number | null;
  readonly walStatus: WalStatus | null;
}

interface SlotRow {
  current_lsn: string;
  slot_name: string | null;
  active: boolean | null;
  confirmed_flush_lsn: string | null;
  restart_lsn: string | null;
  wal_status: string | null;
  safe_wal_size: string | null;
}

const SLOT_QUERY = `SELECT pg_current_wal_lsn()::text AS current_lsn, s.slot_name::text AS slot_name, s.active,
       s.confirmed_flush_lsn::text AS confirmed_flush_lsn, s.restart_lsn::text AS restart_lsn,
       s.wal_status, s.safe_wal_size::text AS safe_wal_size
  FROM (VALUES (1)) AS one LEFT JOIN pg_replication_slots s ON s.slot_name = $1`;

/** This node's slots for its peers, one row per slot asked for (absent slots give nulls). */
const LOCAL_SLOTS_QUERY = `SELECT pg_current_wal_lsn()::text AS current_lsn, w.slot AS slot_name, s.active,
       s.confirmed_flush_lsn::text AS confirmed_flush_lsn, s.restart_lsn::text AS restart_lsn,
       s.wal_status, s.safe_wal_size::text AS safe_wal_size
  FROM unnest($1::text[]) AS w(slot) LEFT JOIN pg_replication_slots s ON s.slot_name = w.slot`;

/** Turns the row of SLOT_QUERY into gauge values (pure). */
export function readingFromRow(row: SlotRow): PeerSlotReading {
  const current = parseLsn(row.current_lsn);
  const diff = (lsn: string | null): number | null => (lsn === null ? null : Math.max(0, Number(current - parseLsn(lsn))));
  const status = WAL_STATUSES.find((s) => s === row.wal_status) ?? null;
  return {
    applyLagBytes: diff(row.confirmed_flush_lsn),
    active: row.active === true,
    retainedWalBytes: diff(row.restart_lsn),
    safeWalSizeBytes: row.safe_wal_size === null ? null : Number(row.safe_wal_size),
    walStatus: status,
  };
}

/** The gauges of one slot's state, for the slots on the peers and for this node's own. */
interface SlotGauges {
  readonly active: Gauge<'peer' | 'slot'>;
  readonly retained: Gauge<'peer' | 'slot'>;
  readonly walStatus: Gauge<'peer' | 'slot' | 'wal_status'>;
}

type SlotLabels = { peer: string; slot: string };

function zeroSlot(g: SlotGauges, labels: SlotLabels): void {
  g.active.set(labels, 0);
  g.retained.set(labels, 0);
  for (const wal_status of WAL_STATUSES) g.walStatus.set({ ...labels, wal_status }, 0);
}

function recordSlot(g: SlotGauges, labels: SlotLabels, r: PeerSlotReading): void {
  g.active.set(labels, r.active ? 1 : 0);
  if (r.retainedWalBytes === null) g.retained.remove(labels);
  else g.retained.set(labels, r.retainedWalBytes);
  for (const wal_status of WAL_STATUSES) g.walStatus.set({ ...labels, wal_status }, wal_status === r.walStatus ? 1 : 0);
}

export class PeerCollectors {
  private readonly pools = new Map<string, pg.Pool>();
  private readonly failing = new Set<string>();
  private readonly timeoutMs: number;
  private readonly clock: () => number;
  private inflight: Promise<void> | null = null;
  private lastReadAt = Number.NEGATIVE_INFINITY;
  private closed = false;

  readonly applyLag: Gauge<'peer'>;
  readonly slotActive: Gauge<'peer' | 'slot'>;
  readonly retainedWal: Gauge<'peer' | 'slot'>;
  readonly safeWalSize: Gauge<'peer' | 'slot'>;
  readonly walStatus: Gauge<'peer' | 'slot' | 'wal_status'>;
  readonly scrapeErrors: Counter<'peer'>;
  readonly localSlotActive: Gauge<'peer' | 'slot'>;
  readonly localRetainedWal: Gauge<'peer' | 'slot'>;
  readonly localWalStatus: Gauge<'peer' | 'slot' | 'wal_status'>;

  constructor(private readonly options: PeerCollectorsOptions) {
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.clock = options.clock ?? Date.now;
    const registers = [...options.registries];
    const refresh = (): Promise<void> => this.refresh();
    const collect = async function collect(): Promise<void> {
      await refresh();
    };
    this.applyLag = new Gauge({
      name: 'pgbidi_apply_lag_bytes',
      help: "Peer's current WAL position minus the position this node confirmed on its slot there (read at scrape time).",
      labelNames: ['peer'],
      registers,
      collect,
    });
    this.slotActive = new Gauge({
      name: 'pgbidi_slot_active',
      help: "Whether this node's slot on the peer is being streamed (1) or not (0).",
      labelNames: ['peer', 'slot'],
      registers,
      collect,
    });
    this.retainedWal = new Gauge({
      name: 'pgbidi_slot_retained_wal_bytes',
      help: "WAL the peer keeps for this node's slot: peer's current WAL position minus the slot's restart_lsn.",
      labelNames: ['peer', 'slot'],
      registers,
      collect,
    });
    this.safeWalSize = new Gauge({
      name: 'pgbidi_slot_safe_wal_size_bytes',
      help: "Bytes of WAL the peer can write before this node's slot is invalidated; absent when max_slot_wal_keep_size is unlimited.",
      labelNames: ['peer', 'slot'],
      registers,
      collect,
    });
    this.walStatus = new Gauge({
      name: 'pgbidi_slot_wal_status',
      help: "WAL availability of this node's slot on the peer (pg_replication_slots.wal_status; 1 for the current state).",
      labelNames: ['peer', 'slot', 'wal_status'],
      registers,
      collect,
    });
    this.scrapeErrors = new Counter({
      name: 'pgbidi_scrape_errors_total',
      help: "Failed reads of a peer's WAL position and slot state at scrape time.",
      labelNames: ['peer'],
      registers,
      collect,
    });
    this.localSlotActive = new Gauge({
      name: 'pgbidi_local_slot_active',
      help: 'Whether the peer streams its slot on this node (1) or not (0).',
      labelNames: ['peer', 'slot'],
      registers,
      collect,
    });
    this.localRetainedWal = new Gauge({
      name: 'pgbidi_local_slot_retained_wal_bytes',
      help: "WAL this node keeps for the peer's slot: current WAL position minus the slot's restart_lsn.",
      labelNames: ['peer', 'slot'],
      registers,
      collect,
    });
    this.localWalStatus = new Gauge({
      name: 'pgbidi_local_slot_wal_status',
      help: "WAL availability of the peer's slot on this node (pg_replication_slots.wal_status; 1 for the current state).",
      labelNames: ['peer', 'slot', 'wal_status'],
      registers,
      collect,
    });
    for (const peer of options.peers) {
      if (options.localDsn !== undefined) zeroSlot(this.localSlot, { peer: peer.name, slot: slotName(options.node, peer.name) });
      zeroSlot(this.peerSlot, { peer: peer.name, slot: this.slot(peer.name) });
      this.applyLag.set({ peer: peer.name }, 0);
      this.scrapeErrors.inc({ peer: peer.name }, 0);
    }
  }

  /** Reads every peer now unless a read is running or finished less than REUSE_MS ago. */
  refresh(): Promise<void> {
    if (this.inflight) return this.inflight;
    if (this.closed || this.clock() - this.lastReadAt < REUSE_MS) return Promise.resolve();
    const reads = this.options.peers.map((p) => this.readPeer(p));
    if (this.options.localDsn !== undefined) reads.push(this.readLocal(this.options.localDsn));
    this.inflight = Promise.all(reads).then(() => {
      this.lastReadAt = this.clock();
      this.inflight = null;
    });
    return this.inflight;
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.inflight;
    const pools = [...this.pools.values()];
    this.pools.clear();
    await Promise.all(pools.map((p) => p.end().catch(() => undefined)));
  }

  private slot(peer: string): string {
    return slotName(peer, this.options.node);
  }

  private get peerSlot(): SlotGauges {
    return { active: this.slotActive, retained: this.retainedWal, walStatus: this.walStatus };
  }

  private get localSlot(): SlotGauges {
    return { active: this.localSlotActive, retained: this.localRetainedWal, walStatus: this.localWalStatus };
  }

  private async readPeer(peer: PeerTarget): Promise<void> {
    let reading: PeerSlotReading;
    try {
      reading = await this.query(peer);
    } catch (err) {
      this.readFailed(peer.name, err);
      return;
    }
    this.readAgain(peer.name);
    this.record(peer.name, reading);
  }

  private async readLocal(dsn: string): Promise<void> {
    const self: PeerTarget = { name: this.options.node, dsn };
    const peers = this.options.peers.map((p) => p.name);
    let rows: SlotRow[];
    try {
      rows = (await this.timed(this.pool(self).query<SlotRow>(LOCAL_SLOTS_QUERY, [peers.map((p) => slotName(this.options.node, p))]))).rows;
    } catch (err) {
      this.readFailed(self.name, err);
      return;
    }
    this.readAgain(self.name);
    // Rows are matched by slot name: a join does not keep the order of unnest().
    const bySlot = new Map(rows.map((row) => [row.slot_name, row]));
    for (const peer of peers) {
      const slot = slotName(this.options.node, peer);
      const row = bySlot.get(slot);
      if (row) recordSlot(this.localSlot, { peer, slot }, readingFromRow(row));
    }
  }

  private readAgain(name: string): void {
    if (this.failing.delete(name)) this.options.log?.info({ component: 'peer-collectors', peer: name }, 'slot state readable again');
  }

  private readFailed(name: string, err: unknown): void {
    this.scrapeErrors.inc({ peer: name });
    if (!this.failing.has(name)) {
      this.failing.add(name);
      const message = redactedMessage(err);
      this.options.log?.warn({ component: 'peer-collectors', peer: name, err: { message } }, 'cannot read the slot state for /metrics');
    }
  }

  /** Bounds a read by the timeout. */
  private async timed<T>(read: Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${this.timeoutMs} ms`)), this.timeoutMs);
    });
    try {
      return await Promise.race([read, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  private record(peer: string, r: PeerSlotReading): void {
    const slot = this.slot(peer);
    const labels = { peer, slot };
    if (r.applyLagBytes === null) this.applyLag.remove({ peer });
    else this.applyLag.set({ peer }, r.applyLagBytes);
    recordSlot(this.peerSlot, labels, r);
    if (r.safeWalSizeBytes === null) this.safeWalSize.remove(labels);
    else this.safeWalSize.set(labels, r.safeWalSizeBytes);
  }

  private async query(peer: PeerTarget): Promise<PeerSlotReading> {
    const result = await this.timed(this.pool(peer).query<SlotRow>(SLOT_QUERY, [this.slot(peer.name)]));
    const row = result.rows[0];
    if (!row) throw new Error('the slot query returned no row');
    return readingFromRow(row);
  }

  private pool(peer: PeerTarget): pg.Pool {
    let pool = this.pools.get(peer.name);
    if (!pool) {
      pool = new pg.Pool({
        ...agentConfig({ connectionString: peer.dsn, application_name: `pgbidi_${this.options.node}_metrics` }),
        max: 1,
        idleTimeoutMillis: 30_000,
        allowExitOnIdle: true,
        connectionTimeoutMillis: this.timeoutMs,
        query_timeout: this.timeoutMs,
        statement_timeout: this.timeoutMs,
      });
      // An idle connection that the peer drops emits 'error' on the pool: the next read reconnects.
      pool.on('error', () => undefined);
      this.pools.set(peer.name, pool);
    }
    return pool;
  }
}
