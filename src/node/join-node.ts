import type pg from 'pg';
import type { Config, PeerConfig } from '../config/config-schema.js';
import { formatLsn, maxLsn, parseLsn } from '../protocol/lsn.js';
import type { Lsn } from '../protocol/lsn.js';
import { decodePgoutput } from '../protocol/pgoutput-decoder.js';
import { agentClient } from '../util/agent-client.js';
import type { AgentClientConfig } from '../util/agent-client.js';
import { qualifiedName, quoteIdent, quoteLiteral } from '../util/sql.js';
import type { JoinProgress } from './join-progress.js';
import { METADATA_SCHEMA, originName, slotName } from './names.js';
import { setupNode } from './setup-node.js';
import { TARGET_SESSION_SQL, copyTable, originLock } from './snapshot-copy.js';
import { COPY_SESSION_SQL, SESSION_LIMITS_OFF } from '../util/session-limits.js';
import type { CopyTable } from './snapshot-copy.js';
import { resolveTables } from './table-selection.js';
import { errorMessage } from '../util/error-message.js';

/**
 * `pgbidi join`: fills a new node (this config's node, "c") from a donor peer while every node keeps
 * taking writes, and leaves c's origins where its links must start.
 *
 *   1. setup of c (schema, publication, origins, c's slots); c's tables must be empty
 *   2. on every peer: the origin for c, and c's slot (pgbidi_<peer>_to_c) created afresh
 *   3. every other peer b: c's slot there starts at Lb; wait until the donor has applied b up to Lb
 *      (b's slot for the donor confirmed ≥ Lb); a temporary probe slot on the donor; the donor's
 *      origin progress for b
 *   4. the donor's slot, created on a replication connection with an exported snapshot at La
 *      (CREATE_REPLICATION_SLOT … (SNAPSHOT 'export')); the copy sessions import it (REPEATABLE READ,
 *      SET TRANSACTION SNAPSHOT); the probe slot decoded up to La names the last change of each b
 *      that the donor applied before La: Pb
 *   5. the copy under that snapshot (tables in parallel), rows and tombstones with their versions
 *   6. c's origin for the donor set to La, for each b to max(Lb, Pb); c's own slots created again
 *   7. pgbidi.join_state = done, in the commit that also flushes every copied row
 *
 * Why nothing is lost or applied twice: the snapshot holds every change the donor made before La
 * and exactly the changes of b the donor applied before La, the last of which is Pb (a commit before
 * La is in the snapshot; pgoutput's Origin message names the remote commit LSN it applied). c's link
 * from the donor starts at La (the donor's slot sends only the donor's own changes); c's link from b
 * starts after Pb, and b's slot for c can send everything after Lb ≤ Pb (the wait in step 3 makes
 * the donor hold every change of b before Lb). A change of b applied on the donor without any row
 * of a published table (every row lost to a newer local version) is not seen by the probe; it
 * arrives again on c and loses there the same way.
 *
 * A join that failed is started again from step 1: the copied rows, tombstones and slots of the
 * first attempt are dropped first (under an origin, so no peer receives the TRUNCATE).
 */

export class JoinError extends Error {
  readonly code = 'PGBIDI_JOIN_FAILED';
  constructor(message: string) {
    super(message);
    this.name = 'JoinError';
  }
}

export interface JoinOptions {
  /** The peer to copy from. */
  readonly donor: string;
  /** Tables copied at the same time (sessions on the donor and on this node). */
  readonly parallel: number;
  /** How long to wait for the donor to catch up with each other peer (step 3). */
  readonly catchUpTimeoutMs: number;
  readonly progress: JoinProgress;
  /** Lines for the operator (steps, waits). */
  readonly say: (line: string) => void;
}

export interface JoinReport {
  readonly alreadyJoined: boolean;
  /** A previous attempt was found unfinished and its copy dropped. */
  readonly restarted: boolean;
  readonly donor: string;
  readonly tables: readonly { table: string; rows: number }[];
  readonly rows: number;
  readonly seconds: number;
  readonly rowsPerSecond: number;
  /** Where each of c's links starts (its origin's progress). */
  readonly startPositions: readonly { peer: string; lsn: string }[];
}

const STATE_TABLE = `${METADATA_SCHEMA}.join_state`;
/** Temporary slot on the donor, gone with the join's session. */
const PROBE_SLOT = 'pgbidi_join_probe';
const TOMBSTONES: CopyTable = { schema: METADATA_SCHEMA, name: 'tombstones', primaryKey: [] };

