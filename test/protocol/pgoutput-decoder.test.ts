import { describe, expect, it } from 'vitest';
import { TruncatedMessageError } from '../../src/protocol/byte-reader.js';
import { decodePgoutput, UnknownMessageError } from '../../src/protocol/pgoutput-decoder.js';
import type { PgoutputMessage } from '../../src/protocol/pgoutput-messages.js';
import { UNCHANGED_TOAST } from '../../src/protocol/pgoutput-messages.js';
import { binaryColumn, nullColumn, PgoutputBuilder, textColumn, unchangedToastColumn } from '../support/pgoutput-builder.js';

// Values chosen to break a decoder that goes through Number or signed 32-bit reads.
const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;
const UINT64_MAX = 2n ** 64n - 1n;
const ABOVE_2_53 = 2n ** 53n + 1n; // 9007199254740993: not representable as a double
const LSN_BIG = 0x0123_4567_89ab_cdefn;
const UINT32_MAX = 0xffff_ffff;
const ABOVE_2_31 = 2 ** 31 + 7; // negative if read as Int32

// 'a' (1 byte) + '€' (3 bytes) + '🐘' (4 bytes) = 8 bytes; 8192 repetitions = exactly 64 KiB, no NUL.
const LARGE_TEXT = 'a€🐘'.repeat(8192);
const BINARY_BYTES = Buffer.from([0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff, 0x00]);

interface Fixture {
  readonly name: string;
  readonly bytes: Buffer;
  readonly expected: PgoutputMessage;
}

