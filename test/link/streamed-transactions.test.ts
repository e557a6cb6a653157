import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { StreamedTransactions } from '../../src/link/streamed-transactions.js';
import type { PgoutputMessage, StreamCommitMessage, StreamedMessage } from '../../src/protocol/pgoutput-messages.js';
import type { ReplicationMessage } from '../../src/protocol/replication-messages.js';
import { PgoutputBuilder, textColumn } from '../support/pgoutput-builder.js';

/** An insert of row `id` as a stream block carries it: its tag, then (after the xid) its body. */
function insert(xid: number, id: string): StreamedMessage {
  const message = new PgoutputBuilder().insert({ relationId: 16384, newTuple: [textColumn(id)] }).build();
  return { tag: 'streamed', xid, messageTag: message[0] as number, body: message.subarray(1) };
}

function commit(xid: number): StreamCommitMessage {
  return { tag: 'stream-commit', xid, flags: 0, commitLsn: BigInt(xid * 100), endLsn: BigInt(xid * 100 + 8), commitTime: 1n };
}

function keepalive(walEnd: bigint): ReplicationMessage {
  return { kind: 'keepalive', walEnd, sendTime: 0n, replyRequested: false };
}

/** A streamed transaction whose rows are `ids`, in one block. */
function block(s: StreamedTransactions, xid: number, ids: string[]): void {
  s.take({ tag: 'stream-start', xid, first: true });
  for (const id of ids) s.take(insert(xid, id));
  s.take({ tag: 'stream-stop' });
}

/** What a message stands for: the row id of an insert, else its tag (commit with its LSN). */
function summary(m: PgoutputMessage): string {
  if (m.tag === 'insert') return String(m.newTuple[0]);
  if (m.tag === 'commit') return `commit@${m.commitLsn}`;
  return m.tag;
}

/** Resolves once check() holds (polled: the read-back runs on the event loop). */
function until(check: () => boolean): Promise<void> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const poll = (): void => {
      if (check()) resolve();
      else if (Date.now() - started > 5_000) reject(new Error('timed out'));
      else setTimeout(poll, 1);
    };
    poll();
  });
}

describe('StreamedTransactions', () => {
  let parent = '';
  let accepted: string[];
  let events: string[];
  let room: boolean;
  let failures: unknown[];
  let stage: StreamedTransactions;

  beforeEach(() => {
    parent = mkdtempSync(join(tmpdir(), 'streamed-test-'));
    accepted = [];
    events = [];
    failures = [];
    room = true;
    stage = new StreamedTransactions({
      accept: (msg) => accepted.push(summary(msg)),
      hasRoom: () => room,
      pauseSource: () => events.push('pause'),
      resumeSource: () => events.push('resume'),
      release: (m) => {
        if (m.kind === 'keepalive') return void events.push(`released keepalive ${m.walEnd}`);
        const rest = stage.take(m.message);
        if (rest) accepted.push(summary(rest));
      },
      failed: (err) => failures.push(err),
      spoolParent: parent,
    });
  });
  afterEach(() => {
    stage.reset();
    rmSync(parent, { recursive: true, force: true });
  });

  it('hands a committed transaction to the next stage whole, pausing the source meanwhile', async () => {
    block(stage, 7, ['a', 'b']);
    stage.take({ tag: 'stream-start', xid: 7, first: false });
    stage.take(insert(7, 'c'));
    stage.take({ tag: 'stream-stop' });
    expect(accepted).toEqual([]);
    expect(stage.pending).toBe(true);
    stage.take(commit(7));
    expect(stage.replaying).toBe(true);
    await until(() => !stage.replaying);
    expect(accepted).toEqual(['begin', 'a', 'b', 'c', 'commit@700']);
    expect(events).toEqual(['pause', 'resume']);
    expect(stage.pending).toBe(false);
    expect(failures).toEqual([]);
  });

  it('keeps the Origin of a block for the transaction and passes on the messages that are not streamed', async () => {
    const origin: PgoutputMessage = { tag: 'origin', originLsn: 5n, originName: 'pg_1' };
    expect(stage.take(origin)).toBe(origin);
    stage.take({ tag: 'stream-start', xid: 8, first: true });
    expect(stage.take(origin)).toBeNull();
    stage.take(insert(8, 'x'));
    stage.take({ tag: 'stream-stop' });
    stage.take(commit(8));
    await until(() => !stage.replaying);
    expect(accepted).toEqual(['begin', 'origin', 'x', 'commit@800']);
  });

  it('gives back what arrived during a read-back afterwards, in order, including the next Stream Commit', async () => {
    block(stage, 1, ['one']);
    block(stage, 2, ['two']);
    room = false; // the first read-back waits after its first message
    stage.take(commit(1));
    expect(stage.hold(keepalive(10n))).toBe(true);
    const second: ReplicationMessage = { kind: 'xlogdata', walStart: 0n, walEnd: 0n, sendTime: 0n, message: commit(2), byteLength: 1 };
    expect(stage.hold(second)).toBe(true);
    await until(() => accepted.length === 2);
    await new Promise((r) => setTimeout(r, 20));
    expect(accepted).toEqual(['begin', 'one']);
    room = true;
    stage.roomMade();
    await until(() => !stage.replaying && accepted.length === 6);
    expect(accepted).toEqual(['begin', 'one', 'commit@100', 'begin', 'two', 'commit@200']);
    // The second read-back started while the first gave back what it held: one resume, at the end.
    expect(events).toEqual(['pause', 'released keepalive 10', 'pause', 'resume']);
    expect(stage.hold(keepalive(11n))).toBe(false);
  });

  it('drops an aborted transaction, and a reset stops a read-back without a commit or a resume', async () => {
    block(stage, 3, ['gone']);
    stage.take({ tag: 'stream-abort', xid: 3, subxid: 3 });
    expect(stage.pending).toBe(false);
    block(stage, 4, ['r1', 'r2']);
    room = false;
    stage.take(commit(4));
    stage.hold(keepalive(12n));
    await until(() => accepted.length === 2);
    stage.reset();
    stage.roomMade();
    await new Promise((r) => setTimeout(r, 20));
    expect(accepted).toEqual(['begin', 'r1']);
    expect(events).toEqual(['pause']);
    expect(stage.replaying).toBe(false);
    expect(stage.pending).toBe(false);
    expect(failures).toEqual([]);
  });
});