interface JoinStateRow {
  state: 'copying' | 'done';
  donor: string;
  finished_at: Date | null;
  rows: string | null;
}

/**
 * The join's sessions. node-postgres emits 'error' on a client whose server ends its session while
 * no query runs (an idle limit, pg_terminate_backend, a restart), and Node throws an 'error' event
 * nobody listens to: `pgbidi join` ended on an uncaught exception. Listened to, the join's next
 * statement on that client fails, the join stops like at any failed step (and is run again), and
 * the reason the server gave is kept for its message.
 */
class JoinSessions {
  /** The first error of each session ended (node-postgres adds "Connection terminated unexpectedly"). */
  private readonly lost = new Map<string, string>();

  open(config: AgentClientConfig, what: string): pg.Client {
    const client = agentClient(config);
    client.on('error', (err: Error) => {
      if (!this.lost.has(what)) this.lost.set(what, err.message);
    });
    return client;
  }

  /** The join's failure, with the sessions the servers ended before it. */
  failure(err: unknown): unknown {
    if (this.lost.size === 0) return err;
    const ended = [...this.lost].map(([what, why]) => `${what}: ${why}`).join('; ');
    return new JoinError(`${errorMessage(err)} (sessions ended by the server: ${ended})`);
  }
}

export async function joinNode(config: Config, options: JoinOptions): Promise<JoinReport> {
  const sessions = new JoinSessions();
  try {
    return await join(config, options, sessions);
  } catch (err) {
    throw sessions.failure(err);
  }
}

