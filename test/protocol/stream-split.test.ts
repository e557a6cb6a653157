import { isDeepStrictEqual } from 'node:util';
import { CopyDataMessage } from 'pg-protocol/dist/messages.js';
import type { BackendMessage } from 'pg-protocol/dist/messages.js';
import { Parser } from 'pg-protocol/dist/parser.js';
import { describe, expect, it } from 'vitest';
import type { PgoutputMessage } from '../../src/protocol/pgoutput-messages.js';
import { UNCHANGED_TOAST } from '../../src/protocol/pgoutput-messages.js';
import type { ReplicationMessage } from '../../src/protocol/replication-messages.js';
import { decodeReplicationMessage } from '../../src/protocol/replication-messages.js';
import {
  binaryColumn,
  copyBothResponseFrame,
  copyDataFrame,
  keepalivePayload,
  nullColumn,
  PgoutputBuilder,
  textColumn,
  unchangedToastColumn,
  xlogDataPayload,
} from '../support/pgoutput-builder.js';

/**
 * The driver hands us CopyData messages whose `chunk` is a view into its receive buffer, which it
 * reuses for the next network read. Decoding synchronously in the callback must give the same
 * messages however the byte stream was cut into reads.
 */

type Observed = ReplicationMessage | { readonly backend: string };

interface Frame {
  readonly payload: Buffer;
  readonly expected: ReplicationMessage;
}

const SEND_TIME = 757479845123456n;
const XLOGDATA_HEADER_BYTES = 25;

function wal(lsn: bigint, payload: Buffer, message: PgoutputMessage): Frame {
  return {
    payload: xlogDataPayload({ walStart: lsn, walEnd: lsn, sendTime: SEND_TIME, payload }),
    expected: {
      kind: 'xlogdata',
      walStart: lsn,
      walEnd: lsn,
      sendTime: SEND_TIME,
      message,
      byteLength: XLOGDATA_HEADER_BYTES + payload.length,
    },
  };
}

function keepalive(walEnd: bigint, replyRequested: boolean): Frame {
  return {
    payload: keepalivePayload({ walEnd, sendTime: SEND_TIME + 1n, replyRequested }),
    expected: { kind: 'keepalive', walEnd, sendTime: SEND_TIME + 1n, replyRequested },
  };
}

const b = (): PgoutputBuilder => new PgoutputBuilder();
const LONG_TEXT = 'ünïcödé 🐘 '.repeat(40);
const BYTES = Buffer.from([0, 1, 2, 0xfe, 0xff, 0]);

