import { describe, expect, it } from 'vitest';
import type { LocalColumn, LocalTable } from '../../src/apply/local-catalog.js';
import { mapRelation, SchemaMismatchError } from '../../src/apply/table-mapping.js';
import type { RelationMessage, ReplicaIdentity } from '../../src/protocol/pgoutput-messages.js';

/** t (id int, region text, code text) here, with the given primary key. */
function local(primaryKey: string[]): LocalTable {
  const columns = new Map<string, LocalColumn>(
    [
      ['id', 'integer', 23],
      ['region', 'text', 25],
      ['code', 'text', 25],
    ].map(([name, type, typeOid]) => [
      name as string,
      { name: name as string, type: type as string, typeOid: typeOid as number, identity: '', generated: false },
    ]),
  );
  return { schema: 'public', name: 't', oid: 1, columns, primaryKey, replicaIdentity: 'd' };
}

/** The peer's Relation message for t, its replica identity flagging `identity` (proto.c LOGICALREP_IS_REPLICA_IDENTITY). */
function relation(replicaIdentity: ReplicaIdentity, identity: string[]): RelationMessage {
  const columns = [
    ['id', 23],
    ['region', 25],
    ['code', 25],
  ].map(([name, typeOid]) => ({
    name: name as string,
    isKey: replicaIdentity === 'full' || identity.includes(name as string),
    typeOid: typeOid as number,
    typeMod: -1,
  }));
  return { tag: 'relation', relationId: 7, namespace: 'public', name: 't', replicaIdentity, columns };
}

function refusal(r: RelationMessage, l: LocalTable): SchemaMismatchError {
  try {
    mapRelation(r, l);
  } catch (err) {
    if (err instanceof SchemaMismatchError) return err;
    throw err;
  }
  throw new Error('mapped');
}

describe("the peer's replica identity and the local primary key", () => {
  it('maps a table whose old keys carry every primary key column', () => {
    expect(mapRelation(relation('default', ['id']), local(['id'])).key.map((c) => c.name)).toEqual(['id']);
    // A wider identity (an index over the key and more, or a wider primary key there) still carries it.
    expect(mapRelation(relation('index', ['id', 'code']), local(['id'])).key.map((c) => c.name)).toEqual(['id']);
    expect(mapRelation(relation('default', ['id', 'region']), local(['id'])).key.map((c) => c.name)).toEqual(['id']);
    expect(mapRelation(relation('full', []), local(['id', 'region'])).key.map((c) => c.name)).toEqual(['id', 'region']);
  });

  it('maps a table the peer cannot publish updates or deletes of (NOTHING, or no key there): inserts only', () => {
    expect(mapRelation(relation('nothing', []), local(['id'])).key.map((c) => c.name)).toEqual(['id']);
    expect(mapRelation(relation('default', []), local(['id'])).key.map((c) => c.name)).toEqual(['id']);
  });

  it('refuses REPLICA IDENTITY USING INDEX on an index without the primary key, with the fix on the peer', () => {
    const e = refusal(relation('index', ['code']), local(['id']));
    expect(e.message).toContain("primary key column public.t.id is not in the peer's replica identity (REPLICA IDENTITY USING INDEX)");
    expect(e.message).toContain('ALTER TABLE "public"."t" REPLICA IDENTITY DEFAULT on the peer');
    expect(e.where.column).toBe('id');
  });

  it('refuses a primary key here that is wider than the one the peer logs', () => {
    const e = refusal(relation('default', ['id']), local(['id', 'region']));
    expect(e.message).toContain("primary key column public.t.region is not in the peer's replica identity (the peer's primary key)");
    expect(e.message).toContain('give the table the same primary key on every node');
  });
});
