/**
 * The lag probe of research/baselines.md, one connection per writer and per watcher, primary-key
 * work only:
 *
 *   MarkWriter (source)  ── INSERT bench_marks(id) every HEARTBEAT_MS, ack time kept per id ──┐
 *   MarkWatcher (target) ── every POLL_MS: max(id) of the writer's ids above the last seen ────┘
 *
 * A heartbeat's lag is the time from the source's commit acknowledgement to the first poll that sees
 * it, an upper bound with POLL_MS resolution. Ids of one writer are consecutive and every engine
 * applies a source's transactions in its commit order, so seeing id n means 1..n arrived: the poll is
 * one backward index probe (`max(id)` within a range), however far behind the target is.
 *
 * A fence is one more mark written after a workload stops: the target has caught up with everything
 * before it when the fence is visible. Writer ids are `base(node) + seq`, so several writers (W3,
 * mesh) never collide.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type pg from 'pg';
import type { PostgresServer } from '../pg-server/postgres-server.js';
import { BenchError } from './bench-error.js';
import { driverClient, MARKS_TABLE, now, POLL_MS } from './bench-settings.js';
import { summarizeLag } from './stats.js';
import type { LagSummary } from './stats.js';

/** Ids of the writer on node `nodeIndex` (0 = a): base + 1, base + 2, … */
export function markBase(nodeIndex: number): number {
  return (nodeIndex + 1) * 1_000_000_000;
}
const RANGE = 1_000_000_000;

export interface Mark {
  readonly id: number;
  /** now() when the INSERT's commit was acknowledged. */
  readonly ackAt: number;
}

export class MarkWriter {
  private seq = 0;
  private readonly beats: Mark[] = [];
  private loop: Promise<void> | null = null;
  private stopping = false;

  private constructor(
    private readonly client: pg.Client,
    readonly nodeIndex: number,
  ) {}

  static async open(source: PostgresServer, nodeIndex: number): Promise<MarkWriter> {
    return new MarkWriter(await driverClient(source, 'bench_heartbeat'), nodeIndex);
  }

  /** Commits one mark now (autocommit) and returns its id and ack time. */
  async write(): Promise<Mark> {
    this.seq += 1;
    const id = markBase(this.nodeIndex) + this.seq;
    await this.client.query(`INSERT INTO public.${MARKS_TABLE} (id) VALUES ($1)`, [id]);
    return { id, ackAt: now() };
  }

  /** Writes a heartbeat every intervalMs until stopHeartbeats(); a slow commit skips the ticks it overran. */
  startHeartbeats(intervalMs: number): void {
    if (this.loop) return;
    this.stopping = false;
    this.loop = (async () => {
      const startedAt = now();
      for (let tick = 0; !this.stopping;) {
        this.beats.push(await this.write());
        tick = Math.max(tick + 1, Math.ceil((now() - startedAt) / intervalMs));
        await sleep(Math.max(0, startedAt + tick * intervalMs - now()));
      }
    })();
  }

  async stopHeartbeats(): Promise<void> {
    this.stopping = true;
    const loop = this.loop;
    this.loop = null;
    await loop;
  }

  /** Heartbeats written so far (not fences). */
  get heartbeats(): readonly Mark[] {
    return this.beats;
  }

  async close(): Promise<void> {
    this.stopping = true;
    await this.loop?.catch(() => undefined);
    await this.client.end().catch(() => undefined);
  }
}

export class MarkWatcher {
  private readonly seen = new Map<number, number>();
  private lastSeen: number;
  private loop: Promise<void> | null = null;
  private stopping = false;
  private failure: Error | null = null;

  private constructor(
    private readonly client: pg.Client,
    private readonly target: PostgresServer,
    private readonly sourceIndex: number,
  ) {
    this.lastSeen = markBase(sourceIndex);
  }

  /** Watches, on `target`, the marks written by the writer on node `sourceIndex`. */
  static async open(target: PostgresServer, sourceIndex: number): Promise<MarkWatcher> {
    const watcher = new MarkWatcher(await driverClient(target, 'bench_probe'), target, sourceIndex);
    return watcher;
  }

  /** Starts polling (idempotent). Call before replication or the workload starts. */
  start(): void {
    if (this.loop) return;
    this.stopping = false;
    this.loop = (async () => {
      const startedAt = now();
      for (let tick = 1; !this.stopping; tick += 1) {
        try {
          await this.poll();
        } catch (err) {
          this.failure = err instanceof Error ? err : new Error(String(err));
          return;
        }
        await sleep(Math.max(0, startedAt + tick * POLL_MS - now()));
      }
    })();
  }

  private async poll(): Promise<void> {
    const r = await this.client.query<{ id: string | null }>(`SELECT max(id)::text AS id FROM public.${MARKS_TABLE} WHERE id > $1 AND id < $2`, [
      this.lastSeen,
      markBase(this.sourceIndex) + RANGE,
    ]);
    const seenAt = now();
    const max = r.rows[0]?.id;
    if (max === null || max === undefined) return;
    for (let id = this.lastSeen + 1; id <= Number(max); id += 1) this.seen.set(id, seenAt);
    this.lastSeen = Number(max);
  }

  /** now() of the first poll that saw `id`, if one did. */
  seenAt(id: number): number | undefined {
    return this.seen.get(id);
  }

  /** Resolves with the time `id` was first seen; rejects after timeoutMs. */
  async waitFor(id: number, timeoutMs: number): Promise<number> {
    this.start();
    const deadline = now() + timeoutMs;
    for (;;) {
      const at = this.seen.get(id);
      if (at !== undefined) return at;
      if (this.failure !== null) throw this.failure;
      if (now() > deadline) {
        throw new BenchError(
          'BENCH_TIMEOUT',
          `mark ${id - markBase(this.sourceIndex)} of node ${this.sourceIndex} not on ${this.target.name} after ${Math.round(timeoutMs / 1000)} s (last seen ${this.lastSeen - markBase(this.sourceIndex)})`,
        );
      }
      await sleep(POLL_MS / 2);
    }
  }

  async close(): Promise<void> {
    this.stopping = true;
    await this.loop?.catch(() => undefined);
    await this.client.end().catch(() => undefined);
  }
}

/** Lag in seconds of every heartbeat the watcher saw (negative clock noise clamped to 0). */
export function heartbeatLags(beats: readonly Mark[], seenAt: (id: number) => number | undefined): number[] {
  return beats.flatMap((b) => {
    const at = seenAt(b.id);
    return at === undefined ? [] : [Math.max(0, at - b.ackAt) / 1000];
  });
}

export function lagOf(writer: MarkWriter, watcher: MarkWatcher): LagSummary | null {
  return summarizeLag(heartbeatLags(writer.heartbeats, (id) => watcher.seenAt(id)));
}
