import { describe, expect, it } from 'vitest';
import { formatStatusTable } from '../src/status-format.js';
import { LONG_STATUS_ERROR, linkStatus } from './support/status-fixture.js';

describe('pgbidi status table', () => {
  it('prints every link with its LSNs, lag, counts and last error in full', () => {
    expect(formatStatusTable('n1', [linkStatus('n2'), linkStatus('n3', { state: 'backoff', lagSeconds: 12.345, lastError: LONG_STATUS_ERROR })])).toBe(
      [
        'node n1',
        'peer  state      received    applied     confirmed   lag    applied txns  conflicts  last error',
        'n2    streaming  0/1A2B3C4D  0/1A2B3C00  0/1A2B0000  0.0s   1234          3          -',
        `n3    backoff    0/1A2B3C4D  0/1A2B3C00  0/1A2B0000  12.3s  1234          3          2026-12-02T08:59:58.123Z 57P01 ${LONG_STATUS_ERROR.message}`,
        '',
      ].join('\n'),
    );
  });
});
