import { describe, expect, it } from 'vitest';
import { readinessProblems } from '../../src/http/http-server.js';
import { linkStatus } from '../support/status-fixture.js';

describe('readinessProblems', () => {
  it('names links that are not streaming or lag beyond the bound, and leaves parted peers out', () => {
    const links = [
      linkStatus('n2', { lagSeconds: 1 }),
      linkStatus('n3', { state: 'backoff' }),
      linkStatus('n4', { lagSeconds: 45 }),
      linkStatus('n5', { state: 'parted', lagSeconds: 0 }),
    ];
    expect(readinessProblems(links, 30)).toEqual(['link from n3 is backoff', 'link from n4 lags 45.0 s (bound 30 s)']);
    expect(readinessProblems([linkStatus('n5', { state: 'parted' })], 30)).toEqual([]);
  });
});
