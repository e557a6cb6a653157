import type { LinkStatus } from '../../src/link/link.js';

/** A link as GET /status reports it (src/link/link.ts LinkStatus), with the given fields changed. */
export function linkStatus(peer: string, extra: Partial<LinkStatus> = {}): LinkStatus {
  return {
    peer,
    state: 'streaming',
    slot: `pgbidi_${peer}_to_n1`,
    origin: `pgbidi_${peer}`,
    synchronous: false,
    peerServerVersionNum: 180_000,
    receivedLsn: '0/1A2B3C4D',
    appliedLsn: '0/1A2B3C00',
    confirmedLsn: '0/1A2B0000',
    lagSeconds: 0.04,
    lastAppliedCommitTime: '2026-12-02T09:00:00.000Z',
    lastHeartbeatTime: '2026-12-02T09:00:00.500Z',
    queuedChanges: 0,
    transactionsApplied: 1234,
    transactionsFiltered: 17,
    changesApplied: 5678,
    conflicts: 3,
    reconnects: 0,
    lastError: null,
    haltedAt: null,
    ...extra,
  };
}

export const LONG_STATUS_ERROR = {
  message: 'terminating connection due to administrator command; the peer n3 was restarted while a transaction of 1200 changes was being applied',
  code: '57P01',
  at: '2026-12-02T08:59:58.123Z',
};
