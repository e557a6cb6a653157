import type pg from 'pg';
import { formatLsn, parseLsn, ZERO_LSN } from '../protocol/lsn.js';
import type { Lsn } from '../protocol/lsn.js';
import { agentClient } from '../util/agent-client.js';
import { tryConnect } from '../node/try-connect.js';
import type { Statement } from './statements.js';
import { ROW_SECURITY_OFF, SESSION_LIMITS_OFF } from '../util/session-limits.js';

/**
 * The local session that applies one peer's transactions. It is bound to the peer's replication
 * origin, so the origin's progress commits atomically with the rows (exactly-once across crashes,
 * origin.c replorigin_session_advance at commit). One origin can be held by one session only.
 *
 * Pipelined (pg >= 8.23): statements of a transaction are written without waiting for each answer;
 * each is its own Sync boundary, so after a failure the COMMIT answers ROLLBACK (technical research
 * §7.3) and is checked.
 */

/** A type parser that leaves every value as the text the server sent. */
const RAW_TEXT: pg.CustomTypesConfig = { getTypeParser: () => (value: string) => value };

export class CommitFailedError extends Error {
  readonly code = 'PGBIDI_COMMIT_FAILED';
  constructor(command: string) {
    super(`apply transaction did not commit (server answered ${command})`);
    this.name = 'CommitFailedError';
  }
}

export interface ApplySessionOptions {
  readonly dsn: string;
  readonly origin: string;
  readonly applicationName: string;
  readonly statementTimeoutMs: number;
  /**
   * `local` on a synchronous link: the peer's committer waits for this node's flush, so each apply
   * commit flushes at once instead of within wal_writer_delay. Never `on`: see the deadlock rule.
   */
  readonly synchronousCommit: 'off' | 'local';
}

export class ApplySession {
  private client: pg.Client | null = null;
  private prepared = new Map<string, string>();
  /** server_version_num of this node, read at connect. */
  serverVersionNum = 0;
  /** The session's server process, for cancel(). */
  private backendPid: number | null = null;

  constructor(private readonly options: ApplySessionOptions) {}

  async connect(onConnectionError: (err: Error) => void): Promise<Lsn> {
    // The same pinned settings as the walsender, so that text forms compare equal (full-row identity).
    const client = agentClient({
      connectionString: this.options.dsn,
      application_name: this.options.applicationName,
      pipeline: true,
      keepAlive: true,
    });
    client.on('error', onConnectionError);
    await client.connect();
    this.client = client;
    this.prepared.clear();
    // The setup is sent at once (the connection pipelines) and its answers read in order, so that
    // the first failure reported is the same as one by one: a link's start waits for this session's
    // origin progress before it can start streaming, and these were seven round trips in a row.
    const settings = [
      // replica: no user triggers and no FK checks during apply (like the native apply worker).
      'SET session_replication_role = replica',
      // synchronous_commit off (local on a synchronous link): durability is reported separately
      // (feedback reads the flushed origin progress), and an apply commit never waits for this node's
      // own synchronous standbys, so two synchronous directions cannot deadlock (node/synchronous-links.ts).
      `SET synchronous_commit = ${this.options.synchronousCommit}`,
      // The conflict rules rely on READ COMMITTED (a fresh snapshot per statement, EvalPlanQual on
      // concurrently updated rows), whatever the server's default; and a serializable apply could
      // fail at COMMIT, which PostgreSQL 18 counts as progress (see commit()).
      `SET default_transaction_isolation = 'read committed'`,
      `SET statement_timeout = ${Math.trunc(this.options.statementTimeoutMs)}`,
      // Apply statements are the same few texts with new values every time: a plan made once serves
      // them all. Left to the default, the batched update was planned at every execution (a custom plan
      // looked cheaper for every new array), which cost twice its execution time (issue profile).
      'SET plan_cache_mode = force_generic_plan',
      // A large transaction is applied in batches as it arrives, and a streamed one while the peer
      // still runs it: the session waits inside its transaction for the next changes. With
      // transaction_timeout = 1s for this node's database, a 390,000-row transaction on 18 was
      // attempted 18 times in 20 s and never committed. statement_timeout above bounds each statement.
      ...SESSION_LIMITS_OFF,
      ROW_SECURITY_OFF,
    ];
    const setup: Promise<unknown>[] = [
      client.query('SELECT pg_replication_origin_session_setup($1)', [this.options.origin]),
      ...settings.map((sql) => client.query(sql)),
    ];
    const progress = client.query<{ lsn: string | null; version: string; pid: number }>(
      `SELECT pg_replication_origin_progress($1, true)::text AS lsn, current_setting('server_version_num') AS version, pg_backend_pid() AS pid`,
      [this.options.origin],
    );
    for (const p of [...setup, progress]) p.catch(() => undefined);
    for (const p of setup) await p;
    const r = await progress;
    this.serverVersionNum = Number(r.rows[0]?.version ?? 0);
    this.backendPid = r.rows[0]?.pid ?? null;
    const lsn = r.rows[0]?.lsn;
    return lsn ? parseLsn(lsn) : ZERO_LSN;
  }

  get pg(): pg.Client {
    if (!this.client) throw new Error('apply session is not connected');
    return this.client;
  }

