import { ByteReader } from './byte-reader.js';
import type { Lsn } from './lsn.js';
import type { PgMicros } from './pg-time.js';
import { decodePgoutputAt, decodeStreamMessage, isStreamMessage, UnknownMessageError } from './pgoutput-decoder.js';
import type { PgoutputMessage, StreamControlMessage } from './pgoutput-messages.js';

/**
 * The walsender's CopyBoth sub-protocol (protocol-replication.html, "START_REPLICATION"):
 * 'w' XLogData and 'k' primary keepalive from the server, 'r' standby status update from us.
 */

export interface XLogData {
  readonly kind: 'xlogdata';
  /** Header positions: 0/0 for many logical messages (WalSndPrepareWrite); never use them as progress. */
  readonly walStart: Lsn;
  readonly walEnd: Lsn;
  readonly sendTime: PgMicros;
  readonly message: PgoutputMessage | StreamControlMessage;
  readonly byteLength: number;
}

export interface PrimaryKeepalive {
  readonly kind: 'keepalive';
  readonly walEnd: Lsn;
  readonly sendTime: PgMicros;
  readonly replyRequested: boolean;
}

export type ReplicationMessage = XLogData | PrimaryKeepalive;

/**
 * Decodes one CopyData payload completely (the caller's buffer may be reused after this returns).
 * `inStream`: the stream is between Stream Start and Stop, where messages carry a transaction id.
 */
export function decodeReplicationMessage(chunk: Buffer, inStream = false): ReplicationMessage {
  const r = new ByteReader(chunk);
  const tag = r.char();
  if (tag === 'w') {
    const walStart = r.uint64();
    const walEnd = r.uint64();
    const sendTime = r.int64();
    return {
      kind: 'xlogdata',
      walStart,
      walEnd,
      sendTime,
      // Most messages are neither stream control nor streamed: decoded from the same reader.
      message:
        (isStreamMessage(chunk[r.position] as number, inStream) ? decodeStreamMessage(chunk.subarray(r.position), inStream) : null) ?? decodePgoutputAt(r),
      byteLength: chunk.length,
    };
  }
  if (tag === 'k') {
    return { kind: 'keepalive', walEnd: r.uint64(), sendTime: r.int64(), replyRequested: r.byte() === 1 };
  }
  throw new UnknownMessageError(tag, 'replication message');
}

export interface StandbyStatus {
  readonly written: Lsn;
  readonly flushed: Lsn;
  readonly applied: Lsn;
  readonly clientTime: PgMicros;
  readonly replyRequested: boolean;
}

/** 'r': Int64 write, Int64 flush, Int64 apply, Int64 client time, Byte1 reply requested (34 bytes). */
export function encodeStandbyStatus(s: StandbyStatus): Buffer {
  const b = Buffer.alloc(34);
  b.write('r', 0, 'latin1');
  b.writeBigUInt64BE(s.written, 1);
  b.writeBigUInt64BE(s.flushed, 9);
  b.writeBigUInt64BE(s.applied, 17);
  b.writeBigInt64BE(s.clientTime, 25);
  b.writeUInt8(s.replyRequested ? 1 : 0, 33);
  return b;
}