const frames: readonly Frame[] = [
  keepalive(0x16_0000_0000n, false),
  // Transaction 1: every kind of message.
  wal(0x16_0000_0010n, b().begin({ finalLsn: 0x16_0000_0100n, commitTime: SEND_TIME, xid: 3_000_000_001 }).build(), {
    tag: 'begin',
    finalLsn: 0x16_0000_0100n,
    commitTime: SEND_TIME,
    xid: 3000000001,
  }),
  wal(0x16_0000_0010n, b().origin({ originLsn: 0x9_0000_0042n, originName: 'pgbidi_node_b' }).build(), {
    tag: 'origin',
    originLsn: 0x9_0000_0042n,
    originName: 'pgbidi_node_b',
  }),
  wal(
    0x16_0000_0020n,
    b()
      .relation({
        relationId: 16384,
        namespace: 'public',
        name: 'items',
        replicaIdentity: 'd',
        columns: [
          { flags: 1, name: 'id', typeOid: 20, typeMod: -1 },
          { flags: 0, name: 'body', typeOid: 25, typeMod: -1 },
          { flags: 0, name: 'blob', typeOid: 17, typeMod: -1 },
        ],
      })
      .build(),
    {
      tag: 'relation',
      relationId: 16384,
      namespace: 'public',
      name: 'items',
      replicaIdentity: 'default',
      columns: [
        { isKey: true, name: 'id', typeOid: 20, typeMod: -1 },
        { isKey: false, name: 'body', typeOid: 25, typeMod: -1 },
        { isKey: false, name: 'blob', typeOid: 17, typeMod: -1 },
      ],
    },
  ),
  wal(0x16_0000_0020n, b().type({ typeOid: 3_000_000_000, namespace: 'public', name: 'mood' }).build(), {
    tag: 'type',
    typeOid: 3000000000,
    namespace: 'public',
    name: 'mood',
  }),
  wal(
    0x16_0000_0030n,
    b()
      .insert({ relationId: 16384, newTuple: [textColumn('1'), textColumn(LONG_TEXT), binaryColumn(BYTES)] })
      .build(),
    { tag: 'insert', relationId: 16384, newTuple: ['1', LONG_TEXT, Buffer.from([0, 1, 2, 0xfe, 0xff, 0])] },
  ),
  wal(
    0x16_0000_0040n,
    b()
      .update({
        relationId: 16384,
        old: { marker: 'K', tuple: [textColumn('1'), nullColumn, nullColumn] },
        newTuple: [textColumn('2'), textColumn('moved'), nullColumn],
      })
      .build(),
    { tag: 'update', relationId: 16384, oldKind: 'key', oldTuple: ['1', null, null], newTuple: ['2', 'moved', null] },
  ),
  wal(
    0x16_0000_0050n,
    b()
      .update({
        relationId: 16384,
        old: { marker: 'O', tuple: [textColumn('2'), textColumn('moved'), binaryColumn(Buffer.from([7]))] },
        newTuple: [textColumn('2'), unchangedToastColumn, binaryColumn(Buffer.from([8, 9]))],
      })
      .build(),
    {
      tag: 'update',
      relationId: 16384,
      oldKind: 'full',
      oldTuple: ['2', 'moved', Buffer.from([7])],
      newTuple: ['2', UNCHANGED_TOAST, Buffer.from([8, 9])],
    },
  ),
  wal(
    0x16_0000_0060n,
    b()
      .delete({ relationId: 16384, marker: 'K', oldTuple: [textColumn('2'), nullColumn, nullColumn] })
      .build(),
    {
      tag: 'delete',
      relationId: 16384,
      oldKind: 'key',
      oldTuple: ['2', null, null],
    },
  ),
  wal(
    0x16_0000_0070n,
    b()
      .truncate({ cascade: false, restartIdentity: true, relationIds: [16384] })
      .build(),
    {
      tag: 'truncate',
      cascade: false,
      restartIdentity: true,
      relationIds: [16384],
    },
  ),
  wal(0x16_0000_0080n, b().message({ transactional: true, lsn: 0x16_0000_0080n, prefix: 'pgbidi', content: BYTES }).build(), {
    tag: 'message',
    transactional: true,
    lsn: 0x16_0000_0080n,
    prefix: 'pgbidi',
    content: Buffer.from([0, 1, 2, 0xfe, 0xff, 0]),
  }),
  wal(0x16_0000_0100n, b().commit({ commitLsn: 0x16_0000_0100n, endLsn: 0x16_0000_0130n, commitTime: SEND_TIME }).build(), {
    tag: 'commit',
    flags: 0,
    commitLsn: 0x16_0000_0100n,
    endLsn: 0x16_0000_0130n,
    commitTime: SEND_TIME,
  }),
  keepalive(0x16_0000_0130n, true),
  wal(
    0x16_0000_0140n,
    b()
      .message({ transactional: false, lsn: 0x16_0000_0140n, prefix: 'hint', content: Buffer.from('🐘') })
      .build(),
    {
      tag: 'message',
      transactional: false,
      lsn: 0x16_0000_0140n,
      prefix: 'hint',
      content: Buffer.from([0xf0, 0x9f, 0x90, 0x98]),
    },
  ),
  // Transaction 2: a second relation, no origin.
  wal(
    0x16_0000_0200n,
    b()
      .begin({ finalLsn: 0x16_0000_0300n, commitTime: SEND_TIME + 10n, xid: 3_000_000_002 })
      .build(),
    {
      tag: 'begin',
      finalLsn: 0x16_0000_0300n,
      commitTime: SEND_TIME + 10n,
      xid: 3000000002,
    },
  ),
  wal(0x16_0000_0200n, b().type({ typeOid: 16, namespace: '', name: 'bool' }).build(), {
    tag: 'type',
    typeOid: 16,
    namespace: 'pg_catalog',
    name: 'bool',
  }),
  wal(
    0x16_0000_0200n,
    b()
      .relation({
        relationId: 2_147_483_650,
        namespace: '',
        name: 'catalog_like',
        replicaIdentity: 'f',
        columns: [{ flags: 1, name: 'k', typeOid: 25, typeMod: -1 }],
      })
      .build(),
    {
      tag: 'relation',
      relationId: 2147483650,
      namespace: 'pg_catalog',
      name: 'catalog_like',
      replicaIdentity: 'full',
      columns: [{ isKey: true, name: 'k', typeOid: 25, typeMod: -1 }],
    },
  ),
  wal(
    0x16_0000_0210n,
    b()
      .insert({ relationId: 2_147_483_650, newTuple: [textColumn('日本')] })
      .build(),
    {
      tag: 'insert',
      relationId: 2147483650,
      newTuple: ['日本'],
    },
  ),
  wal(
    0x16_0000_0220n,
    b()
      .insert({ relationId: 16384, newTuple: [textColumn('3'), nullColumn, binaryColumn(Buffer.alloc(0))] })
      .build(),
    {
      tag: 'insert',
      relationId: 16384,
      newTuple: ['3', null, Buffer.alloc(0)],
    },
  ),
  wal(
    0x16_0000_0230n,
    b()
      .update({ relationId: 16384, newTuple: [textColumn('3'), textColumn('x'), nullColumn] })
      .build(),
    {
      tag: 'update',
      relationId: 16384,
      oldKind: null,
      oldTuple: null,
      newTuple: ['3', 'x', null],
    },
  ),
  wal(
    0x16_0000_0240n,
    b()
      .delete({ relationId: 2_147_483_650, marker: 'O', oldTuple: [textColumn('日本')] })
      .build(),
    {
      tag: 'delete',
      relationId: 2147483650,
      oldKind: 'full',
      oldTuple: ['日本'],
    },
  ),
  wal(
    0x16_0000_0300n,
    b()
      .commit({ commitLsn: 0x16_0000_0300n, endLsn: 0x16_0000_0330n, commitTime: SEND_TIME + 10n })
      .build(),
    { tag: 'commit', flags: 0, commitLsn: 0x16_0000_0300n, endLsn: 0x16_0000_0330n, commitTime: SEND_TIME + 10n },
  ),
  keepalive(0x16_0000_0330n, false),
  // Transaction 3: replicated from another origin, ends in TRUNCATE.
  wal(
    0x17_0000_0000n,
    b()
      .begin({ finalLsn: 0x17_0000_0100n, commitTime: SEND_TIME + 20n, xid: 4_294_967_295 })
      .build(),
    {
      tag: 'begin',
      finalLsn: 0x17_0000_0100n,
      commitTime: SEND_TIME + 20n,
      xid: 4294967295,
    },
  ),
  wal(0x17_0000_0000n, b().origin({ originLsn: 0xffff_ffff_0000_0001n, originName: 'pgbidi_nœud_c' }).build(), {
    tag: 'origin',
    originLsn: 0xffff_ffff_0000_0001n,
    originName: 'pgbidi_nœud_c',
  }),
  wal(
    0x17_0000_0010n,
    b()
      .insert({ relationId: 16384, newTuple: [textColumn('4'), textColumn(LONG_TEXT), nullColumn] })
      .build(),
    {
      tag: 'insert',
      relationId: 16384,
      newTuple: ['4', LONG_TEXT, null],
    },
  ),
  wal(
    0x17_0000_0020n,
    b()
      .truncate({ cascade: true, restartIdentity: true, relationIds: [16384, 2_147_483_650] })
      .build(),
    {
      tag: 'truncate',
      cascade: true,
      restartIdentity: true,
      relationIds: [16384, 2147483650],
    },
  ),
  wal(
    0x17_0000_0100n,
    b()
      .commit({ commitLsn: 0x17_0000_0100n, endLsn: 0x17_0000_0130n, commitTime: SEND_TIME + 20n })
      .build(),
    { tag: 'commit', flags: 0, commitLsn: 0x17_0000_0100n, endLsn: 0x17_0000_0130n, commitTime: SEND_TIME + 20n },
  ),
  keepalive(0x17_0000_0130n, true),
  keepalive(0x17_0000_0130n, false),
];

