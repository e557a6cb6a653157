import { describe, expect, it } from 'vitest';
import { TruncatedMessageError } from '../../src/protocol/byte-reader.js';
import { decodePgoutput, decodeStreamMessage, decodeStreamedBody } from '../../src/protocol/pgoutput-decoder.js';
import { decodeReplicationMessage } from '../../src/protocol/replication-messages.js';
import { ByteBuilder, PgoutputBuilder, textColumn, xlogDataPayload } from '../support/pgoutput-builder.js';

// Protocol 2 ("Logical Replication Message Formats"): Stream Start 'S' Int32 xid, Int8 first;
// Stream Stop 'E'; Stream Commit 'c' Int32 xid, Int8 flags, Int64 commit LSN, Int64 end LSN, Int64
// commit time; Stream Abort 'A' Int32 xid, Int32 subxid; inside a block, I/U/D/T/R/Y/M carry an
// Int32 xid right after their tag.

/** A protocol 1 message with the xid a stream block adds after its tag. */
function inStream(xid: number, message: Buffer): Buffer {
  return Buffer.concat([message.subarray(0, 1), new ByteBuilder().uint32(xid).build(), message.subarray(1)]);
}

describe('decodeStreamMessage', () => {
  it('decodes Stream Start, Stop, Commit and Abort with xids above 2^31', () => {
    expect(
      decodeStreamMessage(
        new ByteBuilder()
          .char('S')
          .uint32(2 ** 31 + 5)
          .byte(1)
          .build(),
        false,
      ),
    ).toStrictEqual({
      tag: 'stream-start',
      xid: 2147483653,
      first: true,
    });
    expect(decodeStreamMessage(new ByteBuilder().char('E').build(), true)).toStrictEqual({ tag: 'stream-stop' });
    const commit = new ByteBuilder().char('c').uint32(900).byte(0).uint64(0x1_0000_0010n).uint64(0x1_0000_0040n).int64(-5n).build();
    expect(decodeStreamMessage(commit, false)).toStrictEqual({
      tag: 'stream-commit',
      xid: 900,
      flags: 0,
      commitLsn: 0x1_0000_0010n,
      endLsn: 0x1_0000_0040n,
      commitTime: -5n,
    });
    expect(decodeStreamMessage(new ByteBuilder().char('A').uint32(900).uint32(905).build(), false)).toStrictEqual({
      tag: 'stream-abort',
      xid: 900,
      subxid: 905,
    });
  });

  it('cuts the xid out of a change inside a block, leaving the protocol 1 message', () => {
    const insert = new PgoutputBuilder().insert({ relationId: 16384, newTuple: [textColumn('a'), textColumn('€')] }).build();
    const streamed = decodeStreamMessage(inStream(77, insert), true);
    expect(streamed?.tag).toBe('streamed');
    if (streamed?.tag !== 'streamed') return;
    expect(streamed.xid).toBe(77);
    const message = Buffer.concat([Buffer.from([streamed.messageTag]), streamed.body]);
    expect(message.equals(insert)).toBe(true);
    expect(decodePgoutput(message)).toStrictEqual({ tag: 'insert', relationId: 16384, newTuple: ['a', '€'] });
    expect(decodeStreamedBody(streamed.messageTag, streamed.body)).toStrictEqual(decodePgoutput(message));
  });

  it('leaves messages outside a block, and Begin, Commit and Origin anywhere, to decodePgoutput', () => {
    const insert = new PgoutputBuilder().insert({ relationId: 1, newTuple: [textColumn('x')] }).build();
    expect(decodeStreamMessage(insert, false)).toBeNull();
    expect(decodeStreamMessage(new PgoutputBuilder().origin({ originLsn: 1n, originName: 'o' }).build(), true)).toBeNull();
    expect(decodeStreamMessage(new PgoutputBuilder().begin({ finalLsn: 1n, commitTime: 1n, xid: 1 }).build(), false)).toBeNull();
  });

  it('fails with a typed error on a truncated stream message', () => {
    expect(() => decodeStreamMessage(new ByteBuilder().char('S').uint32(1).build(), false)).toThrow(TruncatedMessageError);
    expect(() => decodeStreamMessage(new ByteBuilder().char('I').byte(0).build(), true)).toThrow(TruncatedMessageError);
  });

  it('is applied by decodeReplicationMessage according to the block the caller says it is in', () => {
    const payload = inStream(9, new PgoutputBuilder().message({ transactional: true, lsn: 5n, prefix: 'p', content: Buffer.from('c') }).build());
    const chunk = xlogDataPayload({ walStart: 0n, walEnd: 0n, sendTime: 0n, payload });
    const m = decodeReplicationMessage(chunk, true);
    expect(m.kind === 'xlogdata' && m.message.tag).toBe('streamed');
  });
});
