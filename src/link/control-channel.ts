/**
 * The control connection's work for one attempt of a link: standby status updates to the peer
 * (feedback) and heartbeat messages into this node's WAL.
 *
 * Feedback confirms only what is durable here: the origin's progress after
 * pg_replication_origin_progress(origin, true) flushed local WAL up to it, then what ProgressTracker
 * says may be confirmed behind it (worker.c send_feedback reports the flush position it got from the
 * local flush, never a position on receipt). written is what arrived, when it is ahead.
 *
 * pg runs one query at a time per client: tasks run one after another, each after the one before
 * settles. On a synchronous link the peer's committers wait for the confirmation, so a prompt
 * feedback (soon) is sent as something new becomes durable; requests made while one is queued and
 * not started are merged into it. Once closed (the attempt is over) queued tasks do nothing: the
 * stream they would write to belongs to that attempt.
 */
import { HEARTBEAT_PREFIX } from '../node/names.js';
import type { LinkMetrics } from '../observability/metrics.js';
import { parseLsn } from '../protocol/lsn.js';
import { nowPgMicros } from '../protocol/pg-time.js';
import type { StandbyStatus } from '../protocol/replication-messages.js';
import type { ProgressTracker } from './progress-tracker.js';

/** The rows of a query on the control connection (pg.Client#query, rows only). */
export type ControlQuery = <R extends Record<string, unknown>>(text: string, values: readonly unknown[]) => Promise<readonly R[]>;

export interface ControlChannelDeps {
  readonly query: ControlQuery;
  /** Standby status update on the attempt's replication stream. */
  readonly sendStatus: (status: StandbyStatus) => void;
  readonly progress: ProgressTracker;
  readonly metrics: Pick<LinkMetrics, 'positions' | 'lag'>;
  readonly clock: () => number;
  /** The replication origin of the peer on this node. */
  readonly origin: string;
  /** This node's name, in the heartbeat's payload. */
  readonly node: string;
  readonly synchronous: boolean;
  /** A task that was not awaited failed: the attempt fails with it. */
  readonly failed: (err: unknown) => void;
}

export class ControlChannel {
  private chain: Promise<unknown> = Promise.resolve();
  private feedbackQueued = false;
  private closed = false;
  private readonly timers: NodeJS.Timeout[] = [];

  constructor(private readonly deps: ControlChannelDeps) {}

  /** Feedback and heartbeats at their intervals until close(). */
  every(feedbackMs: number, heartbeatMs: number): void {
    this.timers.push(
      setInterval(() => this.feedback(), feedbackMs),
      setInterval(() => this.detach(() => this.heartbeat()), heartbeatMs),
    );
  }

  /** A feedback after the tasks queued before it; a failure fails the attempt. */
  feedback(): void {
    this.detach(() => this.sendFeedback());
  }

  /** Feedback now on a synchronous link (merged into one already queued); nothing on others. */
  soon(): void {
    if (!this.deps.synchronous || this.feedbackQueued || this.closed) return;
    this.feedbackQueued = true;
    this.detach(() => {
      this.feedbackQueued = false;
      return this.sendFeedback();
    });
  }

  /** A feedback the caller waits for (the last one of a drained link), failure included. */
  feedbackNow(): Promise<void> {
    return this.run(() => this.sendFeedback());
  }

  close(): void {
    this.closed = true;
    for (const t of this.timers) clearInterval(t);
    this.timers.length = 0;
  }

  private run<T>(task: () => Promise<T>): Promise<T> {
    const next = this.chain.then(task, task);
    this.chain = next.catch(() => undefined);
    return next;
  }

  private detach(task: () => Promise<void>): void {
    void this.run(task).catch((err) => {
      if (!this.closed) this.deps.failed(err);
    });
  }

  private async sendFeedback(): Promise<void> {
    if (this.closed) return;
    const { progress, metrics } = this.deps;
    const rows = await this.deps.query<{ lsn: string | null }>('SELECT pg_replication_origin_progress($1, true)::text AS lsn', [this.deps.origin]);
    const lsn = rows[0]?.lsn;
    if (lsn) progress.durableUpTo(parseLsn(lsn));
    const confirmed = progress.confirm();
    if (this.closed) return;
    this.deps.sendStatus({
      written: progress.received > confirmed ? progress.received : confirmed,
      flushed: confirmed,
      applied: confirmed,
      clientTime: nowPgMicros(this.deps.clock),
      replyRequested: false,
    });
    metrics.positions({ confirmed });
    metrics.lag(progress.lagSeconds());
  }

  /** A transactional logical message on this node, so that peers can measure end-to-end freshness. */
  private async heartbeat(): Promise<void> {
    if (this.closed) return;
    await this.deps.query(`SELECT pg_logical_emit_message(true, $1, $2)`, [
      HEARTBEAT_PREFIX,
      JSON.stringify({ node: this.deps.node, ts: nowPgMicros(this.deps.clock).toString() }),
    ]);
  }
}
