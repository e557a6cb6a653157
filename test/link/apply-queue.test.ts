import v8 from 'node:v8';
import { runInNewContext } from 'node:vm';
import { describe, expect, it } from 'vitest';
import { ApplyQueue } from '../../src/link/apply-queue.js';
import type { ChangeMessage } from '../../src/protocol/pgoutput-messages.js';

/** Queues `n` batches; returns weak references to them (no other reference stays behind). */
function fill(q: ApplyQueue, n: number): WeakRef<readonly ChangeMessage[]>[] {
  const refs: WeakRef<readonly ChangeMessage[]>[] = [];
  for (let i = 0; i < n; i++) {
    const batch: ChangeMessage[] = [{ tag: 'insert', relationId: 1, newTuple: [String(i)] }];
    refs.push(new WeakRef(batch));
    q.push({ kind: 'changes', changes: batch, prepared: null });
  }
  return refs;
}

describe('ApplyQueue', () => {
  it('counts changes, commits and relations of what it holds, in order', () => {
    const q = new ApplyQueue();
    const changes: ChangeMessage[] = [
      { tag: 'insert', relationId: 1, newTuple: ['1'] },
      { tag: 'insert', relationId: 1, newTuple: ['2'] },
    ];
    q.push({ kind: 'relation', relation: { tag: 'relation', relationId: 1, namespace: 'public', name: 't', replicaIdentity: 'default', columns: [] } });
    q.push({ kind: 'changes', changes, prepared: null });
    q.push({ kind: 'commit', commit: { tag: 'commit', flags: 0, commitLsn: 1n, endLsn: 2n, commitTime: 3n } });
    expect([q.length, q.changes, q.commits, q.relations]).toEqual([3, 2, 1, 1]);
    expect(q.shift()?.kind).toBe('relation');
    expect(q.peek()?.kind).toBe('changes');
    expect(q.shift()?.kind).toBe('changes');
    expect([q.length, q.changes, q.commits, q.relations]).toEqual([1, 0, 1, 0]);
    expect(q.shift()?.kind).toBe('commit');
    expect(q.shift()).toBeUndefined();
  });

  it('lets go of what it handed out (a large transaction must not stay in memory batch by batch)', async () => {
    const q = new ApplyQueue();
    const refs = fill(q, 10);
    q.push({ kind: 'commit', commit: { tag: 'commit', flags: 0, commitLsn: 1n, endLsn: 2n, commitTime: 3n } });
    for (let i = 0; i < 10; i++) q.shift();
    expect(q.length).toBe(1); // still holding the commit: the array was not dropped whole
    v8.setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    await new Promise((r) => setTimeout(r, 0));
    gc();
    expect(refs.filter((r) => r.deref() !== undefined)).toHaveLength(0);
  });
});
