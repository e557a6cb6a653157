import { afterEach, describe, expect, it, vi } from 'vitest';
import { ControlChannel } from '../../src/link/control-channel.js';
import type { ControlChannelDeps } from '../../src/link/control-channel.js';
import { ProgressTracker } from '../../src/link/progress-tracker.js';
import type { StandbyStatus } from '../../src/protocol/replication-messages.js';

interface Deferred {
  readonly promise: Promise<void>;
  resolve(): void;
  reject(err: Error): void;
}

function deferred(): Deferred {
  let resolve!: () => void;
  let reject!: (err: Error) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** A control connection whose origin progress is `durable` and whose queries finish when told (hold) or at once. */
function harness(options: { synchronous?: boolean; durable?: string | null } = {}) {
  const queries: { text: string; values: readonly unknown[] }[] = [];
  const sent: StandbyStatus[] = [];
  const failures: unknown[] = [];
  const positions: bigint[] = [];
  let hold: Deferred | null = null;
  const progress = new ProgressTracker(() => 0);
  const deps: ControlChannelDeps = {
    query: async <R extends Record<string, unknown>>(text: string, values: readonly unknown[]): Promise<readonly R[]> => {
      queries.push({ text, values });
      const waiting = hold;
      if (waiting) await waiting.promise;
      return (text.includes('pg_replication_origin_progress') ? [{ lsn: options.durable === undefined ? '0/C8' : options.durable }] : []) as unknown as R[];
    },
    sendStatus: (s) => sent.push(s),
    progress,
    metrics: { positions: (p) => void (p.confirmed !== undefined && positions.push(p.confirmed)), lag: () => undefined },
    clock: () => 1_700_000_000_000,
    origin: 'pgbidi_a',
    node: 'b',
    synchronous: options.synchronous ?? true,
    failed: (err) => failures.push(err),
  };
  return {
    channel: new ControlChannel(deps),
    progress,
    queries,
    sent,
    failures,
    positions,
    holdQueries(): Deferred {
      hold = deferred();
      return hold;
    },
    release(): void {
      hold?.resolve();
      hold = null;
    },
  };
}

/** Lets queued promise callbacks run. */
const settle = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

afterEach(() => {
  vi.useRealTimers();
});

describe('ControlChannel', () => {
  it('confirms what the origin says is durable, and reports what arrived as written', async () => {
    const h = harness({ durable: '0/C8' }); // 200
    h.progress.startAttempt(100n);
    h.progress.queued(1n);
    h.progress.receivedUpTo(300n);
    h.progress.applyDone(200n, true);
    await h.channel.feedbackNow();
    expect(h.queries).toEqual([{ text: 'SELECT pg_replication_origin_progress($1, true)::text AS lsn', values: ['pgbidi_a'] }]);
    expect(h.sent).toHaveLength(1);
    expect(h.sent[0]).toMatchObject({ written: 300n, flushed: 200n, applied: 200n, replyRequested: false });
    expect(h.positions).toEqual([200n]);
  });

  it('confirms nothing past the start while the origin has no progress, even with a commit applied', async () => {
    const h = harness({ durable: null });
    h.progress.startAttempt(100n);
    h.progress.queued(1n);
    h.progress.applyDone(200n, true);
    await h.channel.feedbackNow();
    expect(h.sent[0]).toMatchObject({ flushed: 100n, applied: 100n });
  });

  it('merges prompt feedback requests made before the queued one starts, and makes none on an asynchronous link', async () => {
    const h = harness();
    h.progress.startAttempt(100n);
    h.channel.soon();
    h.channel.soon();
    h.channel.soon();
    await settle();
    expect(h.queries).toHaveLength(1);
    h.channel.soon(); // the one before has started: a new request is a new feedback
    await settle();
    expect(h.queries).toHaveLength(2);

    const a = harness({ synchronous: false });
    a.progress.startAttempt(100n);
    a.channel.soon();
    await settle();
    expect(a.queries).toHaveLength(0);
  });

  it('runs one query at a time on the connection', async () => {
    const h = harness();
    h.progress.startAttempt(100n);
    h.holdQueries();
    h.channel.feedback();
    const last = h.channel.feedbackNow();
    await settle();
    expect(h.queries).toHaveLength(1);
    h.release();
    await last;
    expect(h.queries).toHaveLength(2);
    expect(h.sent).toHaveLength(2);
  });

  it('sends nothing for a feedback that finishes after the attempt ended, and does not fail it', async () => {
    const h = harness();
    h.progress.startAttempt(100n);
    const held = h.holdQueries();
    h.channel.feedback();
    await settle();
    h.channel.close();
    held.resolve();
    await settle();
    expect(h.sent).toHaveLength(0);

    const f = harness();
    f.progress.startAttempt(100n);
    const failing = f.holdQueries();
    f.channel.feedback();
    await settle();
    failing.reject(new Error('connection lost'));
    await settle();
    expect(f.failures).toEqual([new Error('connection lost')]);
  });

  it('sends feedback and heartbeats at their intervals until closed', async () => {
    vi.useFakeTimers();
    const h = harness();
    h.progress.startAttempt(100n);
    h.channel.every(1000, 250);
    await vi.advanceTimersByTimeAsync(1000);
    const heartbeats = h.queries.filter((q) => q.text.includes('pg_logical_emit_message'));
    expect(heartbeats).toHaveLength(4);
    expect(heartbeats[0]?.values[0]).toBe('pgbidi.heartbeat');
    expect(JSON.parse(String(heartbeats[0]?.values[1]))).toMatchObject({ node: 'b' });
    expect(h.sent).toHaveLength(1);
    h.channel.close();
    await vi.advanceTimersByTimeAsync(5000);
    expect(h.queries).toHaveLength(5);
  });
});
