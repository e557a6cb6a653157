import type pg from 'pg';
import { agentClient } from '../util/agent-client.js';
import type { Logger } from '../observability/logger.js';
import { formatPgTimestamp, pgMicrosToUnixMs } from '../protocol/pg-time.js';
import { WITHOUT_SYNC_WAIT } from './synchronous-links.js';
import { METADATA_SCHEMA } from './names.js';
import { errorMessage } from '../util/error-message.js';

/**
 * The node's periodic housekeeping: tombstone purge, conflict-log retention, and the counts that
 * /status and the metrics show (tombstones, pending dead letters).
 *
 * Purges tombstones once no older write can still arrive (causal stability, technical research §6.2).
 * Each link delivers one peer's transactions in that peer's commit order, and peers emit a heartbeat
 * transaction every second, so once every link has applied a peer transaction committed at T, no
 * write of that peer older than T − margin is still on its way. The margin covers commit-time versus
 * commit-order jitter and clock skew. A peer that is down stops purging for the whole node.
 */
export interface TombstoneStatus {
  readonly count: number;
  /** Tombstones older than this were purged (ISO time), or null until every link has applied something. */
  readonly purgeWatermark: string | null;
  readonly purgedTotal: number;
  /** Rows of pgbidi.dead_letters still pending. */
  readonly deadLettersPending: number;
}

/**
 * How long a statement of the janitor waits for a lock before it gives up (SQLSTATE 55P03) and the
 * sweep is tried again at the next interval. Its purges skip rows that others hold (below), so this
 * is a bound for the rest: the conflict log's retention, and a table lock that DDL holds. Without it,
 * a sweep waited for as long as an idle-in-transaction session held a lock, and so did the agent's
 * stop (Agent.stop awaits the sweep in flight).
 */
export const JANITOR_LOCK_TIMEOUT_MS = 2000;

/**
 * A purge that takes the rows matching `condition` (on alias x) that nobody else holds and leaves
 * the rest for a later sweep (FOR UPDATE SKIP LOCKED). A plain DELETE waits for every row lock in its
 * way while holding those of the rows it already deleted: a tombstone that a local session upserted
 * and left in an open transaction kept the sweep waiting, and with it every apply transaction that
 * writes a tombstone the sweep had reached (apply upserts them: ON CONFLICT DO UPDATE). A row that
 * another transaction holds waits for a later sweep: if that transaction writes it and commits, its
 * new version is younger than this cutoff; if not, the next sweep takes it.
 */
function purgeSkippingLocked(table: 'tombstones' | 'row_versions', condition: string): string {
  const t = `${METADATA_SCHEMA}.${table}`;
  return `DELETE FROM ${t} WHERE ctid = ANY (ARRAY(SELECT x.ctid FROM ${t} AS x WHERE ${condition} FOR UPDATE OF x SKIP LOCKED))`;
}

export class TombstoneJanitor {
  private timer: NodeJS.Timeout | null = null;
  private client: pg.Client | null = null;
  private status: TombstoneStatus = { count: 0, purgeWatermark: null, purgedTotal: 0, deadLettersPending: 0 };
  private running: Promise<void> | null = null;

  constructor(
    private readonly dsn: string,
    /** Last applied peer commit time per link (µs since 2000), null when a link applied nothing yet. */
    private readonly appliedCommitTimes: () => readonly (bigint | null)[],
    private readonly marginMs: number,
    private readonly log: Logger,
    private readonly onStatus: (s: TombstoneStatus) => void,
    private readonly conflictRetentionDays = 7,
  ) {}

  /** The peer whose change a dead letter holds, or null when there is no such dead letter. */
  async deadLetterPeer(id: number): Promise<string | null> {
    const client = agentClient({ connectionString: this.dsn, application_name: 'pgbidi_admin' });
    await client.connect();
    try {
      const r = await client.query<{ peer: string }>(`SELECT peer FROM ${METADATA_SCHEMA}.dead_letters WHERE id = $1`, [id]);
      return r.rows[0]?.peer ?? null;
    } finally {
      await client.end();
    }
  }

  start(intervalMs = 5000): void {
    this.timer = setInterval(() => {
      if (!this.running)
        this.running = this.sweep()
          .then(() => undefined)
          .finally(() => (this.running = null));
    }, intervalMs);
  }

  current(): TombstoneStatus {
    return this.status;
  }

  async sweep(): Promise<TombstoneStatus> {
    try {
      if (!this.client) {
        const client = agentClient({ connectionString: this.dsn, application_name: 'pgbidi_janitor' });
        client.on('error', () => undefined);
        await client.connect();
        await client.query(WITHOUT_SYNC_WAIT);
        await client.query(`SET lock_timeout = ${JANITOR_LOCK_TIMEOUT_MS}`);
        this.client = client;
      }
      const times = this.appliedCommitTimes();
      let purged = 0;
      let watermark = this.status.purgeWatermark;
      if (times.length > 0 && times.every((t): t is bigint => t !== null)) {
        const oldest = times.reduce((x, y) => (x < y ? x : y));
        const cutoff = oldest - BigInt(this.marginMs) * 1000n;
        const r = await this.client.query(purgeSkippingLocked('tombstones', `coalesce(pg_xact_commit_timestamp(x.xmin), '-infinity') < $1::timestamptz`), [
          formatPgTimestamp(cutoff),
        ]);
        purged = r.rowCount ?? 0;
        // The kept versions of merged delta rows (pgbidi.row_versions) are needed exactly as long.
        await this.client.query(purgeSkippingLocked('row_versions', 'x.version_ts < $1::timestamptz'), [formatPgTimestamp(cutoff)]);
        watermark = new Date(pgMicrosToUnixMs(cutoff)).toISOString();
      }
      // Bounded retention of the conflict log.
      await this.client.query(`DELETE FROM ${METADATA_SCHEMA}.conflicts WHERE logged_at < now() - make_interval(days => $1)`, [this.conflictRetentionDays]);
      const c = await this.client.query<{ n: number; dl: number }>(
        `SELECT (SELECT count(*)::int FROM ${METADATA_SCHEMA}.tombstones) AS n,
                (SELECT count(*)::int FROM ${METADATA_SCHEMA}.dead_letters WHERE status = 'pending') AS dl`,
      );
      this.status = {
        count: c.rows[0]?.n ?? 0,
        purgeWatermark: watermark,
        purgedTotal: this.status.purgedTotal + purged,
        deadLettersPending: c.rows[0]?.dl ?? 0,
      };
      this.onStatus(this.status);
    } catch (err) {
      this.log.warn({ err: { message: errorMessage(err), code: (err as { code?: string }).code } }, 'tombstone sweep failed');
      await this.client?.end().catch(() => undefined);
      this.client = null;
    }
    return this.status;
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.running;
    await this.client?.end().catch(() => undefined);
    this.client = null;
  }
}