describe('StreamedTransactions applying a transaction while it streams', () => {
  let parent = '';
  let accepted: string[];
  let early: string[];
  let allowed: boolean;
  let decide: ((committed: boolean) => void) | null;
  let stage: StreamedTransactions;

  beforeEach(() => {
    parent = mkdtempSync(join(tmpdir(), 'streamed-test-'));
    accepted = [];
    early = [];
    allowed = true;
    decide = null;
    stage = new StreamedTransactions({
      accept: (msg) => accepted.push(summary(msg)),
      hasRoom: () => true,
      pauseSource: () => early.push('pause'),
      resumeSource: () => early.push('resume'),
      release: () => undefined,
      failed: (err) => {
        throw err;
      },
      spoolParent: parent,
      early: {
        allowed: () => allowed,
        begin: (xid) => early.push(`begin ${xid}`),
        message: (_xid, m) => {
          early.push(summary(m));
          return m.tag === 'insert';
        },
        abandon: (xid) => early.push(`abandon ${xid}`),
        commit: (c, done) => {
          early.push(`commit ${c.xid}`);
          decide = done;
        },
      },
    });
  });
  afterEach(() => {
    stage.reset();
    rmSync(parent, { recursive: true, force: true });
  });

  it('hands its messages on as they come, and reads nothing back when the apply loop commits it', () => {
    block(stage, 7, ['a', 'b']);
    stage.take({ tag: 'stream-start', xid: 7, first: false });
    stage.take(insert(7, 'c'));
    stage.take({ tag: 'stream-stop' });
    stage.take(commit(7));
    expect(early).toEqual(['begin 7', 'a', 'b', 'c', 'pause', 'commit 7']);
    expect(stage.replaying).toBe(true);
    decide?.(true);
    expect(stage.replaying).toBe(false);
    expect(early.at(-1)).toBe('resume');
    expect(accepted).toEqual([]);
    expect(stage.pending).toBe(false);
  });

  it('reads the spool back when the apply loop could not commit it', async () => {
    block(stage, 5, ['x', 'y']);
    stage.take(commit(5));
    decide?.(false);
    await until(() => !stage.replaying);
    expect(accepted).toEqual(['begin', 'x', 'y', 'commit@500']);
  });

  it('abandons it for another stream, an aborted subtransaction, a change it cannot apply early or an interruption', async () => {
    // Another transaction's block: the first goes back to the spool, the second is not taken early.
    block(stage, 1, ['one']);
    block(stage, 2, ['two']);
    stage.take(commit(2));
    await until(() => !stage.replaying);
    stage.take(commit(1));
    await until(() => !stage.replaying);
    expect(early).toEqual(['begin 1', 'one', 'abandon 1', 'pause', 'resume', 'pause', 'resume']);
    expect(accepted).toEqual(['begin', 'two', 'commit@200', 'begin', 'one', 'commit@100']);

    early.length = 0;
    block(stage, 3, ['three']);
    stage.take({ tag: 'stream-abort', xid: 3, subxid: 33 });
    block(stage, 4, []); // not alone: 3 is still open
    stage.take({ tag: 'stream-abort', xid: 4, subxid: 4 });
    stage.take({ tag: 'stream-abort', xid: 3, subxid: 3 });
    expect(early).toEqual(['begin 3', 'three', 'abandon 3']);

    early.length = 0;
    stage.take({ tag: 'stream-start', xid: 6, first: true });
    const update = new PgoutputBuilder().update({ relationId: 16384, newTuple: [textColumn('u')] }).build();
    stage.take({ tag: 'streamed', xid: 6, messageTag: update[0] as number, body: update.subarray(1) });
    stage.take(insert(6, 'after'));
    stage.take({ tag: 'stream-stop' });
    stage.take({ tag: 'stream-abort', xid: 6, subxid: 6 });
    expect(early).toEqual(['begin 6', 'update', 'abandon 6']);

    early.length = 0;
    block(stage, 8, ['eight']);
    stage.interrupt();
    stage.interrupt();
    stage.take({ tag: 'stream-abort', xid: 8, subxid: 8 });
    allowed = false;
    block(stage, 9, ['nine']);
    expect(early).toEqual(['begin 8', 'eight', 'abandon 8']);
  });
});
