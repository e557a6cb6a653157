import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { StreamSpool, StreamSpoolError } from '../../src/link/stream-spool.js';
import type { SpooledTransaction } from '../../src/link/stream-spool.js';
import type { PgoutputMessage, StreamedMessage } from '../../src/protocol/pgoutput-messages.js';
import { PgoutputBuilder, textColumn } from '../support/pgoutput-builder.js';
import { OWNER_FILE } from '../../src/link/spool-dir.js';

const REL = 16384;

/** A protocol 1 message as a stream block carries it: its tag, then (after the xid) its body. */
function streamed(xid: number, message: Buffer): StreamedMessage {
  return { tag: 'streamed', xid, messageTag: message[0] as number, body: message.subarray(1) };
}

function row(xid: number, id: string, value = 'v'): StreamedMessage {
  return streamed(xid, new PgoutputBuilder().insert({ relationId: REL, newTuple: [textColumn(id), textColumn(value)] }).build());
}

function relation(xid: number, name: string): StreamedMessage {
  const columns = [
    { flags: 1, name: 'id', typeOid: 23, typeMod: -1 },
    { flags: 0, name: 'v', typeOid: 25, typeMod: -1 },
  ];
  return streamed(xid, new PgoutputBuilder().relation({ relationId: REL, namespace: 'public', name, replicaIdentity: 'd', columns }).build());
}

async function readAll(t: SpooledTransaction | null): Promise<PgoutputMessage[]> {
  if (!t) throw new Error('nothing spooled');
  const out: PgoutputMessage[] = [];
  for await (const chunk of t.chunks()) out.push(...chunk);
  t.discard();
  return out;
}

/** What a message stands for: the row id of an insert, R:<name> of a relation. */
function summary(ms: PgoutputMessage[]): string[] {
  return ms.map((m) => (m.tag === 'insert' ? String(m.newTuple[0]) : m.tag === 'relation' ? `R:${m.name}` : m.tag));
}

describe('StreamSpool', () => {
  let parent = '';
  let spool: StreamSpool;
  beforeEach(() => {
    parent = mkdtempSync(join(tmpdir(), 'spool-test-'));
    spool = new StreamSpool(parent);
  });
  afterEach(() => {
    spool.reset();
    rmSync(parent, { recursive: true, force: true });
  });

  it('gives back a transaction streamed in several blocks, interleaved with another, in order', async () => {
    spool.start({ tag: 'stream-start', xid: 10, first: true });
    spool.add(relation(10, 't'));
    spool.add(row(10, '1'));
    spool.stop();
    spool.start({ tag: 'stream-start', xid: 20, first: true });
    spool.add(row(20, 'other'));
    spool.stop();
    spool.start({ tag: 'stream-start', xid: 10, first: false });
    spool.add(row(10, '2'));
    spool.stop();
    expect(spool.pending).toBe(true);
    expect(summary(await readAll(spool.commit(10)))).toEqual(['R:t', '1', '2']);
    expect(summary(await readAll(spool.commit(20)))).toEqual(['other']);
    expect(spool.pending).toBe(false);
    expect(spool.commit(30)).toBeNull();
  });

  it('drops an aborted subtransaction and the ones after it, keeping the relation it carried', async () => {
    spool.start({ tag: 'stream-start', xid: 10, first: true });
    spool.add(row(10, 'top-1'));
    spool.add(relation(11, 'sub'));
    spool.add(row(11, 'sub-1'));
    spool.add(row(12, 'nested-1'));
    spool.stop();
    spool.abort({ tag: 'stream-abort', xid: 10, subxid: 11 });
    spool.start({ tag: 'stream-start', xid: 10, first: false });
    spool.add(row(10, 'top-2'));
    spool.add(row(13, 'later-sub'));
    spool.stop();
    spool.abort({ tag: 'stream-abort', xid: 10, subxid: 99 }); // a subtransaction that changed nothing
    expect(summary(await readAll(spool.commit(10)))).toEqual(['top-1', 'R:sub', 'top-2', 'later-sub']);
  });

  it('forgets a transaction that aborted as a whole, and its file', () => {
    spool.start({ tag: 'stream-start', xid: 10, first: true });
    spool.add(row(10, '1'));
    spool.stop();
    spool.abort({ tag: 'stream-abort', xid: 10, subxid: 10 });
    expect(spool.pending).toBe(false);
    expect(spool.commit(10)).toBeNull();
    const dirs = readdirSync(parent);
    // What is left is the directory's owner mark (spool-dir.ts), no transaction file.
    expect(dirs.flatMap((d) => readdirSync(join(parent, d)))).toEqual([OWNER_FILE]);
  });

  it('reads back a transaction of several MiB across chunk boundaries, and notes its Origin', async () => {
    spool.start({ tag: 'stream-start', xid: 7, first: true });
    spool.origin();
    const n = 60_000;
    // Some rows larger than the write buffer (256 KiB) and than a read chunk (1 MiB).
    const huge = new Set([5, 30_000, n - 1]);
    for (let i = 0; i < n; i++) spool.add(row(7, String(i), huge.has(i) ? 'y'.repeat(1_500_000 + i) : 'x'.repeat(i % 97)));
    spool.stop();
    const t = spool.commit(7);
    expect(t?.origin).toBe(true);
    const ids = summary(await readAll(t));
    expect(ids).toHaveLength(n);
    expect(ids.every((id, i) => id === String(i))).toBe(true);
  });

  it('refuses messages outside a block and a second first Stream Start', () => {
    expect(() => spool.add(row(1, '1'))).toThrow(StreamSpoolError);
    spool.start({ tag: 'stream-start', xid: 1, first: true });
    spool.stop();
    expect(() => spool.start({ tag: 'stream-start', xid: 1, first: true })).toThrow(StreamSpoolError);
  });

  it('reset removes every file: a new attempt streams open transactions again from their start', () => {
    spool.start({ tag: 'stream-start', xid: 1, first: true });
    spool.add(row(1, '1'));
    expect(readdirSync(parent)).toHaveLength(1);
    spool.reset();
    expect(spool.pending).toBe(false);
    expect(spool.inBlock).toBe(false);
    expect(readdirSync(parent)).toEqual([]);
    expect(existsSync(parent)).toBe(true);
  });
});

describe('StreamSpool and the driver buffer', () => {
  it('copies what it keeps: the driver reuses its receive buffer after the handler returns', async () => {
    const parent = mkdtempSync(join(tmpdir(), 'spool-test-'));
    const spool = new StreamSpool(parent);
    try {
      const message = new PgoutputBuilder().insert({ relationId: REL, newTuple: [textColumn('kept')] }).build();
      const columns = [{ flags: 1, name: 'id', typeOid: 23, typeMod: -1 }];
      const rel = new PgoutputBuilder().relation({ relationId: REL, namespace: 'public', name: 'r', replicaIdentity: 'd', columns }).build();
      spool.start({ tag: 'stream-start', xid: 1, first: true });
      spool.add(streamed(1, rel));
      spool.add(streamed(1, message));
      rel.fill(0);
      message.fill(0);
      spool.stop();
      expect(summary(await readAll(spool.commit(1)))).toEqual(['R:r', 'kept']);
    } finally {
      spool.reset();
      rmSync(parent, { recursive: true, force: true });
    }
  });
});