const fixtures: readonly Fixture[] = [
  {
    name: 'Begin with LSN above 2^53, int64 max timestamp, xid 2^32-1',
    bytes: new PgoutputBuilder().begin({ finalLsn: LSN_BIG, commitTime: INT64_MAX, xid: UINT32_MAX }).build(),
    expected: { tag: 'begin', finalLsn: 0x0123_4567_89ab_cdefn, commitTime: 9223372036854775807n, xid: 4294967295 },
  },
  {
    name: 'Begin with uint64 max LSN, int64 min timestamp, xid above 2^31',
    bytes: new PgoutputBuilder().begin({ finalLsn: UINT64_MAX, commitTime: INT64_MIN, xid: ABOVE_2_31 }).build(),
    expected: { tag: 'begin', finalLsn: 18446744073709551615n, commitTime: -9223372036854775808n, xid: 2147483655 },
  },
  {
    name: 'Begin with zero values',
    bytes: new PgoutputBuilder().begin({ finalLsn: 0n, commitTime: 0n, xid: 0 }).build(),
    expected: { tag: 'begin', finalLsn: 0n, commitTime: 0n, xid: 0 },
  },
  {
    name: 'Commit with distinct LSNs above 2^53 and a timestamp above 2^53',
    bytes: new PgoutputBuilder().commit({ flags: 0, commitLsn: LSN_BIG, endLsn: UINT64_MAX, commitTime: ABOVE_2_53 }).build(),
    expected: {
      tag: 'commit',
      flags: 0,
      commitLsn: 0x0123_4567_89ab_cdefn,
      endLsn: 18446744073709551615n,
      commitTime: 9007199254740993n,
    },
  },
  {
    name: 'Commit with negative timestamp (before 2000) and nonzero flags byte',
    bytes: new PgoutputBuilder().commit({ flags: 0xff, commitLsn: 0x16_b374_d848n, endLsn: 0x16_b374_d878n, commitTime: -1n }).build(),
    expected: { tag: 'commit', flags: 255, commitLsn: 0x16_b374_d848n, endLsn: 0x16_b374_d878n, commitTime: -1n },
  },
  {
    name: 'Origin with multibyte name',
    bytes: new PgoutputBuilder().origin({ originLsn: UINT64_MAX, originName: 'pgbidi_nœud_東京_🐘' }).build(),
    expected: { tag: 'origin', originLsn: 18446744073709551615n, originName: 'pgbidi_nœud_東京_🐘' },
  },
  {
    name: 'Origin with empty name',
    bytes: new PgoutputBuilder().origin({ originLsn: ABOVE_2_53, originName: '' }).build(),
    expected: { tag: 'origin', originLsn: 9007199254740993n, originName: '' },
  },
  {
    name: 'Relation, replica identity default, key and non-key columns, OIDs above 2^31',
    bytes: new PgoutputBuilder()
      .relation({
        relationId: ABOVE_2_31,
        namespace: 'app',
        name: 'größe_🐘',
        replicaIdentity: 'd',
        columns: [
          { flags: 1, name: 'id', typeOid: 20, typeMod: -1 },
          { flags: 0, name: 'naïve', typeOid: 1043, typeMod: 68 },
          { flags: 0, name: 'custom', typeOid: UINT32_MAX, typeMod: -2147483648 },
        ],
      })
      .build(),
    expected: {
      tag: 'relation',
      relationId: 2147483655,
      namespace: 'app',
      name: 'größe_🐘',
      replicaIdentity: 'default',
      columns: [
        { isKey: true, name: 'id', typeOid: 20, typeMod: -1 },
        { isKey: false, name: 'naïve', typeOid: 1043, typeMod: 68 },
        { isKey: false, name: 'custom', typeOid: 4294967295, typeMod: -2147483648 },
      ],
    },
  },
  {
    name: 'Relation in pg_catalog (empty namespace), replica identity full',
    bytes: new PgoutputBuilder()
      .relation({
        relationId: UINT32_MAX,
        namespace: '',
        name: 'pg_thing',
        replicaIdentity: 'f',
        columns: [
          { flags: 1, name: 'a', typeOid: 25, typeMod: -1 },
          { flags: 1, name: 'b', typeOid: 17, typeMod: -1 },
        ],
      })
      .build(),
    expected: {
      tag: 'relation',
      relationId: 4294967295,
      namespace: 'pg_catalog',
      name: 'pg_thing',
      replicaIdentity: 'full',
      columns: [
        { isKey: true, name: 'a', typeOid: 25, typeMod: -1 },
        { isKey: true, name: 'b', typeOid: 17, typeMod: -1 },
      ],
    },
  },
  {
    name: 'Relation, replica identity nothing, no columns',
    bytes: new PgoutputBuilder().relation({ relationId: 16384, namespace: 'public', name: 'empty', replicaIdentity: 'n', columns: [] }).build(),
    expected: { tag: 'relation', relationId: 16384, namespace: 'public', name: 'empty', replicaIdentity: 'nothing', columns: [] },
  },
  {
    name: 'Relation, replica identity index',
    bytes: new PgoutputBuilder()
      .relation({
        relationId: 16385,
        namespace: 'public',
        name: 'by_index',
        replicaIdentity: 'i',
        columns: [{ flags: 1, name: 'k', typeOid: 23, typeMod: -1 }],
      })
      .build(),
    expected: {
      tag: 'relation',
      relationId: 16385,
      namespace: 'public',
      name: 'by_index',
      replicaIdentity: 'index',
      columns: [{ isKey: true, name: 'k', typeOid: 23, typeMod: -1 }],
    },
  },
  {
    name: 'Type in a user schema, OID above 2^31',
    bytes: new PgoutputBuilder().type({ typeOid: ABOVE_2_31, namespace: 'app', name: 'mood_ünïcode' }).build(),
    expected: { tag: 'type', typeOid: 2147483655, namespace: 'app', name: 'mood_ünïcode' },
  },
  {
    name: 'Type in pg_catalog (empty namespace)',
    bytes: new PgoutputBuilder().type({ typeOid: 16, namespace: '', name: 'bool' }).build(),
    expected: { tag: 'type', typeOid: 16, namespace: 'pg_catalog', name: 'bool' },
  },
  {
    name: "Insert with 'n', 't' (ASCII, multibyte, emoji, empty), 'b' and 'u' columns",
    bytes: new PgoutputBuilder()
      .insert({
        relationId: ABOVE_2_31,
        newTuple: [
          textColumn('42'),
          nullColumn,
          textColumn('héllo wörld'),
          textColumn('日本語テキスト'),
          textColumn('🐘🚀👩‍💻'),
          textColumn(''),
          binaryColumn(BINARY_BYTES),
          binaryColumn(Buffer.alloc(0)),
          unchangedToastColumn,
        ],
      })
      .build(),
    expected: {
      tag: 'insert',
      relationId: 2147483655,
      newTuple: [
        '42',
        null,
        'héllo wörld',
        '日本語テキスト',
        '🐘🚀👩‍💻',
        '',
        Buffer.from([0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff, 0x00]),
        Buffer.alloc(0),
        UNCHANGED_TOAST,
      ],
    },
  },
  {
    name: 'Insert with a 64 KiB multibyte text value',
    bytes: new PgoutputBuilder().insert({ relationId: 1, newTuple: [textColumn(LARGE_TEXT), textColumn('tail')] }).build(),
    expected: { tag: 'insert', relationId: 1, newTuple: ['a€🐘'.repeat(8192), 'tail'] },
  },
  {
    name: 'Insert with an empty tuple',
    bytes: new PgoutputBuilder().insert({ relationId: UINT32_MAX, newTuple: [] }).build(),
    expected: { tag: 'insert', relationId: 4294967295, newTuple: [] },
  },
  {
    name: 'Update without old tuple',
    bytes: new PgoutputBuilder().update({ relationId: 16384, newTuple: [textColumn('1'), textColumn('new')] }).build(),
    expected: { tag: 'update', relationId: 16384, oldKind: null, oldTuple: null, newTuple: ['1', 'new'] },
  },
  {
    name: "Update with 'K' old key tuple",
    bytes: new PgoutputBuilder()
      .update({
        relationId: ABOVE_2_31,
        old: { marker: 'K', tuple: [textColumn('1'), nullColumn] },
        newTuple: [textColumn('2'), textColumn('value')],
      })
      .build(),
    expected: {
      tag: 'update',
      relationId: 2147483655,
      oldKind: 'key',
      oldTuple: ['1', null],
      newTuple: ['2', 'value'],
    },
  },
  {
    name: "Update with 'O' old full tuple and an unchanged TOAST value in the new tuple",
    bytes: new PgoutputBuilder()
      .update({
        relationId: 16384,
        old: { marker: 'O', tuple: [textColumn('1'), textColumn('😀 old'), binaryColumn(Buffer.from([9, 0, 9]))] },
        newTuple: [textColumn('1'), unchangedToastColumn, binaryColumn(Buffer.from([1, 2]))],
      })
      .build(),
    expected: {
      tag: 'update',
      relationId: 16384,
      oldKind: 'full',
      oldTuple: ['1', '😀 old', Buffer.from([9, 0, 9])],
      newTuple: ['1', UNCHANGED_TOAST, Buffer.from([1, 2])],
    },
  },
  {
    name: "Delete with 'K' key tuple",
    bytes: new PgoutputBuilder().delete({ relationId: UINT32_MAX, marker: 'K', oldTuple: [textColumn('7'), nullColumn, nullColumn] }).build(),
    expected: { tag: 'delete', relationId: 4294967295, oldKind: 'key', oldTuple: ['7', null, null] },
  },
  {
    name: "Delete with 'O' full old tuple",
    bytes: new PgoutputBuilder().delete({ relationId: 16384, marker: 'O', oldTuple: [textColumn('7'), textColumn('ça va'), unchangedToastColumn] }).build(),
    expected: { tag: 'delete', relationId: 16384, oldKind: 'full', oldTuple: ['7', 'ça va', UNCHANGED_TOAST] },
  },
  {
    name: 'Truncate without options',
    bytes: new PgoutputBuilder().truncate({ cascade: false, restartIdentity: false, relationIds: [16384] }).build(),
    expected: { tag: 'truncate', cascade: false, restartIdentity: false, relationIds: [16384] },
  },
  {
    name: 'Truncate CASCADE (bit 1)',
    bytes: new PgoutputBuilder().truncate({ cascade: true, restartIdentity: false, relationIds: [16384, ABOVE_2_31] }).build(),
    expected: { tag: 'truncate', cascade: true, restartIdentity: false, relationIds: [16384, 2147483655] },
  },
  {
    name: 'Truncate RESTART IDENTITY (bit 2)',
    bytes: new PgoutputBuilder().truncate({ cascade: false, restartIdentity: true, relationIds: [UINT32_MAX] }).build(),
    expected: { tag: 'truncate', cascade: false, restartIdentity: true, relationIds: [4294967295] },
  },
  {
    name: 'Truncate CASCADE and RESTART IDENTITY, three relations',
    bytes: new PgoutputBuilder().truncate({ cascade: true, restartIdentity: true, relationIds: [1, 2, 3] }).build(),
    expected: { tag: 'truncate', cascade: true, restartIdentity: true, relationIds: [1, 2, 3] },
  },
  {
    name: 'Transactional Message with binary content',
    bytes: new PgoutputBuilder().message({ transactional: true, lsn: LSN_BIG, prefix: 'pgbidi/🐘', content: BINARY_BYTES }).build(),
    expected: {
      tag: 'message',
      transactional: true,
      lsn: 0x0123_4567_89ab_cdefn,
      prefix: 'pgbidi/🐘',
      content: Buffer.from([0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff, 0x00]),
    },
  },
  {
    name: 'Non-transactional Message with empty content',
    bytes: new PgoutputBuilder().message({ transactional: false, lsn: UINT64_MAX, prefix: 'p', content: Buffer.alloc(0) }).build(),
    expected: { tag: 'message', transactional: false, lsn: 18446744073709551615n, prefix: 'p', content: Buffer.alloc(0) },
  },
];

