import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load-config.js';
import { ApplyQueue } from '../../src/link/apply-queue.js';
import type { ControlChannel } from '../../src/link/control-channel.js';
import { ProgressTracker } from '../../src/link/progress-tracker.js';
import { Receiver, START_QUEUED_CHANGES } from '../../src/link/receiver.js';
import { Metrics } from '../../src/observability/metrics.js';
import type { LinkState } from '../../src/observability/metrics.js';
import type { PgoutputMessage } from '../../src/protocol/pgoutput-messages.js';
import { begin, commit, insert, rel } from '../support/decoded-messages.js';
import type { ReplicationMessage } from '../../src/protocol/replication-messages.js';

const defaults = parseConfig(
  { node: { name: 'b', dsn: 'postgres://pgbidi@127.0.0.1:5432/app' }, peers: [{ name: 'a', dsn: 'postgres://pgbidi@127.0.0.2:5432/app' }] },
  {},
  'node b',
);
/** Smaller than a config may set: transactions of up to 3 changes whole, larger ones in batches of 2; reading pauses at 4 queued. */
const replication = { ...defaults.replication, apply_batch_size: 2, apply_procedure_max_changes: 3, max_queued_changes: 4 };

const origin = (name: string): PgoutputMessage => ({ tag: 'origin', originLsn: 0n, originName: name });

const data = (message: PgoutputMessage): ReplicationMessage => ({ kind: 'xlogdata', walStart: 0n, walEnd: 0n, sendTime: 0n, byteLength: 10, message });
const keepalive = (walEnd: bigint, replyRequested: boolean): ReplicationMessage => ({ kind: 'keepalive', walEnd, sendTime: 0n, replyRequested });

function harness(initial: LinkState = 'streaming', settings = replication) {
  const queue = new ApplyQueue();
  const progress = new ProgressTracker(() => 0);
  progress.startAttempt(0n);
  const events: string[] = [];
  let state: LinkState = initial;
  const channel = { feedback: () => events.push('feedback'), soon: () => events.push('soon') } as unknown as ControlChannel;
  const receiver = new Receiver({
    peer: 'a',
    replication: settings,
    metrics: new Metrics({ node: 'b', version: '0.0.0-test', peers: ['a'] }).link('a'),
    queue,
    progress,
    source: () => ({ pause: () => events.push('pause'), resume: () => events.push('resume') }),
    statements: () => null,
    channel: () => channel,
    state: () => state,
    setState: (s) => {
      state = s;
      events.push(s);
    },
    earlyApplyAllowed: () => false,
    failed: (err) => events.push(`failed ${String(err)}`),
  });
  const feed = (...ms: PgoutputMessage[]): void => ms.forEach((m) => receiver.receive(data(m)));
  return { receiver, queue, progress, events, feed, state: () => state };
}

describe('Receiver', () => {
  it('queues small transactions whole, moves the received position, and skips what another node sent', () => {
    const h = harness();
    h.feed(begin(1), rel, insert(1), insert(2), commit(1));
    h.feed(begin(2), origin('c'), insert(3), commit(2));
    expect(h.queue.changes).toBe(2);
    expect(h.progress.received).toBe(208n);
    expect(h.receiver.filtered).toBe(1);
  });

  it('pauses reading at max_queued_changes and resumes at half of it', () => {
    const h = harness();
    h.feed(begin(1), rel, insert(1), insert(2), commit(1));
    expect(h.events).toEqual([]);
    h.feed(begin(2), insert(3), insert(4), commit(2)); // 4 queued
    expect(h.events).toEqual(['pause', 'paused']);
    expect(h.state()).toBe('paused');
    h.queue.shift(); // the relation
    h.queue.shift(); // transaction 1
    h.receiver.backpressure(); // 2 left: half
    expect(h.events).toEqual(['pause', 'paused', 'resume', 'streaming']);
  });

  it('pauses at START_QUEUED_CHANGES until the attempt applies a transaction or takes a full queue', () => {
    const roomy = { ...replication, max_queued_changes: 1000 };
    /** Two-change transactions until `changes` are queued; returns the number of the next one. */
    const fill = (h: ReturnType<typeof harness>, from: number, changes: number): number => {
      let n = from;
      for (; h.queue.changes < changes; n++) h.feed(begin(n), ...(n === 1 ? [rel] : []), insert(2 * n), insert(2 * n + 1), commit(n));
      return n;
    };
    const drain = (h: ReturnType<typeof harness>): void => {
      while (h.queue.shift());
      h.receiver.backpressure();
    };

    const applied = harness('streaming', roomy);
    let next = fill(applied, 1, START_QUEUED_CHANGES);
    expect(applied.events).toEqual(['pause', 'paused']);
    drain(applied);
    expect(applied.events).toEqual(['pause', 'paused', 'resume', 'streaming']);
    applied.progress.applyDone(1000n, true); // the first commit
    next = fill(applied, next, 998);
    expect(applied.state()).toBe('streaming');
    fill(applied, next, 1000);
    expect(applied.state()).toBe('paused');
    expect(applied.events.filter((e) => e.startsWith('failed'))).toEqual([]);

    // Nothing applied (a large transaction commits at its end), but a full queue's worth taken.
    const taken = harness('streaming', roomy);
    next = 1;
    for (let i = 0; i < 5; i++) {
      next = fill(taken, next, START_QUEUED_CHANGES);
      expect(taken.state()).toBe('paused');
      drain(taken);
    }
    expect(taken.queue.taken).toBe(1000);
    next = fill(taken, next, 998);
    expect(taken.state()).toBe('streaming');

    // A new attempt starts slowly again.
    taken.receiver.reset();
    fill(taken, next, START_QUEUED_CHANGES);
    expect(taken.state()).toBe('paused');
    expect(taken.events.filter((e) => e.startsWith('failed'))).toEqual([]);
  });

  it('does not touch the state or the stream while the link is not streaming', () => {
    const h = harness('connecting');
    h.feed(begin(1), rel, insert(1), insert(2), commit(1), begin(2), insert(3), insert(4), commit(2));
    expect(h.queue.changes).toBe(4);
    expect(h.events).toEqual([]);
    expect(h.state()).toBe('connecting');
  });

  it('answers a keepalive that asks for a reply at once, and on others lets the channel decide', () => {
    const h = harness();
    h.receiver.receive(keepalive(500n, true));
    h.receiver.receive(keepalive(600n, false));
    expect(h.events).toEqual(['feedback', 'soon']);
    expect(h.progress.received).toBe(600n);
  });

  it('forgets what it held and what was queued when the attempt starts again', () => {
    const h = harness();
    h.feed(begin(1), rel, insert(1), insert(2), insert(3), insert(4), insert(5)); // a large transaction, batches queued
    expect(h.queue.changes + h.receiver.held).toBe(5);
    h.receiver.reset();
    expect(h.queue.changes).toBe(0);
    expect(h.receiver.held).toBe(0);
  });
});
