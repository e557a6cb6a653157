import { describe, expect, it } from 'vitest';
import type { LinkHealth } from '../../src/util/link-triage.js';
import { compareAttention, hiddenLinksLine, needsAttention, pickLinks } from '../../src/util/link-triage.js';

const healthy = (extra: Partial<LinkHealth> = {}): LinkHealth => ({ state: 'streaming', lagSeconds: 0.1, hasError: false, conflicts: 0, ...extra });

describe('link triage', () => {
  it('puts a failing state first, then lag, then an error, then conflicts, then the higher lag', () => {
    const order: [string, LinkHealth][] = [
      ['error', healthy({ state: 'error' })],
      ['paused', healthy({ state: 'paused' })],
      ['backoff', healthy({ state: 'backoff', lagSeconds: 0 })],
      ['connecting', healthy({ state: 'connecting' })],
      ['lagging', healthy({ lagSeconds: 5 })],
      ['old error', healthy({ hasError: true })],
      ['conflicts', healthy({ conflicts: 9 })],
      ['some lag', healthy({ lagSeconds: 4.9 })],
      ['healthy', healthy()],
    ];
    const shuffled = [...order].reverse();
    expect(shuffled.sort(([, a], [, b]) => compareAttention(a, b)).map(([name]) => name)).toEqual(order.map(([name]) => name));
    expect(order.filter(([, h]) => needsAttention(h)).map(([name]) => name)).toEqual(['error', 'paused', 'backoff', 'connecting', 'lagging']);
  });

  it('shows the links that need attention most, in their original order', () => {
    const links = ['a', 'b', 'c', 'd', 'e'];
    const health: Record<string, LinkHealth> = {
      a: healthy(),
      b: healthy({ conflicts: 3 }),
      c: healthy(),
      d: healthy({ state: 'backoff' }),
      e: healthy({ conflicts: 1 }),
    };
    const pick = (n: number): { shown: string[]; hidden: string[] } => pickLinks(links, n, (l) => health[l] ?? healthy());
    expect(pick(2)).toEqual({ shown: ['b', 'd'], hidden: ['a', 'c', 'e'] });
    expect(pick(3)).toEqual({ shown: ['b', 'd', 'e'], hidden: ['a', 'c'] });
    expect(pick(0)).toEqual({ shown: [], hidden: links });
    expect(pick(9)).toEqual({ shown: links, hidden: [] });
  });

  it('sums up the hidden links in one line, as much of it as fits', () => {
    const hidden = [healthy({ conflicts: 4 }), healthy({ lagSeconds: 0.34, conflicts: 1 }), healthy()];
    expect(hiddenLinksLine(hidden, true, 120)).toBe('… 3 more links: all streaming, lag ≤ 0.3s, 5 conflicts');
    expect(hiddenLinksLine(hidden, false, 120)).toBe('3 links: all streaming, lag ≤ 0.3s, 5 conflicts');
    expect(hiddenLinksLine([healthy({ conflicts: 1 })], true, 120)).toBe('… 1 more link: streaming, lag ≤ 0.1s, 1 conflict');
    const mixed = [healthy(), healthy({ state: 'connecting', hasError: true }), healthy()];
    expect(hiddenLinksLine(mixed, true, 120)).toBe('… 3 more links: 1 connecting, 2 streaming, lag ≤ 0.1s, 0 conflicts, 1 with an error');
    // Narrower: the conflicts go first, then the error count, then the lag, then the states.
    expect(hiddenLinksLine(mixed, true, 70)).toBe('… 3 more links: 1 connecting, 2 streaming, lag ≤ 0.1s, 1 with an error');
    expect(hiddenLinksLine(mixed, true, 53)).toBe('… 3 more links: 1 connecting, 2 streaming, lag ≤ 0.1s');
    expect(hiddenLinksLine(mixed, true, 50)).toBe('… 3 more links: 1 connecting, 2 streaming');
    expect(hiddenLinksLine(mixed, true, 20)).toBe('… 3 more links');
    expect(hiddenLinksLine(mixed, true, 10)).toBe('… 3 more…');
  });
});
