import type { Lsn } from './lsn.js';
import type { PgMicros } from './pg-time.js';

/**
 * Typed pgoutput messages, protocol version 2 as sent by PostgreSQL 15 and 18 with streaming on and
 * two-phase off ("Logical Replication Message Formats", protocol-logicalrep-message-formats.html;
 * writers in src/backend/replication/logical/proto.c).
 */

/** The 'u' column kind: an unchanged out-of-line TOAST value whose bytes are not in the WAL. */
export const UNCHANGED_TOAST: unique symbol = Symbol('unchanged-toast');
export type UnchangedToast = typeof UNCHANGED_TOAST;

/** 'n' → null, 'u' → UNCHANGED_TOAST, 't' → text as sent by the type's output function, 'b' → binary. */
export type TupleValue = string | null | UnchangedToast | Buffer;
export type Tuple = readonly TupleValue[];

export interface RelationColumn {
  readonly name: string;
  /** Flag bit 1: the column is part of the replica identity (every column under REPLICA IDENTITY FULL). */
  readonly isKey: boolean;
  readonly typeOid: number;
  readonly typeMod: number;
}

export type ReplicaIdentity = 'default' | 'nothing' | 'full' | 'index';

export interface BeginMessage {
  readonly tag: 'begin';
  /** LSN of the commit record (equals Commit.commitLsn). */
  readonly finalLsn: Lsn;
  readonly commitTime: PgMicros;
  readonly xid: number;
}

export interface CommitMessage {
  readonly tag: 'commit';
  readonly flags: number;
  readonly commitLsn: Lsn;
  /** End of the commit record: the position to confirm and to hand to pg_replication_origin_xact_setup. */
  readonly endLsn: Lsn;
  readonly commitTime: PgMicros;
}

export interface OriginMessage {
  readonly tag: 'origin';
  readonly originLsn: Lsn;
  readonly originName: string;
}

export interface RelationMessage {
  readonly tag: 'relation';
  readonly relationId: number;
  /** pgoutput sends an empty namespace for pg_catalog; the decoder restores the name. */
  readonly namespace: string;
  readonly name: string;
  readonly replicaIdentity: ReplicaIdentity;
  readonly columns: readonly RelationColumn[];
}

export interface TypeMessage {
  readonly tag: 'type';
  readonly typeOid: number;
  readonly namespace: string;
  readonly name: string;
}

export interface InsertMessage {
  readonly tag: 'insert';
  readonly relationId: number;
  readonly newTuple: Tuple;
}

/**
 * 'K' carries only the old replica identity (sent when a key column changed); 'O' the whole old row
 * (REPLICA IDENTITY FULL). Neither means the key did not change.
 */
export type OldTupleKind = 'key' | 'full';

export interface UpdateMessage {
  readonly tag: 'update';
  readonly relationId: number;
  readonly oldKind: OldTupleKind | null;
  readonly oldTuple: Tuple | null;
  readonly newTuple: Tuple;
}

export interface DeleteMessage {
  readonly tag: 'delete';
  readonly relationId: number;
  readonly oldKind: OldTupleKind;
  readonly oldTuple: Tuple;
}

export interface TruncateMessage {
  readonly tag: 'truncate';
  readonly cascade: boolean;
  readonly restartIdentity: boolean;
  readonly relationIds: readonly number[];
}

export interface LogicalDecodingMessage {
  readonly tag: 'message';
  readonly transactional: boolean;
  readonly lsn: Lsn;
  readonly prefix: string;
  readonly content: Buffer;
}

/**
 * Stream Start ('S', protocol 2+): the changes that follow until Stream Stop belong to transaction
 * `xid`, which has not committed yet (the walsender streams a transaction once it outgrows
 * logical_decoding_work_mem instead of spilling it to disk). `first`: its first block.
 */
export interface StreamStartMessage {
  readonly tag: 'stream-start';
  readonly xid: number;
  readonly first: boolean;
}

export interface StreamStopMessage {
  readonly tag: 'stream-stop';
}

/** Stream Commit ('c'): the streamed transaction `xid` committed; the same fields as Commit. */
export interface StreamCommitMessage {
  readonly tag: 'stream-commit';
  readonly xid: number;
  readonly flags: number;
  readonly commitLsn: Lsn;
  readonly endLsn: Lsn;
  readonly commitTime: PgMicros;
}

/**
 * Stream Abort ('A'): `subxid` aborted; when it equals `xid` the whole streamed transaction did.
 * (Protocol 4's abort LSN and time, sent only for parallel streaming, are not requested.)
 */
export interface StreamAbortMessage {
  readonly tag: 'stream-abort';
  readonly xid: number;
  readonly subxid: number;
}

/**
 * A message inside a Stream Start … Stop block that carries a transaction id ('I', 'U', 'D', 'T',
 * 'R', 'Y', 'M'): `xid` is the (sub)transaction's; the message as protocol 1 sends it is
 * `messageTag` followed by `body` (the xid cut out). `body` is a view into the driver's receive
 * buffer, valid only until the message handler returns: whoever keeps it copies it.
 */
export interface StreamedMessage {
  readonly tag: 'streamed';
  readonly xid: number;
  readonly messageTag: number;
  readonly body: Buffer;
}

export type StreamControlMessage = StreamStartMessage | StreamStopMessage | StreamCommitMessage | StreamAbortMessage | StreamedMessage;

export type PgoutputMessage =
  | BeginMessage
  | CommitMessage
  | OriginMessage
  | RelationMessage
  | TypeMessage
  | InsertMessage
  | UpdateMessage
  | DeleteMessage
  | TruncateMessage
  | LogicalDecodingMessage;

export type ChangeMessage = InsertMessage | UpdateMessage | DeleteMessage | TruncateMessage;
