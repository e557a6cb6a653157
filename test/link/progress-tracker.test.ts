import { describe, expect, it } from 'vitest';
import { ProgressTracker } from '../../src/link/progress-tracker.js';
import { unixMsToPgMicros } from '../../src/protocol/pg-time.js';

describe('ProgressTracker', () => {
  it('confirms a filtered or keepalive position only once the transactions before it are done and durable', () => {
    const p = new ProgressTracker(() => 0);
    p.startAttempt(100n);
    p.queued(1n);
    p.processed(150n); // a filtered transaction behind a pending one
    p.keepalive(160n, false);
    expect(p.confirm()).toBe(100n);
    p.applyDone(200n, true);
    expect(p.applied).toBe(200n);
    expect(p.confirm()).toBe(100n); // 200 is applied but not flushed: nothing past the durable position
    p.durableUpTo(200n);
    expect(p.confirm()).toBe(200n);
    p.keepalive(300n, false);
    expect(p.confirm()).toBe(300n);
    p.keepalive(400n, true); // inside a transaction being received: not a position to confirm
    expect(p.confirm()).toBe(300n);
    p.durableUpTo(100n);
    expect(p.confirm()).toBe(300n); // never moves back
  });

  it('confirms positions behind done transactions while later ones are still applying (heartbeats in step with feedback)', () => {
    const p = new ProgressTracker(() => 0);
    p.startAttempt(100n);
    // Every feedback finds the next heartbeat in apply: the ones before it are confirmed all the same.
    for (let i = 1n; i <= 5n; i++) {
      p.queued(i);
      p.processed(1000n * i + 500n); // filtered behind it
      p.applyDone(1000n * i, false); // the heartbeat wrote nothing
      p.queued(i);
      expect(p.confirm()).toBe(1000n * i + 500n);
      p.applyDone(1000n * i + 900n, false);
    }
    expect(p.confirm()).toBe(5900n);
  });

  it('holds a position behind a commit until that commit is durable, also after later commits', () => {
    const p = new ProgressTracker(() => 0);
    p.startAttempt(100n);
    p.queued(1n);
    p.keepalive(150n, false);
    p.queued(2n);
    p.applyDone(140n, true);
    p.applyDone(180n, true);
    p.durableUpTo(139n);
    expect(p.confirm()).toBe(139n);
    p.durableUpTo(140n);
    expect(p.confirm()).toBe(150n); // 140 is durable; 180 is not, but 150 does not need it
  });

  it('forgets positions waiting behind transactions a failed attempt will receive again', () => {
    const p = new ProgressTracker(() => 0);
    p.startAttempt(100n);
    p.queued(1n);
    p.processed(150n);
    p.endAttempt();
    p.startAttempt(100n);
    p.queued(1n);
    p.applyDone(120n, true);
    p.durableUpTo(120n);
    expect(p.confirm()).toBe(120n);
  });

  it('confirms no durable position that apply has not seen committed (a commit still in flight)', () => {
    const p = new ProgressTracker(() => 0);
    p.startAttempt(100n);
    p.queued(1n);
    p.durableUpTo(200n); // read on the control connection while the commit of 200 was in flight
    expect(p.confirm()).toBe(100n);
    p.applyDone(200n, true);
    expect(p.confirm()).toBe(200n);
  });

  it('counts a transaction that wrote nothing as processed, not applied', () => {
    const p = new ProgressTracker(() => 0);
    p.startAttempt(0n);
    p.queued(1n);
    p.applyDone(500n, false);
    expect(p.applied).toBe(0n);
    expect(p.confirm()).toBe(500n);
  });

  it('measures lag from the oldest unapplied transaction, also across a reconnect until apply resumes', () => {
    let now = 10_000;
    const p = new ProgressTracker(() => now);
    p.startAttempt(0n);
    expect(p.lagSeconds()).toBe(0);
    p.queued(unixMsToPgMicros(7_000));
    p.queued(unixMsToPgMicros(9_000));
    expect(p.lagSeconds()).toBe(3);
    p.applyDone(10n, true);
    expect(p.lagSeconds()).toBe(1);
    p.endAttempt();
    p.startAttempt(10n);
    now = 12_000;
    expect(p.lagSeconds()).toBe(3); // still the transaction committed at 9 s
    p.resumed();
    expect(p.lagSeconds()).toBe(0);
  });
});
