import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { stringify } from 'yaml';
import { afterAll, describe, expect, it } from 'vitest';
import type { LocalCluster } from '../src/testbed/local-cluster.js';
import { AgentProcess } from './support/agent-process.js';
import { availableServerVersions } from './support/pg-versions.js';
import { eventually, sleep, useCluster } from './support/cluster-fixture.js';

/**
 * Exactly-once, in-order apply of many small transactions while the applying agent is SIGKILLed.
 *
 * Node a takes a pgbench -N like load: WRITERS connections, one statement (one transaction) per
 * call: one event row; one event row and a counter update; or two event rows. b's agent runs as a
 * process and is killed at random moments: while it streams, 50-500 ms after a restart once it
 * works through a backlog of thousands of transactions, and while it starts. Afterwards b must hold
 * every remote transaction exactly once, each as its own local transaction, committed in a's
 * commit order and with a's commit timestamp.
 *
 * Commit order is read from the WAL: a probe slot (pgoutput, a publication of `events` only) on each
 * node, created before the first write and peeked at the end, lists the transactions in the order of
 * their commit records. a's commit timestamps alone do not give a's commit order: PostgreSQL takes
 * the timestamp before it inserts the commit record, so two concurrent commits can carry timestamps
 * in the opposite order of their commit records (the test prints how often that happened on a; it
 * does happen under this load).
 *
 * Why a broken apply fails the checks (ids and xids below are per event row, read on both nodes):
 * - lost transaction: its ids are missing on b (and the catch-up wait times out first);
 * - applied twice (origin progress not durable with the data, so a restart re-applies): its ids
 *   appear twice on b (count <> count distinct), and its a-xid maps to two b-xids;
 * - split (part of a remote transaction durable before a crash, the rest applied again or not):
 *   its a-xid maps to two b-xids, or ids are missing;
 * - merged (several remote transactions in one local transaction): one b-xid holds several a-xids;
 *   merged through savepoints instead, the sub-xids differ but share the parent's commit timestamp,
 *   so at least one of them differs from its own a commit timestamp (compared per row, exactly);
 * - out of order (T2 committed on b before T1, T1 committed first on a): in b's commit-record order,
 *   and in b's xid order (one apply session per peer, an xid is assigned at a transaction's first
 *   write), T2's rank in a's commit order comes before T1's smaller rank, so the ranks are not
 *   strictly increasing; the commit timestamp sequence in b's xid order then differs from the one in
 *   a's commit order at that position.
 */

const WRITERS = 4;
/**
 * Transactions per second over all writers (throttled). The apply, stopped for much of the kill
 * schedule, falls behind by thousands, and catches up within CATCH_UP_TIMEOUT_MS.
 */
const WRITE_RATE = 400;
const COUNTERS = 300;
const MIN_WRITE_MS = 12_000;
const CATCH_UP_TIMEOUT_MS = 120_000;
/** Each cycle kills the agent while streaming and while catching up; every other cycle also while it starts. */
const KILL_CYCLES = 4;
const EXPECTED_KILLS = KILL_CYCLES * 2 + Math.floor(KILL_CYCLES / 2);
const MIN_TRANSACTIONS = 3000;
const PROBE = 'eo_order_probe';
const ID_STRIDE = 1_000_000_000;

type KillKind = 'streaming' | 'catching-up' | 'starting';
type Kill = { kind: KillKind; msAfterStart: number; backlogEvents: number };

type EventRow = { id: string; xid: string; ts: string };

/** Every event row with the xid that wrote it and that transaction's commit time (exact microseconds since the Unix epoch). */
function eventRows(c: LocalCluster, node: string): Promise<EventRow[]> {
  return c.query<EventRow>(
    node,
    `SELECT id::text AS id, xmin::text AS xid,
            (extract(epoch FROM pg_xact_commit_timestamp(xmin)) * 1000000)::bigint::text AS ts
       FROM events`,
  );
}

/** A publication of `events` and a pgoutput slot on `node`, to read its commit order later. */
async function createProbe(c: LocalCluster, node: string): Promise<void> {
  // The slot after the publication: PostgreSQL 15 cannot decode a publication younger than the slot.
  await c.query(node, `CREATE PUBLICATION ${PROBE} FOR TABLE events`);
  await c.query(node, `SELECT pg_create_logical_replication_slot('${PROBE}', 'pgoutput')`);
}

/** The xids of the transactions that wrote `events` on `node`, in the order of their commit records. */
async function commitOrder(c: LocalCluster, node: string): Promise<string[]> {
  const rows = await c.query<{ xid: string }>(
    node,
    `SELECT xid::text AS xid
       FROM pg_logical_slot_peek_binary_changes('${PROBE}', NULL, NULL, 'proto_version', '1', 'publication_names', '${PROBE}')
            WITH ORDINALITY AS m(lsn, xid, data, ord)
      WHERE get_byte(data, 0) = ascii('C')
      ORDER BY ord`,
  );
  return rows.map((r) => r.xid);
}

