import { describe, expect, it } from 'vitest';
import { ProgressTracker } from '../../src/link/progress-tracker.js';
import { unixMsToPgMicros } from '../../src/protocol/pg-time.js';

describe('ProgressTracker', () => {
  it('confirms only durable positions while anything is pending, and idle positions once nothing is', () => {
    const p = new ProgressTracker(() => 0);
    p.startAttempt(100n);
    p.queued(1n);
    p.processed(150n, false); // a filtered transaction behind a pending one
    p.keepalive(160n, false);
    expect(p.confirm(false)).toBe(100n);
    p.applyDone(200n, true);
    expect(p.applied).toBe(200n);
    expect(p.confirm(true)).toBe(100n); // 200 is applied but not flushed: nothing past the durable position
    p.durableUpTo(200n);
    expect(p.confirm(true)).toBe(200n);
    p.keepalive(300n, false);
    expect(p.confirm(true)).toBe(300n);
    expect(p.confirm(false)).toBe(300n); // never moves back
  });

  it('confirms no durable position that apply has not seen committed (a commit still in flight)', () => {
    const p = new ProgressTracker(() => 0);
    p.startAttempt(100n);
    p.queued(1n);
    p.durableUpTo(200n); // read on the control connection while the commit of 200 was in flight
    expect(p.confirm(false)).toBe(100n);
    p.applyDone(200n, true);
    expect(p.confirm(false)).toBe(200n);
  });

  it('counts a transaction that wrote nothing as processed, not applied', () => {
    const p = new ProgressTracker(() => 0);
    p.startAttempt(0n);
    p.queued(1n);
    p.applyDone(500n, false);
    expect(p.applied).toBe(0n);
    expect(p.confirm(true)).toBe(500n);
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
