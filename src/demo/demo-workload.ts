/**
 * The demo's workload: per node one writer on keys that only that node writes (no conflicts), and a
 * race maker that, on purpose, writes the same key of a small shared key space on two nodes at the
 * same instant, before either change can replicate. Which conflict each race produces on the
 * receiving side:
 *
 *   race            node A              node B              conflicts reported by the apply side
 *   insert_insert   INSERT k            INSERT k            insert_exists (both directions; LWW picks one)
 *   update_update   UPDATE k            UPDATE k            update_origin_differs (where the local row is newer)
 *   update_delete   UPDATE k            DELETE k            update_deleted / update_missing where k is gone,
 *                                                           delete_origin_differs where the update is newer
 *   delete_delete   DELETE k            DELETE k            delete_missing (both directions)
 *
 * Which statement of a race commits last is up to the scheduler, on purpose: in update_delete both
 * orders happen, and last-update-wins must bring every node to the same row (or to no row) in both.
 *
 * A key is only raced again once its last race had time to replicate (SETTLE_MS), so that the
 * kind of race matches the key's state on every node; a slow group just yields other conflicts.
 * Every statement is valid in every state (upserts, updates and deletes of missing rows are no-ops
 * locally), so the workload itself never fails on a conflict.
 */
import pg from 'pg';
import { setTimeout as sleep } from 'node:timers/promises';
import { assertNever } from '../util/assert-never.js';
import { errorMessage } from '../util/error-message.js';

export const DEMO_DATABASE = 'demo';

/** A replicated demo table and the SQL expression that names one row (for the divergence report). */
export interface DemoTable {
  readonly name: string;
  readonly keyExpression: string;
}

export const DEMO_TABLES: readonly DemoTable[] = [
  { name: 'counters', keyExpression: "'id=' || id" },
  { name: 'events', keyExpression: "'node=' || node || ' seq=' || seq" },
];

/** Run on every node before setup; the same schema everywhere, as pgbidi requires. */
export const DEMO_SCHEMA_SQL: readonly string[] = [
  `CREATE TABLE public.counters (
     id int PRIMARY KEY,
     value bigint NOT NULL,
     written_by text NOT NULL,
     written_at timestamptz NOT NULL DEFAULT clock_timestamp())`,
  `CREATE TABLE public.events (
     node text NOT NULL,
     seq bigint NOT NULL,
     amount int NOT NULL,
     written_at timestamptz NOT NULL DEFAULT clock_timestamp(),
     PRIMARY KEY (node, seq))`,
];

/** Size of the shared key space the races write (counters.id 1..DEMO_HOT_KEYS). */
export const DEMO_HOT_KEYS = 16;

export const RACE_KINDS = ['insert_insert', 'update_update', 'update_delete', 'delete_delete'] as const;
export type RaceKind = (typeof RACE_KINDS)[number];

export interface WorkloadOptions {
  /** Node name → connection string of its demo database. */
  readonly nodes: ReadonlyMap<string, string>;
  /** Rows written per second per node on keys only that node writes. */
  readonly writeRate: number;
  /** Races per second across the group, each on one shared key written by two nodes at once. */
  readonly conflictRate: number;
  /** Size of the shared key space (counters.id 1..hotKeys). */
  readonly hotKeys?: number;
  /** Injected for tests; Math.random otherwise. */
  readonly random?: () => number;
}

export interface WorkloadStats {
  /** Rows inserted or updated by the per-node writers. */
  readonly writes: number;
  readonly races: Readonly<Record<RaceKind, number>>;
  /** Races not started because every shared key was still settling. */
  readonly racesSkipped: number;
  readonly errors: number;
  readonly lastError: string | null;
}

/** Time for a race's changes to reach every node before the same key is raced again. */
const SETTLE_MS = 1500;
/** Fastest writer tick; higher rates write several rows per statement instead. */
const MIN_TICK_MS = 20;
/** A writer that fell behind (slow node) skips ahead instead of bursting. */
const MAX_BACKLOG_ROWS = 1000;
/** Share of writer ticks that also update one of the node's own earlier rows. */
const UPDATE_SHARE = 0.3;

