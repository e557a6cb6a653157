/**
 * Decoded pgoutput messages for tests of the stages after the decoder: one table `public.t` (relation
 * 7, an int key), transaction xid N with its begin at N * 100 and its commit ending at N * 100 + 8.
 */
import type { BeginMessage, CommitMessage, InsertMessage, RelationMessage } from '../../src/protocol/pgoutput-messages.js';

export const rel: RelationMessage = {
  tag: 'relation',
  relationId: 7,
  namespace: 'public',
  name: 't',
  replicaIdentity: 'default',
  columns: [{ name: 'id', isKey: true, typeOid: 23, typeMod: -1 }],
};

export const begin = (xid: number): BeginMessage => ({ tag: 'begin', finalLsn: BigInt(xid * 100), commitTime: 1n, xid });

export const commit = (xid: number): CommitMessage => ({
  tag: 'commit',
  flags: 0,
  commitLsn: BigInt(xid * 100),
  endLsn: BigInt(xid * 100 + 8),
  commitTime: 1n,
});

export const insert = (id: number): InsertMessage => ({ tag: 'insert', relationId: 7, newTuple: [String(id)] });
