import { describe, expect, it } from 'vitest';
import { TruncatedMessageError } from '../../src/protocol/byte-reader.js';
import { UnknownMessageError } from '../../src/protocol/pgoutput-decoder.js';
import { UNCHANGED_TOAST } from '../../src/protocol/pgoutput-messages.js';
import { decodeReplicationMessage, encodeStandbyStatus } from '../../src/protocol/replication-messages.js';
import { binaryColumn, keepalivePayload, nullColumn, PgoutputBuilder, textColumn, unchangedToastColumn, xlogDataPayload } from '../support/pgoutput-builder.js';

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;
const UINT64_MAX = 2n ** 64n - 1n;
const XLOGDATA_HEADER_BYTES = 1 + 8 + 8 + 8;

describe('decodeReplicationMessage: XLogData', () => {
  it('decodes the header and the pgoutput payload', () => {
    const payload = new PgoutputBuilder().begin({ finalLsn: 0x16_b374_d848n, commitTime: 757479845123456n, xid: 3_000_000_000 }).build();
    const chunk = xlogDataPayload({ walStart: 0x0123_4567_89ab_cdefn, walEnd: UINT64_MAX, sendTime: INT64_MAX, payload });

    expect(decodeReplicationMessage(chunk)).toStrictEqual({
      kind: 'xlogdata',
      walStart: 0x0123_4567_89ab_cdefn,
      walEnd: 18446744073709551615n,
      sendTime: 9223372036854775807n,
      message: { tag: 'begin', finalLsn: 0x16_b374_d848n, commitTime: 757479845123456n, xid: 3000000000 },
      byteLength: XLOGDATA_HEADER_BYTES + payload.length,
    });
    expect(chunk.length).toBe(25 + 21); // header 1+8+8+8, Begin 1+8+8+4: the fixture has the documented size
  });

  it('accepts 0/0 header positions and a negative send time', () => {
    const payload = new PgoutputBuilder().insert({ relationId: 16384, newTuple: [textColumn('x'), nullColumn] }).build();
    const chunk = xlogDataPayload({ walStart: 0n, walEnd: 0n, sendTime: INT64_MIN, payload });

    expect(decodeReplicationMessage(chunk)).toStrictEqual({
      kind: 'xlogdata',
      walStart: 0n,
      walEnd: 0n,
      sendTime: -9223372036854775808n,
      message: { tag: 'insert', relationId: 16384, newTuple: ['x', null] },
      byteLength: chunk.length,
    });
  });

  it('decodes a chunk that is a view into a larger buffer at an offset', () => {
    const payload = new PgoutputBuilder().commit({ commitLsn: 100n, endLsn: 200n, commitTime: 300n }).build();
    const chunk = xlogDataPayload({ walStart: 1n, walEnd: 2n, sendTime: 3n, payload });
    const backing = Buffer.alloc(chunk.length + 20, 0x55);
    chunk.copy(backing, 7);
    const view = backing.subarray(7, 7 + chunk.length);

    expect(decodeReplicationMessage(view)).toStrictEqual({
      kind: 'xlogdata',
      walStart: 1n,
      walEnd: 2n,
      sendTime: 3n,
      message: { tag: 'commit', flags: 0, commitLsn: 100n, endLsn: 200n, commitTime: 300n },
      byteLength: chunk.length,
    });
  });

  it('an unknown pgoutput tag inside XLogData → UnknownMessageError', () => {
    const payload = Buffer.from('X\u0000\u0000\u0000\u0001', 'latin1');
    const chunk = xlogDataPayload({ walStart: 0n, walEnd: 0n, sendTime: 0n, payload });
    expect(() => decodeReplicationMessage(chunk)).toThrow(UnknownMessageError);
  });
});

describe('decodeReplicationMessage: keepalive', () => {
  it.each([
    { replyRequested: true, walEnd: UINT64_MAX, sendTime: INT64_MIN },
    { replyRequested: false, walEnd: 0x16_b374_d848n, sendTime: 2n ** 53n + 1n },
  ])('replyRequested $replyRequested', ({ replyRequested, walEnd, sendTime }) => {
    const chunk = keepalivePayload({ walEnd, sendTime, replyRequested });
    expect(chunk.length).toBe(18);
    expect(decodeReplicationMessage(chunk)).toStrictEqual({ kind: 'keepalive', walEnd, sendTime, replyRequested });
  });

  it('decodes the exact field values', () => {
    const chunk = Buffer.from('6b' + '0000001600000001' + 'fffffffffffffffe' + '01', 'hex');
    expect(decodeReplicationMessage(chunk)).toStrictEqual({
      kind: 'keepalive',
      walEnd: 0x16_0000_0001n,
      sendTime: -2n,
      replyRequested: true,
    });
  });
});

describe('decodeReplicationMessage: errors', () => {
  it.each(['r', 'h', 'W', 'd', '\u0000'])('unknown CopyData tag %j → UnknownMessageError', (tag) => {
    const chunk = Buffer.concat([Buffer.from(tag, 'latin1'), Buffer.alloc(24)]);
    let caught: unknown;
    try {
      decodeReplicationMessage(chunk);
    } catch (e) {
      caught = e;
    }
    expect(caught).toBeInstanceOf(UnknownMessageError);
    expect(caught).toMatchObject({ code: 'PGBIDI_UNKNOWN_MESSAGE', messageTag: tag });
  });

  const full = [
    keepalivePayload({ walEnd: 1n, sendTime: 2n, replyRequested: true }),
    xlogDataPayload({
      walStart: 1n,
      walEnd: 2n,
      sendTime: 3n,
      payload: new PgoutputBuilder().origin({ originLsn: 4n, originName: 'node_b' }).build(),
    }),
  ];

  it.each(full.map((chunk) => ({ tag: String.fromCharCode(chunk[0] ?? 0), chunk })))(
    "every proper prefix of a '$tag' chunk → TruncatedMessageError",
    ({ chunk }) => {
      const outcomes: string[] = [];
      for (let length = 0; length < chunk.length; length++) {
        try {
          decodeReplicationMessage(chunk.subarray(0, length));
          outcomes.push(`length ${length}: decoded`);
        } catch (e) {
          outcomes.push(e instanceof TruncatedMessageError ? e.code : `length ${length}: ${String(e)}`);
        }
      }
      expect(outcomes).toEqual(new Array<string>(chunk.length).fill('PGBIDI_TRUNCATED_MESSAGE'));
    },
  );
});