type Statement = { readonly text: string; readonly values: unknown[] };

interface HotKey {
  readonly id: number;
  present: boolean;
  lastRaceAt: number;
}

export class DemoWorkload {
  private readonly random: () => number;
  private readonly writerClients = new Map<string, pg.Client>();
  private readonly raceClients = new Map<string, pg.Client>();
  private readonly hotKeys: HotKey[];
  private readonly loops: Promise<void>[] = [];
  private readonly stopController = new AbortController();
  private writes = 0;
  private readonly races: Record<RaceKind, number> = { insert_insert: 0, update_update: 0, update_delete: 0, delete_delete: 0 };
  private racesSkipped = 0;
  private errors = 0;
  private lastError: string | null = null;
  private raceSeq = 0;

  private constructor(private readonly options: WorkloadOptions) {
    this.random = options.random ?? Math.random;
    const count = options.hotKeys ?? DEMO_HOT_KEYS;
    this.hotKeys = Array.from({ length: count }, (_, i) => ({ id: i + 1, present: false, lastRaceAt: 0 }));
  }

  /** Connects two sessions per node (writer and race maker) and starts the loops. */
  static async start(options: WorkloadOptions): Promise<DemoWorkload> {
    const workload = new DemoWorkload(options);
    try {
      for (const [node, dsn] of options.nodes) {
        workload.writerClients.set(node, await connect(dsn, `pgbidi_demo_writer_${node}`));
        workload.raceClients.set(node, await connect(dsn, `pgbidi_demo_races_${node}`));
      }
    } catch (err) {
      await workload.closeClients();
      throw err;
    }
    if (options.writeRate > 0) {
      for (const [node, client] of workload.writerClients) workload.loops.push(workload.writerLoop(node, client));
    }
    if (options.conflictRate > 0 && options.nodes.size >= 2) workload.loops.push(workload.raceLoop());
    return workload;
  }

  stats(): WorkloadStats {
    return {
      writes: this.writes,
      races: { ...this.races },
      racesSkipped: this.racesSkipped,
      errors: this.errors,
      lastError: this.lastError,
    };
  }

  /** Stops the loops after their current statement and closes every session. */
  async stop(): Promise<void> {
    this.stopController.abort();
    await Promise.all(this.loops);
    await this.closeClients();
  }

  private get stopping(): boolean {
    return this.stopController.signal.aborted;
  }

  private async pause(ms: number): Promise<void> {
    if (ms <= 0 || this.stopping) return;
    await sleep(ms, undefined, { signal: this.stopController.signal }).catch(() => undefined);
  }

  private async writerLoop(node: string, client: pg.Client): Promise<void> {
    const rate = this.options.writeRate;
    const tickMs = Math.max(MIN_TICK_MS, 1000 / rate);
    const started = Date.now();
    let written = 0;
    let seq = 0;
    while (!this.stopping) {
      let due = Math.floor(((Date.now() - started) / 1000) * rate) - written;
      if (due > MAX_BACKLOG_ROWS) {
        written += due - MAX_BACKLOG_ROWS;
        due = MAX_BACKLOG_ROWS;
      }
      if (due > 0) {
        const first = seq + 1;
        seq += due;
        written += due;
        const ok = await this.execute(client, insertEvents(node, first, due));
        if (ok) this.writes += due;
        if (ok && this.random() < UPDATE_SHARE) {
          const target = 1 + Math.floor(this.random() * seq);
          if (await this.execute(client, updateEvent(node, target))) this.writes += 1;
        }
      }
      await this.pause(tickMs);
    }
  }

  private async raceLoop(): Promise<void> {
    const intervalMs = 1000 / this.options.conflictRate;
    let next = Date.now();
    while (!this.stopping) {
      await this.race();
      next += intervalMs;
      const now = Date.now();
      if (next < now - 1000) next = now; // fell behind: do not burst races to catch up
      await this.pause(next - now);
    }
  }