describe('decodePgoutput: every message type', () => {
  it.each(fixtures)('$name', ({ bytes, expected }) => {
    expect(decodePgoutput(bytes)).toStrictEqual(expected);
  });

  it('covers every message tag', () => {
    const tags = new Set(fixtures.map((f) => decodePgoutput(f.bytes).tag));
    expect([...tags].sort()).toEqual(['begin', 'commit', 'delete', 'insert', 'message', 'origin', 'relation', 'truncate', 'type', 'update'].sort());
  });

  it('decodes a 64 KiB multibyte value by byte length, not character length', () => {
    const bytes = new PgoutputBuilder().insert({ relationId: 1, newTuple: [textColumn(LARGE_TEXT)] }).build();
    const m = decodePgoutput(bytes);
    if (m.tag !== 'insert') throw new Error(`expected insert, got ${m.tag}`);
    const value = m.newTuple[0];
    if (typeof value !== 'string') throw new Error('expected a text value');
    expect(Buffer.byteLength(value, 'utf8')).toBe(65536);
    expect(value.length).toBe(8192 * 4); // 'a' 1 + '€' 1 + '🐘' 2 UTF-16 units
    expect(value.includes('\u0000')).toBe(false);
    expect(value.includes('\ufffd')).toBe(false);
  });

  it('returns binary values as Buffers, not strings', () => {
    const m = decodePgoutput(new PgoutputBuilder().insert({ relationId: 1, newTuple: [binaryColumn(BINARY_BYTES)] }).build());
    if (m.tag !== 'insert') throw new Error(`expected insert, got ${m.tag}`);
    expect(Buffer.isBuffer(m.newTuple[0])).toBe(true);
  });
});

