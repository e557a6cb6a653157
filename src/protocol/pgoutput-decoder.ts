import { ByteReader } from './byte-reader.js';
import type { PgoutputMessage, RelationColumn, ReplicaIdentity, StreamControlMessage, Tuple, TupleValue, OldTupleKind } from './pgoutput-messages.js';
import { UNCHANGED_TOAST } from './pgoutput-messages.js';

/** Pure pgoutput decoding: one message's bytes in, one typed message out. No I/O, no state. */

export class UnknownMessageError extends Error {
  readonly code = 'PGBIDI_UNKNOWN_MESSAGE';
  constructor(
    readonly messageTag: string,
    context: string,
  ) {
    super(`unknown ${context} ${JSON.stringify(messageTag)} (0x${messageTag.charCodeAt(0).toString(16)})`);
    this.name = 'UnknownMessageError';
  }
}

const REPLICA_IDENTITY: Record<string, ReplicaIdentity> = { d: 'default', n: 'nothing', f: 'full', i: 'index' };

// TRUNCATE option bits (logicalproto.h: TRUNCATE_CASCADE, TRUNCATE_RESTART_SEQS).
const TRUNCATE_CASCADE = 1;
const TRUNCATE_RESTART_SEQS = 2;

export function decodePgoutput(payload: Buffer): PgoutputMessage {
  return decodePgoutputAt(new ByteReader(payload));
}

/** decodePgoutput on what is left of `r`: an XLogData's payload decoded in place, without a view of it. */
export function decodePgoutputAt(r: ByteReader): PgoutputMessage {
  return decodeTagged(r.char(), r);
}

/**
 * A StreamedMessage's message as protocol 1 sends it (`messageTag` then `body`), decoded in place:
 * the same result as decodePgoutput on the two put together, without copying them together.
 */
export function decodeStreamedBody(messageTag: number, body: Buffer): PgoutputMessage {
  return decodeTagged(String.fromCharCode(messageTag), new ByteReader(body));
}

function decodeTagged(tag: string, r: ByteReader): PgoutputMessage {
  switch (tag) {
    case 'B':
      return { tag: 'begin', finalLsn: r.uint64(), commitTime: r.int64(), xid: r.uint32() };
    case 'C':
      return { tag: 'commit', flags: r.byte(), commitLsn: r.uint64(), endLsn: r.uint64(), commitTime: r.int64() };
    case 'O':
      return { tag: 'origin', originLsn: r.uint64(), originName: r.cstring() };
    case 'R':
      return readRelation(r);
    case 'Y': {
      const typeOid = r.uint32();
      const namespace = r.cstring();
      return { tag: 'type', typeOid, namespace: namespace === '' ? 'pg_catalog' : namespace, name: r.cstring() };
    }
    case 'I': {
      const relationId = r.uint32();
      expectChar(r, 'N', 'insert tuple marker');
      return { tag: 'insert', relationId, newTuple: readTuple(r) };
    }
    case 'U': {
      const relationId = r.uint32();
      let marker = r.char();
      let oldKind: OldTupleKind | null = null;
      let oldTuple: Tuple | null = null;
      if (marker === 'K' || marker === 'O') {
        oldKind = marker === 'K' ? 'key' : 'full';
        oldTuple = readTuple(r);
        marker = r.char();
      }
      if (marker !== 'N') throw new UnknownMessageError(marker, 'update tuple marker');
      return { tag: 'update', relationId, oldKind, oldTuple, newTuple: readTuple(r) };
    }
    case 'D': {
      const relationId = r.uint32();
      const marker = r.char();
      if (marker !== 'K' && marker !== 'O') throw new UnknownMessageError(marker, 'delete tuple marker');
      return { tag: 'delete', relationId, oldKind: marker === 'K' ? 'key' : 'full', oldTuple: readTuple(r) };
    }
    case 'T': {
      const count = r.uint32();
      const options = r.byte();
      const relationIds: number[] = [];
      for (let i = 0; i < count; i++) relationIds.push(r.uint32());
      return {
        tag: 'truncate',
        cascade: (options & TRUNCATE_CASCADE) !== 0,
        restartIdentity: (options & TRUNCATE_RESTART_SEQS) !== 0,
        relationIds,
      };
    }
    case 'M': {
      const flags = r.byte();
      const lsn = r.uint64();
      const prefix = r.cstring();
      const length = r.uint32();
      return { tag: 'message', transactional: (flags & 1) !== 0, lsn, prefix, content: r.bytes(length) };
    }
    default:
      throw new UnknownMessageError(tag, 'pgoutput message');
  }
}

