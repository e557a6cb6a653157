import { describe, expect, it } from 'vitest';
import type { ChangeOp } from '../../src/observability/metrics.js';
import type { PgoutputMessage } from '../../src/protocol/pgoutput-messages.js';
import { begin, commit, insert, rel } from '../support/decoded-messages.js';
import { TransactionAssembler } from '../../src/link/transaction-assembler.js';
import type { AssemblerCounters, AssemblerSink } from '../../src/link/transaction-assembler.js';

/** Records what the assembler hands over, as short strings in order, and what it counts. */
function recorder(): { sink: AssemblerSink; counters: AssemblerCounters; out: string[]; counts: Record<string, number> } {
  const out: string[] = [];
  const counts: Record<string, number> = {};
  const bump = (k: string): void => {
    counts[k] = (counts[k] ?? 0) + 1;
  };
  const sink: AssemblerSink = {
    relation: (r) => out.push(`relation ${r.relationId}`),
    transaction: (t) => out.push(`transaction ${t.begin.xid} changes=${t.changes.length} heartbeat=${t.heartbeat ?? '-'} traceparent=${t.traceparent ?? '-'}`),
    begin: (b) => out.push(`begin ${b.xid}`),
    changes: (batch) => out.push(`changes ${batch.map((c) => (c.tag === 'insert' ? c.newTuple[0] : c.tag)).join(',')}`),
    message: (m) => out.push(`message ${m.prefix}`),
    commit: (c) => out.push(`commit ${c.endLsn}`),
    skipped: (t) => out.push(`skipped ${t.endLsn} ${t.reason}`),
  };
  const counters: AssemblerCounters = {
    received: (op: ChangeOp) => bump(`received ${op}`),
    filtered: (op: ChangeOp) => bump(`filtered ${op}`),
    transactionFiltered: () => bump('transaction filtered'),
  };
  return { sink, counters, out, counts };
}

const heartbeat: PgoutputMessage = { tag: 'message', transactional: true, lsn: 1n, prefix: 'pgbidi.heartbeat', content: Buffer.from('{"node":"a","ts":"42"}') };
const traceparent: PgoutputMessage = { tag: 'message', transactional: true, lsn: 1n, prefix: 'traceparent', content: Buffer.from('00-aa-bb-01') };

function assembler(options = { batchSize: 2, smallTransactionChanges: 3 }) {
  const r = recorder();
  const a = new TransactionAssembler(r.sink, r.counters, options);
  return { a, out: r.out, counts: r.counts, feed: (...ms: PgoutputMessage[]) => ms.forEach((m) => a.accept(m)) };
}

describe('TransactionAssembler', () => {
  it('hands a small transaction over whole at its commit, with its heartbeat and traceparent', () => {
    const { a, out, feed } = assembler();
    feed(begin(1), rel, insert(1), heartbeat, traceparent);
    expect(a.receiving).toBe(true);
    expect(a.held).toBe(1);
    expect(out).toEqual(['relation 7']);
    feed(insert(2), commit(1));
    expect(a.receiving).toBe(false);
    expect(out).toEqual(['relation 7', 'transaction 1 changes=2 heartbeat=42 traceparent=00-aa-bb-01']);
  });

  it('streams a transaction that grows beyond the small size, in batches, messages included', () => {
    const { out, feed } = assembler({ batchSize: 2, smallTransactionChanges: 2 });
    feed(begin(2), heartbeat, insert(1), insert(2));
    expect(out).toEqual([]);
    feed(insert(3)); // the third change: no longer small
    expect(out).toEqual(['begin 2', 'message pgbidi.heartbeat', 'changes 1,2']);
    feed(insert(4), insert(5), traceparent, insert(6), insert(7), commit(2));
    expect(out.slice(3)).toEqual(['changes 3,4', 'message traceparent', 'changes 5,6', 'changes 7', `commit ${2 * 100 + 8}`]);
  });

  it('never holds more than a batch of a transaction, whatever the small size', () => {
    const { out, feed } = assembler({ batchSize: 2, smallTransactionChanges: 100 });
    feed(begin(6), insert(1), insert(2), insert(3));
    expect(out).toEqual(['begin 6', 'changes 1,2']);
  });

  it('lets changes decoded before a mid-transaction Relation message go first', () => {
    const { out, feed } = assembler({ batchSize: 10, smallTransactionChanges: 10 });
    feed(begin(3), insert(1), rel, insert(2), commit(3));
    expect(out).toEqual(['begin 3', 'changes 1', 'relation 7', 'changes 2', `commit ${3 * 100 + 8}`]);
  });

  it('drops a transaction that carries an Origin message, and counts what it drops', () => {
    const { out, counts, feed } = assembler();
    feed(begin(4), { tag: 'origin', originLsn: 5n, originName: 'pgbidi_c' }, insert(1), heartbeat, commit(4));
    expect(out).toEqual([`skipped ${4 * 100 + 8} origin`]);
    expect(counts).toMatchObject({ 'received insert': 1, 'filtered insert': 1, 'transaction filtered': 1 });
  });

  it('reports an empty transaction as processed, and ignores non-transactional messages in it', () => {
    const { out, feed } = assembler();
    feed(begin(5), { tag: 'message', transactional: false, lsn: 1n, prefix: 'x', content: Buffer.from('') }, commit(5));
    expect(out).toEqual([`skipped ${5 * 100 + 8} empty`]);
  });

  it('rejects messages out of order (the sequencer runs first)', () => {
    const { feed } = assembler();
    expect(() => feed(insert(1))).toThrow(/outside a transaction/);
  });
});