describe('decodePgoutput: unknown tags and markers', () => {
  // Protocol v2+ streaming/two-phase tags are unknown to a v1 decoder, as are arbitrary bytes.
  const unknownTags = ['S', 'E', 'c', 'A', 'b', 'P', 'K', 'r', 'X', '\u0000', '\u00ff'];

  it.each(unknownTags)('unknown message tag %j → UnknownMessageError', (tag) => {
    const bytes = new PgoutputBuilder().char(tag).uint32(1).uint32(2).build();
    const error = captureError(() => decodePgoutput(bytes));
    expect(error).toBeInstanceOf(UnknownMessageError);
    expect(error).toMatchObject({ code: 'PGBIDI_UNKNOWN_MESSAGE', name: 'UnknownMessageError', messageTag: tag });
  });

  const malformed: ReadonlyArray<{ name: string; bytes: Buffer; messageTag: string }> = [
    {
      name: "Insert without 'N' marker",
      bytes: new PgoutputBuilder()
        .char('I')
        .uint32(1)
        .char('K')
        .tuple([textColumn('1')])
        .build(),
      messageTag: 'K',
    },
    {
      name: "Update with unknown marker 'X'",
      bytes: new PgoutputBuilder()
        .char('U')
        .uint32(1)
        .char('X')
        .tuple([textColumn('1')])
        .build(),
      messageTag: 'X',
    },
    {
      name: "Update with old tuple followed by 'O' instead of 'N'",
      bytes: new PgoutputBuilder()
        .char('U')
        .uint32(1)
        .char('K')
        .tuple([textColumn('1')])
        .char('O')
        .tuple([])
        .build(),
      messageTag: 'O',
    },
    {
      name: "Delete with 'N' marker",
      bytes: new PgoutputBuilder()
        .char('D')
        .uint32(1)
        .char('N')
        .tuple([textColumn('1')])
        .build(),
      messageTag: 'N',
    },
    {
      name: "Tuple column kind 'x'",
      bytes: new PgoutputBuilder().char('I').uint32(1).char('N').int16(1).char('x').build(),
      messageTag: 'x',
    },
    {
      name: "Relation replica identity 'z'",
      bytes: new PgoutputBuilder().relation({ relationId: 1, namespace: 'public', name: 't', replicaIdentity: 'z', columns: [] }).build(),
      messageTag: 'z',
    },
  ];

  it.each(malformed)('$name → UnknownMessageError', ({ bytes, messageTag }) => {
    const error = captureError(() => decodePgoutput(bytes));
    expect(error).toBeInstanceOf(UnknownMessageError);
    expect(error).toMatchObject({ code: 'PGBIDI_UNKNOWN_MESSAGE', messageTag });
  });
});

