import { describe, expect, it } from 'vitest';
import type { PgoutputMessage } from '../../src/protocol/pgoutput-messages.js';
import { OutOfOrderMessageError, TransactionSequencer } from '../../src/protocol/transaction-sequencer.js';

/**
 * Exhaustive transition table. Positions:
 *
 *            BEGIN            ORIGIN | change | schema | message
 *   idle ───────────▶ after-begin ───────────────────────────────▶ in-transaction
 *     ▲                    │ COMMIT                                    │ COMMIT
 *     └────────────────────┴───────────────────────────────────────────┘
 *
 * The position after each message is observed from the outside: `currentBegin` is null only when
 * idle, and an ORIGIN is accepted only directly after BEGIN.
 */

type Position = 'idle' | 'after-begin' | 'in-transaction';

const FINAL_LSN = 0x16_b374_d848n;

const begin: PgoutputMessage = { tag: 'begin', finalLsn: FINAL_LSN, commitTime: 1n, xid: 700 };
const origin: PgoutputMessage = { tag: 'origin', originLsn: 0x5_0000_0000n, originName: 'pgbidi_b' };
const commit: PgoutputMessage = { tag: 'commit', flags: 0, commitLsn: FINAL_LSN, endLsn: FINAL_LSN + 0x30n, commitTime: 1n };

const messages = {
  begin,
  origin,
  relation: { tag: 'relation', relationId: 16384, namespace: 'public', name: 't', replicaIdentity: 'default', columns: [] },
  type: { tag: 'type', typeOid: 16385, namespace: 'public', name: 'mood' },
  insert: { tag: 'insert', relationId: 16384, newTuple: ['1'] },
  update: { tag: 'update', relationId: 16384, oldKind: null, oldTuple: null, newTuple: ['1'] },
  delete: { tag: 'delete', relationId: 16384, oldKind: 'key', oldTuple: ['1'] },
  truncate: { tag: 'truncate', cascade: false, restartIdentity: false, relationIds: [16384] },
  'message (transactional)': { tag: 'message', transactional: true, lsn: 1n, prefix: 'p', content: Buffer.from('x') },
  'message (non-transactional)': { tag: 'message', transactional: false, lsn: 1n, prefix: 'p', content: Buffer.from('x') },
  commit,
} satisfies Record<string, PgoutputMessage>;

type Kind = keyof typeof messages;

/** Expected outcome: the position after the message, or 'rejected'. */
const table: Record<Position, Record<Kind, Position | 'rejected'>> = {
  idle: {
    begin: 'after-begin',
    origin: 'rejected',
    relation: 'idle',
    type: 'idle',
    insert: 'rejected',
    update: 'rejected',
    delete: 'rejected',
    truncate: 'rejected',
    'message (transactional)': 'rejected',
    'message (non-transactional)': 'idle',
    commit: 'rejected',
  },
  'after-begin': {
    begin: 'rejected',
    origin: 'in-transaction',
    relation: 'in-transaction',
    type: 'in-transaction',
    insert: 'in-transaction',
    update: 'in-transaction',
    delete: 'in-transaction',
    truncate: 'in-transaction',
    'message (transactional)': 'in-transaction',
    'message (non-transactional)': 'in-transaction',
    commit: 'idle',
  },
  'in-transaction': {
    begin: 'rejected',
    origin: 'rejected',
    relation: 'in-transaction',
    type: 'in-transaction',
    insert: 'in-transaction',
    update: 'in-transaction',
    delete: 'in-transaction',
    truncate: 'in-transaction',
    'message (transactional)': 'in-transaction',
    'message (non-transactional)': 'in-transaction',
    commit: 'idle',
  },
};

/** A sequencer driven into `position` by real messages. */
function sequencerAt(position: Position): TransactionSequencer {
  const s = new TransactionSequencer();
  if (position !== 'idle') s.accept(begin);
  if (position === 'in-transaction') s.accept(messages.insert);
  return s;
}

/** Observes the position; consumes the sequencer (it may accept a probing ORIGIN). */
function probePosition(s: TransactionSequencer): Position {
  if (s.currentBegin === null) return 'idle';
  try {
    s.accept(origin);
    return 'after-begin';
  } catch (e) {
    if (e instanceof OutOfOrderMessageError) return 'in-transaction';
    throw e;
  }
}

const rows = (Object.keys(table) as Position[]).flatMap((position) =>
  (Object.keys(messages) as Kind[]).map((kind) => ({ position, kind, outcome: table[position][kind] })),
);