  /** One race: the same shared key written on two distinct nodes at the same instant. */
  private async race(): Promise<void> {
    const now = Date.now();
    const settled = this.hotKeys.filter((k) => now - k.lastRaceAt >= SETTLE_MS);
    const key = this.pick(settled);
    const nodes = [...this.raceClients.keys()];
    const a = this.pick(nodes);
    const b = this.pick(nodes.filter((n) => n !== a));
    const clientA = a === undefined ? undefined : this.raceClients.get(a);
    const clientB = b === undefined ? undefined : this.raceClients.get(b);
    if (!key || a === undefined || b === undefined || !clientA || !clientB) {
      this.racesSkipped += 1;
      return;
    }
    const kind = this.raceKindFor(key);
    this.raceSeq += 1;
    const value = this.raceSeq;
    const [first, second] = raceStatements(kind, key.id, value, a, b);
    key.lastRaceAt = now;
    // Both statements are sent before either result is awaited: each commits on its own node
    // before the other's change can arrive through replication, which is what makes it a race.
    await Promise.all([this.execute(clientA, first), this.execute(clientB, second)]);
    this.races[kind] += 1;
    key.present = kind === 'insert_insert' || kind === 'update_update';
  }

  private raceKindFor(key: HotKey): RaceKind {
    if (!key.present) return 'insert_insert';
    const r = this.random();
    if (r < 0.5) return 'update_update';
    if (r < 0.75) return 'update_delete';
    return 'delete_delete';
  }

  private pick<T>(items: readonly T[]): T | undefined {
    return items[Math.floor(this.random() * items.length)];
  }

  /** Runs one statement; failures are counted, not thrown, so one bad moment does not end the demo. */
  private async execute(client: pg.Client, statement: Statement): Promise<boolean> {
    try {
      await client.query(statement.text, statement.values);
      return true;
    } catch (err) {
      this.errors += 1;
      this.lastError = errorMessage(err);
      return false;
    }
  }

  private async closeClients(): Promise<void> {
    const clients = [...this.writerClients.values(), ...this.raceClients.values()];
    this.writerClients.clear();
    this.raceClients.clear();
    await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
  }
}

async function connect(dsn: string, applicationName: string): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: dsn, application_name: applicationName });
  // A server stopped under the workload must fail the next query, not crash the process.
  client.on('error', () => undefined);
  await client.connect();
  return client;
}

function insertEvents(node: string, firstSeq: number, count: number): Statement {
  return {
    text: 'INSERT INTO public.events (node, seq, amount) ' + 'SELECT $1, s, (s % 100)::int FROM generate_series($2::bigint, $3::bigint) AS s',
    values: [node, firstSeq, firstSeq + count - 1],
  };
}

function updateEvent(node: string, seq: number): Statement {
  return {
    text: 'UPDATE public.events SET amount = amount + 1, written_at = clock_timestamp() WHERE node = $1 AND seq = $2',
    values: [node, seq],
  };
}

function upsertCounter(id: number, value: number, node: string): Statement {
  return {
    text:
      'INSERT INTO public.counters (id, value, written_by) VALUES ($1, $2, $3) ' +
      'ON CONFLICT (id) DO UPDATE SET value = EXCLUDED.value, written_by = EXCLUDED.written_by, written_at = clock_timestamp()',
    values: [id, value, node],
  };
}

function updateCounter(id: number, value: number, node: string): Statement {
  return {
    text: 'UPDATE public.counters SET value = value + $2, written_by = $3, written_at = clock_timestamp() WHERE id = $1',
    values: [id, value, node],
  };
}

function deleteCounter(id: number): Statement {
  return { text: 'DELETE FROM public.counters WHERE id = $1', values: [id] };
}

/** The two statements of a race, for node a and node b. */
function raceStatements(kind: RaceKind, id: number, value: number, a: string, b: string): [Statement, Statement] {
  switch (kind) {
    case 'insert_insert':
      return [upsertCounter(id, value, a), upsertCounter(id, -value, b)];
    case 'update_update':
      return [updateCounter(id, value, a), updateCounter(id, -value, b)];
    case 'update_delete':
      return [updateCounter(id, value, a), deleteCounter(id)];
    case 'delete_delete':
      return [deleteCounter(id), deleteCounter(id)];
    default:
      return assertNever(kind);
  }
}