describe('decodePgoutput: column counts are unsigned, as proto.c reads them (pq_getmsgint(in, 2))', () => {
  it('a tuple with 32768 columns decodes', () => {
    const bytes = new PgoutputBuilder()
      .char('I')
      .uint32(1)
      .char('N')
      .raw(Buffer.from([0x80, 0x00]))
      .raw(Buffer.alloc(32768, 'n'))
      .build();
    const m = decodePgoutput(bytes);
    if (m.tag !== 'insert') throw new Error(`expected insert, got ${m.tag}`);
    expect(m.newTuple.length).toBe(32768);
    expect(m.newTuple.every((v) => v === null)).toBe(true);
  });

  it('a tuple count of 0xFFFF without the columns → TruncatedMessageError, not a RangeError', () => {
    const bytes = new PgoutputBuilder()
      .char('I')
      .uint32(1)
      .char('N')
      .raw(Buffer.from([0xff, 0xff]))
      .char('n')
      .build();
    expect(classify(() => decodePgoutput(bytes))).toBe('PGBIDI_TRUNCATED_MESSAGE');
  });

  it('a relation column count of 0xFFFF without the columns → TruncatedMessageError, not zero columns', () => {
    const bytes = new PgoutputBuilder()
      .char('R')
      .uint32(1)
      .cstring('public')
      .cstring('t')
      .char('d')
      .raw(Buffer.from([0xff, 0xff]))
      .build();
    expect(classify(() => decodePgoutput(bytes))).toBe('PGBIDI_TRUNCATED_MESSAGE');
  });
});

describe('decodePgoutput: truncation', () => {
  it('an empty payload → TruncatedMessageError', () => {
    const error = captureError(() => decodePgoutput(Buffer.alloc(0)));
    expect(error).toBeInstanceOf(TruncatedMessageError);
    expect(error).toMatchObject({ code: 'PGBIDI_TRUNCATED_MESSAGE', name: 'TruncatedMessageError' });
  });

  it.each(fixtures)('$name: every proper prefix fails with a typed error', ({ bytes }) => {
    const unexpected: string[] = [];
    let truncated = 0;
    for (let length = 0; length < bytes.length; length++) {
      const outcome = classify(() => decodePgoutput(bytes.subarray(0, length)));
      if (outcome === 'PGBIDI_TRUNCATED_MESSAGE') truncated++;
      else if (outcome !== 'PGBIDI_UNKNOWN_MESSAGE') unexpected.push(`length ${length}: ${outcome}`);
    }
    expect(unexpected).toEqual([]);
    // A prefix only removes bytes, so the first thing to go wrong is always running out of them.
    expect(truncated).toBe(bytes.length);
  });
});

function captureError(f: () => unknown): unknown {
  try {
    f();
  } catch (e) {
    return e;
  }
  throw new Error('expected an error, but the call returned');
}

/** The error code for the two typed errors, or a description of anything else (including success). */
function classify(f: () => unknown): string {
  try {
    const result = f();
    return `decoded successfully: ${JSON.stringify(result, (_k, v: unknown) => (typeof v === 'bigint' ? `${v}n` : v))}`;
  } catch (e) {
    if (e instanceof TruncatedMessageError && e.code === 'PGBIDI_TRUNCATED_MESSAGE') return e.code;
    if (e instanceof UnknownMessageError && e.code === 'PGBIDI_UNKNOWN_MESSAGE') return e.code;
    return e instanceof Error ? `${e.name}: ${e.message}` : `non-Error thrown: ${String(e)}`;
  }
}