describe('TransactionSequencer transition table', () => {
  it('the probe itself tells the three positions apart', () => {
    expect(probePosition(sequencerAt('idle'))).toBe('idle');
    expect(probePosition(sequencerAt('after-begin'))).toBe('after-begin');
    expect(probePosition(sequencerAt('in-transaction'))).toBe('in-transaction');
  });

  it('covers every position × message kind', () => {
    expect(rows.length).toBe(3 * 11);
    expect(new Set(rows.map((r) => r.kind)).size).toBe(11);
  });

  it.each(rows)('$position + $kind → $outcome', ({ position, kind, outcome }) => {
    const s = sequencerAt(position);
    const message = messages[kind];
    if (outcome === 'rejected') {
      let caught: unknown;
      try {
        s.accept(message);
      } catch (e) {
        caught = e;
      }
      expect(caught).toBeInstanceOf(OutOfOrderMessageError);
      expect(caught).toMatchObject({ code: 'PGBIDI_OUT_OF_ORDER_MESSAGE', name: 'OutOfOrderMessageError' });
      // A rejected message leaves the position unchanged.
      expect(probePosition(s)).toBe(position);
    } else {
      s.accept(message);
      expect(probePosition(s)).toBe(outcome);
    }
  });
});

describe('TransactionSequencer state', () => {
  it('rejects a COMMIT whose LSN differs from BEGIN final LSN, and stays in the transaction', () => {
    const s = new TransactionSequencer();
    s.accept(begin);
    s.accept(messages.insert);
    let caught: unknown;
    try {
      s.accept({ ...commit, commitLsn: FINAL_LSN + 1n });
    } catch (e) {
      caught = e;
    }
    expect(caught).toBeInstanceOf(OutOfOrderMessageError);
    expect(caught).toMatchObject({ code: 'PGBIDI_OUT_OF_ORDER_MESSAGE', messageTag: 'COMMIT' });
    expect(s.currentBegin).toBe(begin);
    s.accept(commit);
    expect(s.currentBegin).toBeNull();
  });

  it('compares commit and final LSNs as full 64-bit values', () => {
    const high: PgoutputMessage = { tag: 'begin', finalLsn: 2n ** 64n - 1n, commitTime: 0n, xid: 1 };
    const s = new TransactionSequencer();
    s.accept(high);
    expect(() => s.accept({ ...commit, commitLsn: 2n ** 64n - 2n })).toThrow(OutOfOrderMessageError);
    s.accept({ ...commit, commitLsn: 2n ** 64n - 1n });
    expect(s.currentBegin).toBeNull();
  });

  it('exposes the open BEGIN and ORIGIN and clears them at COMMIT', () => {
    const s = new TransactionSequencer();
    expect(s.currentBegin).toBeNull();
    expect(s.currentOrigin).toBeNull();
    s.accept(begin);
    expect(s.currentBegin).toBe(begin);
    expect(s.currentOrigin).toBeNull();
    s.accept(origin);
    expect(s.currentOrigin).toBe(origin);
    s.accept(messages.insert);
    expect(s.currentOrigin).toBe(origin);
    s.accept(commit);
    expect(s.currentBegin).toBeNull();
    expect(s.currentOrigin).toBeNull();
  });

  it('does not carry an ORIGIN into the next transaction', () => {
    const s = new TransactionSequencer();
    s.accept(begin);
    s.accept(origin);
    s.accept(commit);
    const next: PgoutputMessage = { tag: 'begin', finalLsn: FINAL_LSN + 0x100n, commitTime: 2n, xid: 701 };
    s.accept(next);
    expect(s.currentBegin).toBe(next);
    expect(s.currentOrigin).toBeNull();
  });

  it('allows non-transactional messages and schema messages between transactions', () => {
    const s = new TransactionSequencer();
    s.accept(messages['message (non-transactional)']);
    s.accept(messages.relation);
    s.accept(messages.type);
    s.accept(messages['message (non-transactional)']);
    expect(s.currentBegin).toBeNull();
    s.accept(begin);
    expect(s.currentBegin).toBe(begin);
  });

  it('accepts a typical stream: BEGIN, ORIGIN, RELATION, changes, COMMIT, twice', () => {
    const s = new TransactionSequencer();
    const openXids: Array<number | null> = [];
    for (let i = 0; i < 2; i++) {
      const { relation, insert, update, delete: del, truncate } = messages;
      for (const m of [begin, origin, relation, insert, update, del, truncate, commit]) {
        s.accept(m);
        openXids.push(s.currentBegin?.xid ?? null);
      }
    }
    const oneTransaction = [700, 700, 700, 700, 700, 700, 700, null];
    expect(openXids).toEqual([...oneTransaction, ...oneTransaction]);
  });
});