/** Runs `write(seq)` at `perSecond` until `stop()` is true. */
async function paced(perSecond: number, stop: () => boolean, write: (seq: number) => Promise<void>): Promise<void> {
  const started = Date.now();
  for (let seq = 0; !stop(); seq++) {
    const wait = started + (seq * 1000) / perSecond - Date.now();
    if (wait > 0) await sleep(wait);
    await write(seq);
  }
}

function random(min: number, max: number): number {
  return min + Math.random() * (max - min);
}

function addTo(map: Map<string, Set<string>>, key: string, value: string): void {
  const set = map.get(key);
  if (set) set.add(value);
  else map.set(key, new Set([value]));
}

function firstFew<T>(values: Iterable<T>, n = 5): T[] {
  const out: T[] = [];
  for (const v of values) {
    if (out.length === n) break;
    out.push(v);
  }
  return out;
}

/** Positions where `ranks` does not strictly increase, described with `label`. */
function notIncreasing(ranks: readonly number[], label: (i: number) => string): string[] {
  const out: string[] = [];
  for (let i = 1; i < ranks.length; i++) if (!((ranks[i - 1] ?? -1) < (ranks[i] ?? -1))) out.push(label(i));
  return out;
}

function compareXids(x: string, y: string): number {
  const a = BigInt(x);
  const b = BigInt(y);
  return a < b ? -1 : a > b ? 1 : 0;
}