describe('decoded XLogData does not alias the input buffer', () => {
  // The driver reuses its receive buffer once the callback returns (node-postgres PR #3776), so every
  // byte the decoded message keeps must be a copy.
  function decodeThenOverwrite(payload: Buffer): { decoded: unknown; chunkLength: number } {
    const chunk = xlogDataPayload({ walStart: 10n, walEnd: 20n, sendTime: 30n, payload });
    const backing = Buffer.alloc(chunk.length + 16);
    chunk.copy(backing, 8);
    const decoded = decodeReplicationMessage(backing.subarray(8, 8 + chunk.length));
    backing.fill(0xaa);
    return { decoded, chunkLength: chunk.length };
  }

  it('tuple text and binary values survive an overwrite of the input', () => {
    const { decoded, chunkLength } = decodeThenOverwrite(
      new PgoutputBuilder()
        .update({
          relationId: 16384,
          old: { marker: 'O', tuple: [textColumn('old ✓'), binaryColumn(Buffer.from([1, 2, 3, 4]))] },
          newTuple: [textColumn('new 🐘'), binaryColumn(Buffer.from([0, 255, 0, 255])), unchangedToastColumn],
        })
        .build(),
    );
    expect(decoded).toStrictEqual({
      kind: 'xlogdata',
      walStart: 10n,
      walEnd: 20n,
      sendTime: 30n,
      message: {
        tag: 'update',
        relationId: 16384,
        oldKind: 'full',
        oldTuple: ['old ✓', Buffer.from([1, 2, 3, 4])],
        newTuple: ['new 🐘', Buffer.from([0, 255, 0, 255]), UNCHANGED_TOAST],
      },
      byteLength: chunkLength,
    });
  });

  it('logical decoding message content and prefix survive an overwrite of the input', () => {
    const { decoded } = decodeThenOverwrite(
      new PgoutputBuilder().message({ transactional: true, lsn: 99n, prefix: 'pgbidi', content: Buffer.from('payload \u0000 bytes', 'utf8') }).build(),
    );
    expect(decoded).toMatchObject({
      message: {
        tag: 'message',
        transactional: true,
        lsn: 99n,
        prefix: 'pgbidi',
        content: Buffer.from('payload \u0000 bytes', 'utf8'),
      },
    });
  });

  it('relation names survive an overwrite of the input', () => {
    const { decoded } = decodeThenOverwrite(
      new PgoutputBuilder()
        .relation({
          relationId: 5,
          namespace: 'app',
          name: 'orders',
          replicaIdentity: 'd',
          columns: [{ flags: 1, name: 'id', typeOid: 20, typeMod: -1 }],
        })
        .build(),
    );
    expect(decoded).toMatchObject({
      message: {
        tag: 'relation',
        relationId: 5,
        namespace: 'app',
        name: 'orders',
        replicaIdentity: 'default',
        columns: [{ isKey: true, name: 'id', typeOid: 20, typeMod: -1 }],
      },
    });
  });
});

describe('encodeStandbyStatus', () => {
  it('produces the exact 34 bytes', () => {
    const bytes = encodeStandbyStatus({
      written: 0x0102_0304_0506_0708n,
      flushed: 0x1112_1314_1516_1718n,
      applied: UINT64_MAX - 1n,
      clientTime: -2n,
      replyRequested: true,
    });
    expect(bytes.toString('hex')).toBe('72' + '0102030405060708' + '1112131415161718' + 'fffffffffffffffe' + 'fffffffffffffffe' + '01');
  });

  it('puts each field at its documented offset', () => {
    const bytes = encodeStandbyStatus({
      written: 0x16_b374_d848n,
      flushed: 0x16_b374_d800n,
      applied: 0x15_0000_0000n,
      clientTime: 757479845123456n,
      replyRequested: false,
    });
    expect(bytes.length).toBe(34);
    expect(bytes.toString('latin1', 0, 1)).toBe('r');
    expect(bytes.readBigUInt64BE(1)).toBe(0x16_b374_d848n);
    expect(bytes.readBigUInt64BE(9)).toBe(0x16_b374_d800n);
    expect(bytes.readBigUInt64BE(17)).toBe(0x15_0000_0000n);
    expect(bytes.readBigInt64BE(25)).toBe(757479845123456n);
    expect(bytes.readUInt8(33)).toBe(0);
  });

  it('encodes extreme values: uint64 max LSNs and int64 min/max client times', () => {
    const max = encodeStandbyStatus({
      written: UINT64_MAX,
      flushed: UINT64_MAX,
      applied: UINT64_MAX,
      clientTime: INT64_MAX,
      replyRequested: true,
    });
    expect(max.toString('hex')).toBe('72' + 'ff'.repeat(24) + '7fffffffffffffff' + '01');

    const min = encodeStandbyStatus({ written: 0n, flushed: 0n, applied: 0n, clientTime: INT64_MIN, replyRequested: false });
    expect(min.toString('hex')).toBe('72' + '00'.repeat(24) + '8000000000000000' + '00');
  });
});