/** 'S', 'E', 'c', 'A': Stream Start, Stop, Commit, Abort. */
const STREAM_TAGS = new Set([0x53, 0x45, 0x63, 0x41]);

/** Messages that carry a transaction id after their tag inside a stream block (proto.c, `if (TransactionIdIsValid(xid))`). */
const XID_IN_STREAM = new Set(['I', 'U', 'D', 'T', 'R', 'Y', 'M']);

/**
 * The stream-level messages of protocol 2 (Stream Start, Stop, Commit, Abort), and, when `inStream`
 * (between Stream Start and Stop), a message with a transaction id, returned undecoded as
 * StreamedMessage (a view into `payload`, not a copy); null for anything else (decodePgoutput's).
 * Pure, like decodePgoutput: whether the stream is inside a block is the caller's state.
 */
export function decodeStreamMessage(payload: Buffer, inStream: boolean): StreamControlMessage | null {
  if (!isStreamMessage(payload[0] as number, inStream)) return null;
  const r = new ByteReader(payload);
  const tag = r.char();
  switch (tag) {
    case 'S':
      return { tag: 'stream-start', xid: r.uint32(), first: r.byte() === 1 };
    case 'E':
      return { tag: 'stream-stop' };
    case 'c':
      return { tag: 'stream-commit', xid: r.uint32(), flags: r.byte(), commitLsn: r.uint64(), endLsn: r.uint64(), commitTime: r.int64() };
    case 'A':
      return { tag: 'stream-abort', xid: r.uint32(), subxid: r.uint32() };
    default: {
      if (!inStream || !XID_IN_STREAM.has(tag)) return null;
      const xid = r.uint32();
      return { tag: 'streamed', xid, messageTag: payload[0] as number, body: payload.subarray(r.position) };
    }
  }
}

/** Whether decodeStreamMessage may have something for a message with this first byte (a cheap test before it). */
export function isStreamMessage(tag: number, inStream: boolean): boolean {
  return inStream || STREAM_TAGS.has(tag);
}

function expectChar(r: ByteReader, expected: string, context: string): void {
  const c = r.char();
  if (c !== expected) throw new UnknownMessageError(c, context);
}

function readRelation(r: ByteReader): PgoutputMessage {
  const relationId = r.uint32();
  const namespace = r.cstring();
  const name = r.cstring();
  const identityChar = r.char();
  const replicaIdentity = REPLICA_IDENTITY[identityChar];
  if (replicaIdentity === undefined) throw new UnknownMessageError(identityChar, 'replica identity');
  const count = r.uint16(); // Int16 on the wire, read unsigned like proto.c (pq_getmsgint(in, 2))
  const columns: RelationColumn[] = [];
  for (let i = 0; i < count; i++) {
    const flags = r.byte();
    columns.push({ isKey: (flags & 1) !== 0, name: r.cstring(), typeOid: r.uint32(), typeMod: r.int32() });
  }
  return {
    tag: 'relation',
    relationId,
    namespace: namespace === '' ? 'pg_catalog' : namespace,
    name,
    replicaIdentity,
    columns,
  };
}

function readTuple(r: ByteReader): Tuple {
  const count = r.uint16(); // Int16 on the wire, read unsigned like proto.c (pq_getmsgint(in, 2))
  const values: TupleValue[] = new Array<TupleValue>(count);
  for (let i = 0; i < count; i++) {
    const kind = r.char();
    switch (kind) {
      case 'n':
        values[i] = null;
        break;
      case 'u':
        values[i] = UNCHANGED_TOAST;
        break;
      case 't':
        values[i] = r.utf8(r.uint32());
        break;
      case 'b':
        values[i] = r.bytes(r.uint32());
        break;
      default:
        throw new UnknownMessageError(kind, 'tuple column kind');
    }
  }
  return values;
}
