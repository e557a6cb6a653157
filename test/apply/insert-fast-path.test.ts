import { describe, expect, it } from 'vitest';
import type { LocalColumn, LocalTable } from '../../src/apply/local-catalog.js';
import { insertRowsFast } from '../../src/apply/statements.js';
import { mapRelation } from '../../src/apply/table-mapping.js';
import type { RelationColumn } from '../../src/protocol/pgoutput-messages.js';

// id bigint, n numeric, at timestamptz, note text, dom (a user type on the peer, bigint here).
const REMOTE: RelationColumn[] = [
  { name: 'id', isKey: true, typeOid: 20, typeMod: -1 },
  { name: 'n', isKey: false, typeOid: 1700, typeMod: -1 },
  { name: 'at', isKey: false, typeOid: 1184, typeMod: -1 },
  { name: 'note', isKey: false, typeOid: 25, typeMod: -1 },
  { name: 'dom', isKey: false, typeOid: 16_500, typeMod: -1 },
];

const LOCAL_TYPES: Record<string, [string, number]> = {
  id: ['bigint', 20],
  n: ['numeric', 1700],
  at: ['timestamp with time zone', 1184],
  note: ['text', 25],
  dom: ['bigint', 20],
};

function localTable(): LocalTable {
  const columns = new Map<string, LocalColumn>(
    Object.entries(LOCAL_TYPES).map(([name, [type, typeOid]]) => [name, { name, type, typeOid, identity: '', generated: false }]),
  );
  return { schema: 'public', name: 'fast', oid: 1, columns, primaryKey: ['id'], replicaIdentity: 'd' };
}

describe('the insert fast path', () => {
  const mapping = mapRelation({ tag: 'relation', relationId: 1, namespace: 'public', name: 'fast', replicaIdentity: 'default', columns: REMOTE }, localTable());

  it('marks a column bare by the type the peer sent it as, not by the local one', () => {
    expect(Object.fromEntries(mapping.columns.map((c) => [c.name, c.bareElement === true]))).toEqual({
      id: true,
      n: true,
      at: true,
      note: false,
      // bigint here, but the peer's own type writes it: its text may hold anything.
      dom: false,
    });
  });

  it('sends bare columns unquoted and the others quoted and escaped, NULL as the word', () => {
    const s = insertRowsFast(mapping, [
      ['1', '-0.5', '0001-01-01 00:00:00+00 BC', 'a,b "c" \\', '7'],
      ['2', null, 'infinity', null, '1,2'],
    ]);
    expect(s.values.slice(0, 5)).toEqual(['{1,2}', '{-0.5,NULL}', '{0001-01-01 00:00:00+00 BC,infinity}', '{"a,b \\"c\\" \\\\",NULL}', '{"7","1,2"}']);
    // Unnested side by side in the select list (a ProjectSet), typed arrays where the element type allows.
    expect(s.text).toContain(
      'SELECT unnest($1::bigint[]), unnest($2::numeric[]), unnest($3::timestamp with time zone[]), unnest($4::text[]), unnest($5::bigint[])',
    );
  });
});
