import { describe, expect, it } from 'vitest';
import { Backoff } from '../../src/link/backoff.js';

describe('Backoff', () => {
  // random() = 1: every delay is its ceiling.
  const backoff = (): Backoff => new Backoff(100, 1000, () => 1);

  it('doubles the delay up to the maximum', () => {
    const b = backoff();
    expect([b.next(), b.next(), b.next(), b.next(), b.next(), b.next()]).toEqual([100, 200, 400, 800, 1000, 1000]);
  });

  it('starts over when a transaction ends past every position done before', () => {
    const b = backoff();
    b.progress(10n);
    b.next();
    b.next();
    b.progress(20n);
    expect(b.next()).toBe(100);
  });

  it('keeps growing while every attempt replays positions done before and fails at the same place', () => {
    const b = backoff();
    b.progress(10n); // attempt 1: heartbeats up to 10, then a transaction that fails (disk full)
    b.progress(15n);
    const delays: number[] = [];
    for (let attempt = 0; attempt < 5; attempt++) {
      delays.push(b.next());
      b.progress(10n); // the next attempt replays the same heartbeats from the origin's progress
      b.progress(15n);
    }
    expect(delays).toEqual([100, 200, 400, 800, 1000]);
  });
});