const stream = Buffer.concat([copyBothResponseFrame(), ...frames.map((f) => copyDataFrame(f.payload))]);
const expected: readonly Observed[] = [{ backend: 'replicationStart' }, ...frames.map((f) => f.expected)];

/**
 * Feeds the pieces to a fresh pg-protocol Parser, decoding each CopyData chunk inside the callback.
 * Each piece is passed as its own allocation, as a socket delivers it: the Parser keeps a partial
 * read and may later write the next read into that same memory, so handing it views of `stream`
 * would let it overwrite the shared fixture.
 */
function parsePieces(pieces: readonly Buffer[]): Observed[] {
  const parser = new Parser();
  const observed: Observed[] = [];
  const onMessage = (msg: BackendMessage): void => {
    observed.push(msg instanceof CopyDataMessage ? decodeReplicationMessage(msg.chunk) : { backend: msg.name });
  };
  for (const piece of pieces) parser.parse(Buffer.from(piece), onMessage);
  return observed;
}

describe('a replication byte stream split across reads', () => {
  it('has the intended shape', () => {
    expect(frames.length).toBe(30);
    const tags = frames.map((f) => (f.expected.kind === 'xlogdata' ? f.expected.message.tag : 'keepalive'));
    expect(new Set(tags)).toEqual(new Set(['keepalive', 'begin', 'origin', 'relation', 'type', 'insert', 'update', 'delete', 'truncate', 'message', 'commit']));
  });

  it('decodes to the expected sequence in one read', () => {
    expect(parsePieces([stream])).toStrictEqual(expected);
  });

  it('decodes to the expected sequence when split into two reads at every byte boundary', () => {
    const failures: number[] = [];
    for (let cut = 0; cut <= stream.length; cut++) {
      const observed = parsePieces([stream.subarray(0, cut), stream.subarray(cut)]);
      if (!isDeepStrictEqual(observed, expected)) failures.push(cut);
    }
    expect(failures).toEqual([]);
  });

  it('decodes to the expected sequence when fed one byte at a time', () => {
    const pieces: Buffer[] = [];
    for (let i = 0; i < stream.length; i++) pieces.push(stream.subarray(i, i + 1));
    expect(parsePieces(pieces)).toStrictEqual(expected);
  });

  it('decodes to the expected sequence when fed in independently allocated copies that are then overwritten', () => {
    // Closer to a socket that recycles memory: each read is its own allocation, and once the parser
    // has consumed a read completely we scribble over it.
    const parser = new Parser();
    const observed: Observed[] = [];
    let consumed = 0;
    const onMessage = (msg: BackendMessage): void => {
      observed.push(msg instanceof CopyDataMessage ? decodeReplicationMessage(msg.chunk) : { backend: msg.name });
    };
    const frameEnds: number[] = [];
    let end = 0;
    for (const frame of [copyBothResponseFrame(), ...frames.map((f) => copyDataFrame(f.payload))]) {
      end += frame.length;
      frameEnds.push(end);
    }
    // Cut exactly at frame boundaries in groups of three frames, so each read is fully consumed.
    for (let i = 2; i < frameEnds.length + 2; i += 3) {
      const until = frameEnds[Math.min(i, frameEnds.length - 1)] ?? stream.length;
      const read = Buffer.alloc(until - consumed);
      stream.copy(read, 0, consumed, until);
      parser.parse(read, onMessage);
      read.fill(0xcc);
      consumed = until;
    }
    expect(consumed).toBe(stream.length);
    expect(observed).toStrictEqual(expected);
  });
});