describe.each(availableServerVersions())('exactly-once, in-order apply of small transactions across SIGKILLs on $label', ({ binDir, label }) => {
  const cluster = useCluster(() => ({
    binDir,
    nodes: ['a', 'b'],
    schema: [
      // No key: an event applied twice is an extra row, not a conflict the agent could resolve away.
      `CREATE TABLE events (id bigint NOT NULL, writer int NOT NULL, payload text)`,
      `ALTER TABLE events REPLICA IDENTITY FULL`,
      `CREATE TABLE counters (id int PRIMARY KEY, n bigint NOT NULL)`,
      `INSERT INTO counters SELECT g, 0 FROM generate_series(1, ${COUNTERS}) g`,
    ],
  }));
  let dir: string | null = null;
  let agent: AgentProcess | null = null;
  let observer: pg.Client | null = null;
  let stopWriting = false;
  afterAll(async () => {
    stopWriting = true;
    await agent?.kill9();
    await observer?.end().catch(() => undefined);
    if (dir !== null) rmSync(dir, { recursive: true, force: true });
  });

  it(`applies each small transaction once, in commit order, while the agent is SIGKILLed ${EXPECTED_KILLS} times`, { timeout: 240_000 }, async () => {
    const c = cluster.get();
    await c.setupAll();
    await createProbe(c, 'a');
    await createProbe(c, 'b');
    const bClient = new pg.Client({ connectionString: c.dsn('b') });
    observer = bClient;
    await bClient.connect();
    const appliedEvents = async (): Promise<number> => (await bClient.query<{ n: number }>('SELECT count(*)::int AS n FROM events')).rows[0]?.n ?? -1;

    // Made here, not at collection time: a describe block that -t filters out never runs its afterAll.
    dir = mkdtempSync(join(tmpdir(), 'pgbidi-eos-'));
    writeFileSync(join(dir, 'b.yaml'), stringify({ ...c.rawConfig('b', '127.0.0.1:0'), log: { level: 'warn' } }));
    const b = new AgentProcess(join(dir, 'b.yaml'));
    agent = b;
    b.start();

    // ---- the load on a ----
    let eventsWritten = 0;
    let transactionsWritten = 0;
    const writing = Promise.all(
      Array.from({ length: WRITERS }, async (_, w) => {
        const client = new pg.Client({ connectionString: c.dsn('a') });
        await client.connect();
        try {
          await paced(
            WRITE_RATE / WRITERS,
            () => stopWriting,
            async (seq) => {
              const id = (w + 1) * ID_STRIDE + 2 * seq;
              switch (seq % 3) {
                case 0:
                  await client.query('INSERT INTO events VALUES ($1, $2, $3)', [id, w, `event ${id}`]);
                  eventsWritten += 1;
                  break;
                case 1:
                  await client.query('WITH e AS (INSERT INTO events VALUES ($1, $2, $3)) UPDATE counters SET n = n + 1 WHERE id = $4', [
                    id,
                    w,
                    `event ${id}`,
                    1 + Math.floor(Math.random() * COUNTERS),
                  ]);
                  eventsWritten += 1;
                  break;
                default:
                  await client.query('INSERT INTO events VALUES ($1, $2, $3), ($4, $2, $5)', [id, w, `event ${id}`, id + 1, `event ${id + 1}`]);
                  eventsWritten += 2;
              }
              transactionsWritten++;
            },
          );
        } finally {
          await client.end();
        }
      }),
    );
    let writeError: Error | null = null;
    writing.catch((err: unknown) => {
      writeError = err instanceof Error ? err : new Error(String(err)); // rethrown by waitFor, and by `await writing` below
    });
    const writeStarted = Date.now();

    /** `eventually`, failing early when a writer failed, and with the agent's last output lines. */
    const waitFor = (what: string, check: () => Promise<boolean>, timeoutMs: number): Promise<void> =>
      eventually(
        what,
        async () => {
          if (writeError !== null) throw writeError;
          return check();
        },
        timeoutMs,
      ).catch((err: unknown) => {
        throw new Error(`${err instanceof Error ? err.message : String(err)}; agent output:\n${b.output.join('\n')}`);
      });

    // ---- the kill schedule on b ----
    const kills: Kill[] = [];
    const kill = async (kind: KillKind): Promise<void> => {
      const msAfterStart = b.msSinceStart;
      await b.kill9();
      kills.push({ kind, msAfterStart, backlogEvents: eventsWritten - (await appliedEvents()) });
    };
    const applyingAgain = async (what: string): Promise<void> => {
      const before = await appliedEvents();
      await waitFor(what, async () => (await appliedEvents()) > before, 30_000);
    };
    for (let cycle = 0; cycle < KILL_CYCLES; cycle++) {
      await applyingAgain('b to apply after its restart');
      await sleep(random(200, 600));
      await kill('streaming');
      await sleep(random(700, 1500)); // a backlog builds
      b.start();
      await applyingAgain('b to start on its backlog');
      await sleep(random(50, 500));
      await kill('catching-up');
      b.start();
      if (cycle % 2 === 1) {
        await sleep(random(20, 400)); // connecting, taking its origin, starting to stream
        await kill('starting');
        b.start();
      }
    }
    await sleep(Math.max(0, MIN_WRITE_MS - (Date.now() - writeStarted)));
    stopWriting = true;
    await writing;
    const writeMs = Date.now() - writeStarted;
    const [afterWrites] = await c.query<{ lsn: string }>('a', 'SELECT pg_current_wal_lsn()::text AS lsn');

    const catchUpStarted = Date.now();
    // At least as many rows, so that a duplicating apply fails the checks below instead of this wait.
    await waitFor('b to apply every event', async () => (await appliedEvents()) >= eventsWritten, CATCH_UP_TIMEOUT_MS);
    const catchUpMs = Date.now() - catchUpStarted;

    // ---- 3. SIGTERM drains and exits 0; from here on nothing changes on b ----
    expect(await b.terminate()).toEqual({ code: 0, signal: null });
    // b's final feedback confirmed everything it applied: the slot on a retains nothing written before.
    const [slot] = await c.query<{ covered: boolean }>(
      'a',
      `SELECT confirmed_flush_lsn >= $1::pg_lsn AS covered FROM pg_replication_slots WHERE slot_name = 'pgbidi_a_to_b'`,
      [afterWrites?.lsn],
    );
    expect(slot).toEqual({ covered: true });
    // Killed each time it was meant to be, and it never exited on its own.
    expect(kills.map((k) => k.kind).filter((k) => k === 'catching-up').length).toBe(KILL_CYCLES);
    expect(b.exits).toEqual([...Array.from({ length: EXPECTED_KILLS }, () => ({ code: null, signal: 'SIGKILL' })), { code: 0, signal: null }]);
    expect(kills.length).toBe(EXPECTED_KILLS);
    expect(transactionsWritten).toBeGreaterThanOrEqual(MIN_TRANSACTIONS);

    // ---- 1. nothing lost, nothing duplicated ----
    const onA = await eventRows(c, 'a');
    const onB = await eventRows(c, 'b');
    const aById = new Map(onA.map((r) => [r.id, r]));
    const bIds = new Set(onB.map((r) => r.id));
    expect(onA.length).toBe(eventsWritten);
    expect(aById.size).toBe(eventsWritten);
    const [bCount] = await c.query<{ n: number; distinct: number }>('b', 'SELECT count(*)::int AS n, count(DISTINCT id)::int AS distinct FROM events');
    expect(bCount).toEqual({ n: eventsWritten, distinct: eventsWritten });
    expect(firstFew(onA.filter((r) => !bIds.has(r.id)).map((r) => r.id))).toEqual([]); // lost on b
    expect(firstFew(onB.filter((r) => !aById.has(r.id)).map((r) => r.id))).toEqual([]); // never written on a
    for (const table of ['events', 'counters']) {
      const ha = await c.tableHash('a', 'public', table);
      expect(await c.tableHash('b', 'public', table)).toEqual(ha);
    }

    // ---- 2. one local transaction per remote transaction, with its commit time, in a's commit order ----
    const remoteOf = new Map<string, Set<string>>(); // b-xid -> the a-xids whose events it wrote
    const localOf = new Map<string, Set<string>>(); // a-xid -> the b-xids that wrote its events
    const wrongTime: string[] = [];
    for (const rb of onB) {
      const ra = aById.get(rb.id);
      if (!ra) continue; // reported above
      if (rb.ts !== ra.ts) wrongTime.push(`event ${rb.id}: a ${ra.ts} b ${rb.ts}`);
      addTo(remoteOf, rb.xid, ra.xid);
      addTo(localOf, ra.xid, rb.xid);
    }
    // Every row committed on b with a's commit timestamp, to the microsecond.
    expect(firstFew(wrongTime)).toEqual([]);
    expect(wrongTime.length).toBe(0);
    // No remote transaction split over (or applied again in) several local ones, none merged with another.
    expect(firstFew([...localOf].filter(([, s]) => s.size > 1).map(([x, s]) => `a ${x} -> b ${[...s].join(',')}`))).toEqual([]);
    expect(firstFew([...remoteOf].filter(([, s]) => s.size > 1).map(([x, s]) => `b ${x} <- a ${[...s].join(',')}`))).toEqual([]);
    const remoteXids = new Set(onA.map((r) => r.xid));
    expect(remoteXids.size).toBe(transactionsWritten);
    expect(localOf.size).toBe(remoteXids.size);
    expect(remoteOf.size).toBe(remoteXids.size);

    const aOrder = await commitOrder(c, 'a');
    const rank = new Map(aOrder.map((x, i) => [x, i]));
    expect(rank.size).toBe(aOrder.length);
    expect(firstFew([...remoteXids].filter((x) => !rank.has(x)))).toEqual([]);
    const remoteRank = (bXid: string): number => rank.get([...(remoteOf.get(bXid) ?? [])][0] ?? '') ?? -1;
    // b's commit-record order.
    const bOrder = (await commitOrder(c, 'b')).filter((x) => remoteOf.has(x));
    expect(bOrder.length).toBe(remoteOf.size);
    const bCommitOutOfOrder = notIncreasing(bOrder.map(remoteRank), (i) => `b committed ${bOrder[i - 1]} before ${bOrder[i]}`);
    expect(firstFew(bCommitOutOfOrder)).toEqual([]);
    // b's xid order: one apply session per peer, and a transaction's xid is assigned at its first write.
    const bXids = [...remoteOf.keys()].sort(compareXids);
    const bXidOutOfOrder = notIncreasing(bXids.map(remoteRank), (i) => `b-xid ${bXids[i - 1]} before ${bXids[i]}`);
    expect(firstFew(bXidOutOfOrder)).toEqual([]);
    expect(bXidOutOfOrder.length).toBe(0);
    // The same in commit timestamps: ordered by b-xid, the rows' commit timestamps on b are the sequence
    // of a's commit timestamps in a's commit order. (Not merely non-decreasing: a's own sequence is not.)
    const tsOnB = new Map(onB.map((r) => [r.xid, r.ts]));
    const tsOnA = new Map(onA.map((r) => [r.xid, r.ts]));
    const tsByBXid = bXids.map((x) => tsOnB.get(x) ?? 'none');
    const tsByACommit = aOrder.filter((x) => remoteXids.has(x)).map((x) => tsOnA.get(x) ?? 'none');
    expect(tsByBXid.length).toBe(tsByACommit.length);
    const firstDifference = tsByBXid.findIndex((ts, i) => ts !== tsByACommit[i]);
    expect(firstDifference).toBe(-1);
    let decreasingOnA = 0;
    for (let i = 1; i < tsByACommit.length; i++) if (BigInt(tsByACommit[i] ?? 0) < BigInt(tsByACommit[i - 1] ?? 0)) decreasingOnA++;

    for (const node of ['a', 'b']) await c.query(node, `SELECT pg_drop_replication_slot('${PROBE}')`);
    process.stdout.write(
      `[${label}] wrote ${transactionsWritten} transactions (${eventsWritten} events) in ${writeMs} ms;` +
        ` ${kills.length} SIGKILLs (${kills.map((k) => `${k.kind} ${k.msAfterStart} ms after start, ${k.backlogEvents} events behind`).join('; ')});` +
        ` caught up ${catchUpMs} ms after the last write; a committed ${decreasingOnA} transactions with a timestamp older than the previous commit's\n`,
    );
  });
});