  begin(): Promise<unknown> {
    return this.pg.query('BEGIN');
  }

  /**
   * Sends what `send` issues in one socket write: the driver writes every protocol message of a
   * query on its own (Bind, Describe, Execute, Sync), and for small transactions those syscalls
   * were a fifth of the agent's CPU time (bench profile).
   */
  corked<T>(send: () => T): T {
    const stream = socketOf(this.pg);
    stream?.cork?.();
    try {
      return send();
    } finally {
      stream?.uncork?.();
    }
  }

  /**
   * Runs a statement as a named prepared statement (parsed once per session and SQL text). `raw`:
   * every column comes back as the server's text, unparsed (for values the caller reads itself).
   */
  run<R extends pg.QueryResultRow>(s: Statement, options: { raw?: boolean } = {}): Promise<pg.QueryResult<R>> {
    let name = this.prepared.get(s.text);
    if (name === undefined) {
      name = `pgbidi_${this.prepared.size}`;
      this.prepared.set(s.text, name);
    }
    return this.pg.query<R>(options.raw ? { name, text: s.text, values: s.values, types: RAW_TEXT } : { name, text: s.text, values: s.values });
  }

  /**
   * pg_replication_origin_xact_setup(end_lsn, commit_ts) then COMMIT: the remote commit time becomes
   * the local commit timestamp (so row versions agree on every node) and the origin advances with the
   * data. Called in every transaction: the values are session globals that COMMIT does not reset.
   */
  /**
   * Returns whether the transaction wrote anything: a transaction without an xid writes no commit
   * record, so its COMMIT does not advance the origin (RecordTransactionCommit), and the caller must
   * account for its position another way.
   */
  async commit(endLsn: Lsn, commitTimestamp: string): Promise<{ wrote: boolean }> {
    // Deferred triggers and constraints fire now, before the origin is set up for this transaction:
    // PostgreSQL 18 advances the session's origin also when the transaction aborts after
    // pg_replication_origin_xact_setup (measured: 18.4 moves it, 15.18 does not), so a COMMIT that
    // fails there would count a transaction as applied that was rolled back.
    const [constraints, setup, commit] = this.corked(
      () =>
        [
          this.pg.query('SET CONSTRAINTS ALL IMMEDIATE'),
          this.pg.query<{ xid: string | null }>(
            'SELECT pg_current_xact_id_if_assigned()::text AS xid, pg_replication_origin_xact_setup($1::pg_lsn, $2::timestamptz)',
            [formatLsn(endLsn), commitTimestamp],
          ),
          this.pg.query('COMMIT'),
        ] as const,
    );
    // Observed below; an earlier failure must not leave the later ones unhandled.
    setup.catch(() => undefined);
    commit.catch(() => undefined);
    await constraints;
    const wrote = (await setup).rows[0]?.xid != null;
    const result = await commit;
    if (result.command !== 'COMMIT') throw new CommitFailedError(result.command);
    return { wrote };
  }

  /**
   * Runs DDL for this session's own objects (the pg_temp apply procedure) in a transaction of its
   * own. Its commit carries the session's origin and the values of the last
   * pg_replication_origin_xact_setup (they are session globals): the LSN is one already committed,
   * and the origin's progress never moves backwards (replorigin_session_advance), so nothing changes.
   */
  async define(ddl: string): Promise<void> {
    await this.pg.query('BEGIN');
    try {
      await this.pg.query(ddl);
      await this.pg.query('COMMIT');
    } catch (err) {
      await this.pg.query('ROLLBACK').catch(() => undefined);
      throw err;
    }
  }

  async rollback(): Promise<void> {
    if (this.client) await this.client.query('ROLLBACK');
  }

  /**
   * Cancels the statement the session is running (pg_cancel_backend, from a connection of its own:
   * the session's is busy). Its transaction rolls back, and with it that transaction's origin
   * progress, so it is applied again at the next start. Between statements it does nothing.
   */
  async cancel(): Promise<void> {
    const pid = this.backendPid;
    if (pid === null || !this.client) return;
    const canceller = await tryConnect(this.options.dsn, `${this.options.applicationName}_cancel`);
    if (canceller instanceof Error) throw canceller;
    try {
      await canceller.query('SELECT pg_cancel_backend($1)', [pid]);
    } finally {
      await canceller.end().catch(() => undefined);
    }
  }

  /**
   * Ends the session; an open transaction rolls back. `abort`: at once, by closing the socket, even
   * with a statement in progress (pg's end() waits for pipelined statements to finish).
   */
  async close(abort = false): Promise<void> {
    const client = this.client;
    this.client = null;
    if (!client) return;
    if (abort) socketOf(client)?.destroy?.();
    else await client.end().catch(() => undefined);
  }
}

/** What the apply session uses of the driver's socket. */
interface DriverSocket {
  cork?(): void;
  uncork?(): void;
  destroy?(): void;
}

/** The driver's socket under a client (pg keeps it as connection.stream; not in its types). */
function socketOf(client: pg.Client): DriverSocket | undefined {
  return (client as unknown as { connection?: { stream?: DriverSocket } }).connection?.stream;
}
