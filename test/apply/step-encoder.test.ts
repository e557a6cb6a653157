import { describe, expect, it } from 'vitest';
import { decodeEvent } from '../../src/apply/apply-procedure-sql.js';
import { keyLock, lockOrder, LOCK_BUCKETS } from '../../src/apply/key-locks.js';
import { encodeGroup, ShapeRegistry } from '../../src/apply/step-encoder.js';
import type { ShapePolicy } from '../../src/apply/step-encoder.js';
import { LAST_UPDATE_WINS } from '../../src/apply/statements.js';
import type { MappedColumn, TableMapping } from '../../src/apply/table-mapping.js';
import { CONFLICT_TYPES, RESOLUTIONS } from '../../src/conflict/conflict-types.js';
import type { ChangeMessage } from '../../src/protocol/pgoutput-messages.js';
import { UNCHANGED_TOAST } from '../../src/protocol/pgoutput-messages.js';
import type { RemoteTransaction } from '../../src/protocol/remote-transaction.js';

const col = (index: number, name: string, isKey = false): MappedColumn => ({ index, name, type: 'text', identityAlways: false, isKey });
const columns = [col(0, 'id', true), col(1, 'a'), col(2, 'b')];
const mapping: TableMapping = {
  relationId: 7,
  local: { schema: 'public', name: 't', oid: 1, columns: new Map(), primaryKey: ['id'], replicaIdentity: 'd' },
  columns,
  key: [columns[0] as MappedColumn],
  remoteColumnCount: 3,
};
const noKey: TableMapping = { ...mapping, relationId: 8, key: [], local: { ...mapping.local, name: 'nokey', primaryKey: [] } };
const lww: ShapePolicy = { rules: LAST_UPDATE_WINS, losing: 'keep_local', procedure: true };

let xid = 0;
function txn(...changes: ChangeMessage[]): RemoteTransaction {
  xid++;
  return {
    begin: { tag: 'begin', finalLsn: BigInt(xid * 100), commitTime: 1n, xid },
    commit: { tag: 'commit', flags: 0, commitLsn: BigInt(xid * 100), endLsn: BigInt(xid * 100 + 8), commitTime: 1n },
    changes,
    heartbeat: null,
    traceparent: null,
  };
}

const mappings = new Map([
  [7, mapping],
  [8, noKey],
]);
function encode(txns: RemoteTransaction[], options = { locks: false, maxSteps: 100 }, policy: ShapePolicy = lww, registry = new ShapeRegistry()) {
  return encodeGroup(
    txns,
    (id) => mappings.get(id),
    () => policy,
    registry,
    options,
  );
}