async function join(config: Config, options: JoinOptions, sessions: JoinSessions): Promise<JoinReport> {
  const self = config.node.name;
  const donor = config.peers.find((p) => p.name === options.donor);
  if (!donor) throw new JoinError(`--from ${options.donor}: not a peer in this config (peers: ${config.peers.map((p) => p.name).join(', ')})`);
  const others = config.peers.filter((p) => p.name !== donor.name);

  const local = sessions.open({ connectionString: config.node.dsn, application_name: 'pgbidi_join' }, `${self}'s join session`);
  await local.connect();
  const peers = new Map<string, pg.Client>();
  try {
    // The TRUNCATE of an unfinished join's copy waits for the tables' locks.
    await local.query(SESSION_LIMITS_OFF.join('; '));
    await local.query(`CREATE SCHEMA IF NOT EXISTS ${METADATA_SCHEMA}`);
    await local.query(`CREATE TABLE IF NOT EXISTS ${STATE_TABLE} (
       singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
       donor text NOT NULL,
       state text NOT NULL CHECK (state IN ('copying', 'done')),
       started_at timestamptz NOT NULL DEFAULT now(),
       finished_at timestamptz,
       rows bigint,
       start_positions jsonb)`);
    const previous = (await local.query<JoinStateRow>(`SELECT state, donor, finished_at, rows::text FROM ${STATE_TABLE}`)).rows[0];
    if (previous?.state === 'done') {
      options.say(`node ${self} already joined from ${previous.donor} at ${previous.finished_at?.toISOString() ?? '?'}; nothing to do`);
      return {
        alreadyJoined: true,
        restarted: false,
        donor: previous.donor,
        tables: [],
        rows: Number(previous.rows ?? 0),
        seconds: 0,
        rowsPerSecond: 0,
        startPositions: [],
      };
    }

    const tables = (await resolveTables(local, config.replication.tables, config.replication.exclude_tables)).map((t): CopyTable => ({
      schema: t.schema,
      name: t.name,
      primaryKey: t.primaryKey,
    }));
    const restarted = previous !== undefined;
    if (!restarted) await requireEmpty(local, tables);

    options.say(`setting up node ${self}`);
    await setupNode(config);
    await local.query(
      `INSERT INTO ${STATE_TABLE} (donor, state) VALUES ($1, 'copying')
       ON CONFLICT (singleton) DO UPDATE SET donor = excluded.donor, state = 'copying', started_at = now(), finished_at = NULL`,
      [donor.name],
    );
    if (restarted) {
      options.say(`an earlier join of ${self} did not finish: dropping its copy and starting again`);
      await dropCopy(local, tables, donor.name);
    }

    for (const p of config.peers) {
      const client = sessions.open({ connectionString: p.dsn, application_name: 'pgbidi_join', connectionTimeoutMillis: 10_000 }, `${p.name}'s join session`);
      await client.connect();
      peers.set(p.name, client);
    }
    const peer = (name: string): pg.Client => peers.get(name) as pg.Client;

    // Step 2: the origin each peer's link from c will use, and c's slots, created afresh.
    for (const p of config.peers) {
      await peer(p.name).query('SELECT pg_replication_origin_create($1) WHERE NOT EXISTS (SELECT 1 FROM pg_replication_origin WHERE roname = $1)', [
        originName(self),
      ]);
      await dropSlotIfIdle(peer(p.name), slotName(p.name, self), p.name);
    }

    // Step 3.
    const lbs = new Map<string, Lsn>();
    for (const b of others) {
      const created = await peer(b.name).query<{ lsn: string }>(`SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')`, [
        slotName(b.name, self),
      ]);
      const lb = parseLsn(created.rows[0]?.lsn ?? '0/0');
      lbs.set(b.name, lb);
      options.say(`slot ${slotName(b.name, self)} created on ${b.name} at ${formatLsn(lb)}; waiting for ${donor.name} to apply ${b.name} up to there`);
      await waitDonorCaughtUp(peer(b.name), slotName(b.name, donor.name), lb, options.catchUpTimeoutMs, b, donor);
    }
    // A probe slot on the donor from here to the snapshot tells exactly which changes of the other
    // peers the snapshot holds (below); the origin progress read now covers those before it.
    if (others.length) {
      await peer(donor.name).query(`SELECT pg_create_logical_replication_slot($1, 'pgoutput', true)`, [PROBE_SLOT]);
    }
    const before = new Map<string, Lsn>();
    for (const b of others) {
      const progress = await peer(donor.name).query<{ lsn: string | null }>('SELECT pg_replication_origin_progress($1, false)::text AS lsn', [
        originName(b.name),
      ]);
      before.set(b.name, parseLsn(progress.rows[0]?.lsn ?? '0/0'));
    }

    // Step 4: the donor's slot and its snapshot, held open until every copy session imported it.
    const starts = new Map<string, Lsn>();
    const replication = sessions.open({ connectionString: donor.dsn, replication: 'database', application_name: 'pgbidi_join' }, `${donor.name}'s walsender`);
    await replication.connect();
    // The exported snapshot lives in this walsender's open transaction, idle until the last copy
    // session imported it: an idle_in_transaction_session_timeout (or transaction_timeout) of the
    // donor's database or role ended the walsender and the snapshot with it. A database walsender
    // runs SQL (protocol-replication.html), so it lifts them as the other long sessions do.
    await replication.query(SESSION_LIMITS_OFF.join('; '));
    const donorSessions: pg.Client[] = [];
    const targetSessions: pg.Client[] = [];
    let snapshotTime: string;
    try {
      const slot = await replication.query<{ consistent_point: string; snapshot_name: string }>(
        `CREATE_REPLICATION_SLOT ${quoteIdent(slotName(donor.name, self))} LOGICAL pgoutput (SNAPSHOT 'export')`,
      );
      const created = slot.rows[0];
      if (!created?.snapshot_name) throw new JoinError(`the donor ${donor.name} exported no snapshot`);
      const la = parseLsn(created.consistent_point);
      starts.set(donor.name, la);
      options.say(`slot ${slotName(donor.name, self)} created on ${donor.name} at ${created.consistent_point}, snapshot ${created.snapshot_name}`);
      const workers = Math.max(1, Math.min(options.parallel, tables.length + 1));
      for (let i = 0; i < workers; i++) {
        const d = sessions.open({ connectionString: donor.dsn, application_name: 'pgbidi_join_copy' }, `${donor.name}'s copy session ${i + 1}`);
        donorSessions.push(d);
        await d.connect();
        // The snapshot's transaction lasts the join.
        await d.query(COPY_SESSION_SQL.join('; '));
        await d.query('BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY');
        await d.query(`SET TRANSACTION SNAPSHOT ${quoteLiteral(created.snapshot_name)}`);
        const t = sessions.open({ connectionString: config.node.dsn, application_name: 'pgbidi_join_copy' }, `${self}'s copy session ${i + 1}`);
        targetSessions.push(t);
        await t.connect();
        for (const sql of TARGET_SESSION_SQL) await t.query(sql);
      }
      const at = await (donorSessions[0] as pg.Client).query<{ t: string }>('SELECT now()::text AS t');
      snapshotTime = at.rows[0]?.t ?? '-infinity';
    } finally {
      // The snapshot lives as long as this connection runs no other command; every session has it now.
      await replication.end().catch(() => undefined);
    }

    // The other peers' changes the donor applied between the probe and the snapshot: the last of
    // each peer is where c's link from that peer starts, so that none arrives twice.
    if (others.length) {
      const inSnapshot = await lastOriginsBefore(peer(donor.name), PROBE_SLOT, starts.get(donor.name) as Lsn, config.replication.publication);
      await peer(donor.name).query('SELECT pg_drop_replication_slot($1)', [PROBE_SLOT]);
      for (const b of others) {
        const last = inSnapshot.get(originName(b.name)) ?? before.get(b.name) ?? 0n;
        starts.set(b.name, maxLsn(lbs.get(b.name) as Lsn, last));
      }
    }

    // Step 5.
    const queue = [...tables, TOMBSTONES];
    const names = queue.map((t) => `${t.schema}.${t.name}`);
    options.progress.begin(names);
    const lock = originLock();
    const ensured = new Set<string>();
    const ensureOrigin = async (origin: string): Promise<void> => {
      if (ensured.has(origin)) return;
      await local.query('SELECT pg_replication_origin_create($1) WHERE NOT EXISTS (SELECT 1 FROM pg_replication_origin WHERE roname = $1)', [origin]);
      ensured.add(origin);
    };
    const copied: { table: string; rows: number }[] = [];
    const newest: string[] = [snapshotTime];
    const timer = setInterval(() => options.say(options.progress.line()), 1000);
    try {
      await Promise.all(
        donorSessions.map(async (d, i) => {
          const t = targetSessions[i] as pg.Client;
          for (let next = queue.shift(); next !== undefined; next = queue.shift()) {
            const name = `${next.schema}.${next.name}`;
            options.progress.tableStarted(name);
            const r = await copyTable(d, t, next, lock, ensureOrigin, (n) => options.progress.rows(name, n));
            copied.push({ table: name, rows: r.rows });
            newest.push(...r.newest);
            options.progress.tableDone(name);
          }
          await d.query('COMMIT');
        }),
      );
    } finally {
      clearInterval(timer);
      await Promise.all([...donorSessions, ...targetSessions].map((c) => c.end().catch(() => undefined)));
    }
    options.say(options.progress.line());

    // Step 6: c's own slots again, so that the peers do not decode the copy (it carries origins and
    // would be filtered anyway); nothing was written on c without an origin since they were made.
    // A member whose agent already streams from its slot here keeps it as it is.
    for (const p of config.peers) {
      const slot = slotName(self, p.name);
      const r = await local.query<{ active: boolean }>('SELECT active FROM pg_replication_slots WHERE slot_name = $1', [slot]);
      if (r.rows[0]?.active) continue;
      if (r.rows[0]) await local.query('SELECT pg_drop_replication_slot($1)', [slot]);
      await local.query(`SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, [slot]);
    }
    for (const [name, lsn] of starts) {
      await local.query('SELECT pg_replication_origin_advance($1, $2::pg_lsn)', [originName(name), formatLsn(lsn)]);
    }

    // Step 7: rows copied by the join count as written before the group existed on c, so that their
    // first remote update is ordered but not logged as a conflict.
    const positions = [...starts].map(([p, lsn]) => ({ peer: p, lsn: formatLsn(lsn) }));
    await local.query('BEGIN');
    await local.query('SET LOCAL synchronous_commit = on');
    await local.query(`UPDATE ${METADATA_SCHEMA}.node SET created_at = (SELECT max(x::timestamptz) FROM unnest($1::text[]) AS x) + interval '1 microsecond'`, [
      newest,
    ]);
    await local.query(`UPDATE ${STATE_TABLE} SET state = 'done', finished_at = now(), rows = $1, start_positions = $2::jsonb`, [
      options.progress.rowsTotal,
      JSON.stringify(positions),
    ]);
    await local.query('COMMIT');
    const seconds = options.progress.elapsedSeconds();
    return {
      alreadyJoined: false,
      restarted,
      donor: donor.name,
      tables: copied.sort((a, b) => a.table.localeCompare(b.table)),
      rows: options.progress.rowsTotal,
      seconds,
      rowsPerSecond: options.progress.rowsPerSecond(),
      startPositions: positions,
    };
  } finally {
    await Promise.all([...peers.values()].map((c) => c.end().catch(() => undefined)));
    await local.end().catch(() => undefined);
  }
}

async function requireEmpty(client: pg.Client, tables: readonly CopyTable[]): Promise<void> {
  const filled: string[] = [];
  for (const t of [...tables, TOMBSTONES]) {
    const exists = await client.query(`SELECT to_regclass($1) IS NOT NULL AS e`, [qualifiedName(t.schema, t.name)]);
    if (!(exists.rows[0] as { e: boolean }).e) continue;
    const r = await client.query(`SELECT 1 FROM ${qualifiedName(t.schema, t.name)} LIMIT 1`);
    if (r.rowCount) filled.push(`${t.schema}.${t.name}`);
  }
  if (filled.length) {
    throw new JoinError(
      `join copies into empty tables, and these have rows: ${filled.join(', ')} (empty them, or set up this node as a founding member instead)`,
    );
  }
}

/**
 * Empties what an unfinished join copied. The TRUNCATE runs under the donor's origin, so that peers
 * already streaming from this node (their agents may have been restarted) drop it like any change
 * that carries an origin.
 */
async function dropCopy(client: pg.Client, tables: readonly CopyTable[], donor: string): Promise<void> {
  const list = [...tables, TOMBSTONES].map((t) => qualifiedName(t.schema, t.name)).join(', ');
  await client.query('SELECT pg_catalog.pg_replication_origin_session_setup($1)', [originName(donor)]);
  try {
    await client.query('BEGIN');
    await client.query('SET LOCAL session_replication_role = replica');
    await client.query(`TRUNCATE ${list}, ${METADATA_SCHEMA}.row_versions`);
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    await client.query('SELECT pg_catalog.pg_replication_origin_session_reset()');
  }
}

/** Drops a slot unless something streams from it (then the join cannot go on). */
async function dropSlotIfIdle(client: pg.Client, slot: string, where: string): Promise<void> {
  const r = await client.query<{ active: boolean }>('SELECT active FROM pg_replication_slots WHERE slot_name = $1', [slot]);
  const found = r.rows[0];
  if (!found) return;
  if (found.active) throw new JoinError(`slot ${slot} on ${where} is in use: stop the agent that streams from it (the joining node's) and run join again`);
  await client.query('SELECT pg_drop_replication_slot($1)', [slot]);
}

/**
 * Waits until the donor has applied (and flushed) every change of peer `b` up to `lsn`: b's slot for
 * the donor is confirmed at or beyond it. The donor's agent confirms positions with nothing to apply
 * too, so this also ends when b is idle.
 */
async function waitDonorCaughtUp(client: pg.Client, slot: string, lsn: Lsn, timeoutMs: number, b: PeerConfig, donor: PeerConfig): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await client.query<{ c: string | null }>('SELECT confirmed_flush_lsn::text AS c FROM pg_replication_slots WHERE slot_name = $1', [slot]);
    const confirmed = r.rows[0]?.c;
    if (confirmed === undefined) throw new JoinError(`${b.name} has no slot ${slot}: is ${donor.name} a member that replicates from ${b.name}?`);
    if (confirmed !== null && parseLsn(confirmed) >= lsn) return;
    if (Date.now() > deadline) {
      throw new JoinError(
        `${donor.name} has not applied ${b.name}'s changes up to ${formatLsn(lsn)} within ${timeoutMs / 1000} s (confirmed ${confirmed ?? 'nothing'}): ` +
          `is ${donor.name}'s agent running and streaming from ${b.name}?`,
      );
    }
    await new Promise((r2) => setTimeout(r2, 200));
  }
}

/**
 * Decodes the donor's WAL from the probe slot's start up to `upto` (transactions committed before
 * it, i.e. those in the snapshot exported at `upto`) and returns, per replication origin, the origin
 * LSN of the last transaction applied under it: pgoutput's Origin message carries the remote commit
 * LSN that the applying transaction recorded (protocol-logicalrep-message-formats.html "Origin").
 */
async function lastOriginsBefore(client: pg.Client, slot: string, upto: Lsn, publication: string): Promise<Map<string, Lsn>> {
  const r = await client.query<{ data: Buffer }>(
    `SELECT data FROM pg_logical_slot_peek_binary_changes($1, $2::pg_lsn, NULL, 'proto_version', '1', 'publication_names', $3)
      WHERE get_byte(data, 0) = ascii('O')`,
    [slot, formatLsn(upto), quoteIdent(publication)],
  );
  const last = new Map<string, Lsn>();
  for (const row of r.rows) {
    const m = decodePgoutput(row.data);
    if (m.tag === 'origin') last.set(m.originName, m.originLsn);
  }
  return last;
}