describe('encodeGroup', () => {
  it('carries every column of inserts and deletes, and of updates whose row is complete', () => {
    const g = encode([
      txn(
        { tag: 'insert', relationId: 7, newTuple: ['1', 'x', null] },
        { tag: 'update', relationId: 7, oldKind: null, oldTuple: null, newTuple: ['1', 'y', 'z'] },
      ),
      txn({ tag: 'delete', relationId: 7, oldKind: 'key', oldTuple: ['1', null, null] }),
    ]);
    expect(g.txns).toHaveLength(2);
    expect(g.nsteps).toEqual([2, 1]);
    expect(g.values).toEqual(['1', 'x', null, '1', 'y', 'z', '1', null, null]);
    expect(g.steps.map((s) => [s.txn, s.shape?.kind, s.key])).toEqual([
      [0, 'insert', ['1']],
      [0, 'update', ['1']],
      [1, 'delete', ['1']],
    ]);
    const update = g.steps[1]?.shape;
    expect(update?.complete).toBe(true);
  });

  it('leaves unchanged TOAST columns out of an update, which then cannot re-create a missing row', () => {
    const g = encode([txn({ tag: 'update', relationId: 7, oldKind: null, oldTuple: null, newTuple: ['1', UNCHANGED_TOAST, 'z'] })]);
    const shape = g.steps[0]?.shape;
    expect(shape?.complete).toBe(false);
    expect(shape?.carried.map((c) => c.name)).toEqual(['id', 'b']);
    expect(g.values).toEqual(['1', 'z']);
  });

  it('fills unchanged TOAST columns from the old row under REPLICA IDENTITY FULL, but logs only what was sent', () => {
    const g = encode([txn({ tag: 'update', relationId: 7, oldKind: 'full', oldTuple: ['1', 'old-a', 'old-b'], newTuple: ['1', UNCHANGED_TOAST, 'z'] })]);
    const shape = g.steps[0]?.shape;
    expect(shape?.complete).toBe(true);
    expect(g.values).toEqual(['1', 'old-a', 'z']);
    expect(shape?.sent.map((c) => c.name)).toEqual(['id', 'b']);
  });

  it('stops before the first transaction the procedure does not decide exactly like the statements', () => {
    const ok = txn({ tag: 'insert', relationId: 7, newTuple: ['1', 'x', 'y'] });
    const cases: ChangeMessage[] = [
      { tag: 'update', relationId: 7, oldKind: 'key', oldTuple: ['1', null, null], newTuple: ['2', 'x', 'y'] }, // key change
      { tag: 'truncate', cascade: false, restartIdentity: false, relationIds: [7] },
      { tag: 'insert', relationId: 8, newTuple: ['1', 'x', 'y'] }, // no primary key
      { tag: 'insert', relationId: 7, newTuple: ['1', 'x'] }, // does not match its Relation message
      { tag: 'insert', relationId: 99, newTuple: ['1'] }, // no mapping
    ];
    for (const bad of cases) {
      const g = encode([ok, txn(bad), ok]);
      expect(g.txns).toEqual([ok]);
    }
    expect(encode([ok], undefined, { ...lww, procedure: false }).txns).toEqual([]);
  });

  it('takes sorted, distinct key locks first when other sessions apply concurrently', () => {
    const g = encode(
      [
        txn(
          { tag: 'insert', relationId: 7, newTuple: ['2', 'x', 'y'] },
          { tag: 'update', relationId: 7, oldKind: null, oldTuple: null, newTuple: ['1', 'x', 'y'] },
          { tag: 'delete', relationId: 7, oldKind: 'key', oldTuple: ['2', null, null] },
        ),
      ],
      {
        locks: true,
        maxSteps: 100,
      },
    );
    const locks = lockOrder([keyLock('public.t', ['2']), keyLock('public.t', ['1'])]);
    expect(g.nsteps).toEqual([locks.length + 3]);
    expect(g.shapeIds.slice(0, locks.length)).toEqual(locks.map(() => 0));
    expect(g.values.slice(0, locks.length * 2)).toEqual(locks.flatMap((l) => [String(l[0]), String(l[1])]));
  });

  it('never splits a transaction, and always takes at least one', () => {
    const big = txn(...Array.from({ length: 5 }, (_, i): ChangeMessage => ({ tag: 'insert', relationId: 7, newTuple: [String(i), 'x', 'y'] })));
    expect(encode([big, big], { locks: false, maxSteps: 3 }).txns).toHaveLength(1);
    expect(encode([txn(), big], { locks: false, maxSteps: 3 }).nsteps).toEqual([0]);
  });

  it('reuses a shape for the same table, operation and columns, and makes new ones otherwise', () => {
    const registry = new ShapeRegistry();
    encode([txn({ tag: 'insert', relationId: 7, newTuple: ['1', 'x', 'y'] })], undefined, lww, registry);
    const before = registry.generation;
    encode([txn({ tag: 'insert', relationId: 7, newTuple: ['2', 'x', 'y'] })], undefined, lww, registry);
    expect(registry.generation).toBe(before);
    encode([txn({ tag: 'delete', relationId: 7, oldKind: 'key', oldTuple: ['2', null, null] })], undefined, lww, registry);
    expect(registry.generation).toBe(before + 1);
    const update = txn({ tag: 'update', relationId: 7, oldKind: null, oldTuple: null, newTuple: ['2', 'x', 'z'] });
    const [shape] = registry.current(() => true).filter((s) => s.kind === 'insert');
    expect(encode([update], undefined, lww, registry).steps[0]?.shape).not.toBe(shape);
    expect(registry.generation).toBe(before + 2);
    expect(registry.current(() => false)).toEqual([]);
    // A shape dropped from the registry is never handed out again, not even for its mapping.
    const again = encode([txn({ tag: 'insert', relationId: 7, newTuple: ['3', 'x', 'y'] })], undefined, lww, registry).steps[0]?.shape;
    expect(again).not.toBe(shape);
    expect(registry.generation).toBe(before + 3);
    expect(registry.current(() => true)).toEqual([again]);
  });
});

describe('key locks', () => {
  it('are stable, bounded and ordered', () => {
    const l = keyLock('public.t', ['42']);
    expect(keyLock('public.t', ['42'])).toEqual(l);
    expect(l[1]).toBeGreaterThanOrEqual(0);
    expect(l[1]).toBeLessThan(LOCK_BUCKETS);
    expect(keyLock('public.u', ['42'])[0]).not.toBe(l[0]);
    expect(
      lockOrder([
        [2, 1],
        [1, 5],
        [2, 1],
        [1, 3],
      ]),
    ).toEqual([
      [1, 3],
      [1, 5],
      [2, 1],
    ]);
  });
});

describe('apply procedure events', () => {
  it('round-trips every conflict type and resolution', () => {
    for (const [t, type] of CONFLICT_TYPES.entries()) {
      for (const [r, resolution] of RESOLUTIONS.entries()) {
        expect(decodeEvent(12_345 * 64 + t * 8 + r)).toEqual({ step: 12_345, type, resolution });
      }
    }
    expect(() => decodeEvent(7)).toThrow(RangeError);
  });
});
