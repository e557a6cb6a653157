/**
 * Byte fixtures for protocol tests, in the style of node-postgres pg-protocol's test buffer builder:
 * a fluent writer of big-endian fields, one method per pgoutput message (protocol version 1,
 * "Logical Replication Message Formats"), plus the CopyData payloads of the streaming replication
 * protocol and the backend frames around them.
 *
 * The builder writes exactly what the documentation describes and knows nothing about the decoder,
 * so a test that decodes its output checks the decoder against the format, not against itself.
 */

/** A fluent big-endian writer. Every method appends and returns `this`; `build()` joins the parts. */
export class ByteBuilder {
  private readonly parts: Buffer[] = [];

  /** Int8 / Byte1 from a number (0..255). */
  byte(value: number): this {
    const b = Buffer.alloc(1);
    b.writeUInt8(value, 0);
    return this.raw(b);
  }

  /** Byte1 from a one-character string such as 'B' or 'K' (Latin-1, so any byte can be written). */
  char(c: string): this {
    if (c.length !== 1) throw new RangeError(`char() takes one character, got ${JSON.stringify(c)}`);
    return this.raw(Buffer.from(c, 'latin1'));
  }

  int16(value: number): this {
    const b = Buffer.alloc(2);
    b.writeInt16BE(value, 0);
    return this.raw(b);
  }

  int32(value: number): this {
    const b = Buffer.alloc(4);
    b.writeInt32BE(value, 0);
    return this.raw(b);
  }

  /** Int32 fields that PostgreSQL fills with unsigned values (xids, OIDs). */
  uint32(value: number): this {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(value, 0);
    return this.raw(b);
  }

  /** Int64 fields holding an XLogRecPtr (unsigned). */
  uint64(value: bigint): this {
    const b = Buffer.alloc(8);
    b.writeBigUInt64BE(value, 0);
    return this.raw(b);
  }

  /** Int64 fields holding a TimestampTz (signed). */
  int64(value: bigint): this {
    const b = Buffer.alloc(8);
    b.writeBigInt64BE(value, 0);
    return this.raw(b);
  }

  /** "String": UTF-8 bytes followed by a NUL. */
  cstring(value: string): this {
    return this.raw(Buffer.from(value, 'utf8')).byte(0);
  }

  raw(bytes: Buffer): this {
    this.parts.push(Buffer.from(bytes));
    return this;
  }

  build(): Buffer {
    return Buffer.concat(this.parts);
  }
}

/** One column of a TupleData: the kind byte as sent on the wire and, for 't' and 'b', its bytes. */
export type TupleColumnFixture =
  { readonly kind: 'n' } | { readonly kind: 'u' } | { readonly kind: 't'; readonly value: string | Buffer } | { readonly kind: 'b'; readonly value: Buffer };

export const nullColumn: TupleColumnFixture = { kind: 'n' };
export const unchangedToastColumn: TupleColumnFixture = { kind: 'u' };

export function textColumn(value: string | Buffer): TupleColumnFixture {
  return { kind: 't', value };
}

export function binaryColumn(value: Buffer): TupleColumnFixture {
  return { kind: 'b', value };
}

export interface RelationColumnFixture {
  /** Int8 flags: bit 1 marks a replica identity column. */
  readonly flags: number;
  readonly name: string;
  readonly typeOid: number;
  readonly typeMod: number;
}

/** Which old tuple an Update or Delete carries: 'K' key columns only, 'O' the whole old row. */
export type OldTupleMarker = 'K' | 'O';

/** One pgoutput message per builder in practice; `build()` returns the message's bytes. */
export class PgoutputBuilder extends ByteBuilder {
  /** 'B': Int64 final LSN, Int64 commit timestamp, Int32 xid. */
  begin(m: { finalLsn: bigint; commitTime: bigint; xid: number }): this {
    return this.char('B').uint64(m.finalLsn).int64(m.commitTime).uint32(m.xid);
  }

  /** 'C': Int8 flags (unused, 0), Int64 commit LSN, Int64 end LSN, Int64 commit timestamp. */
  commit(m: { flags?: number; commitLsn: bigint; endLsn: bigint; commitTime: bigint }): this {
    return this.char('C')
      .byte(m.flags ?? 0)
      .uint64(m.commitLsn)
      .uint64(m.endLsn)
      .int64(m.commitTime);
  }

  /** 'O': Int64 commit LSN on the origin server, String origin name. */
  origin(m: { originLsn: bigint; originName: string }): this {
    return this.char('O').uint64(m.originLsn).cstring(m.originName);
  }

  /**
   * 'R': Int32 relation OID, String namespace ('' for pg_catalog), String name, Int8 replica
   * identity ('d', 'n', 'f' or 'i'), Int16 column count, then per column Int8 flags, String name,
   * Int32 type OID, Int32 type modifier.
   */
  relation(m: { relationId: number; namespace: string; name: string; replicaIdentity: string; columns: readonly RelationColumnFixture[] }): this {
    this.char('R').uint32(m.relationId).cstring(m.namespace).cstring(m.name).char(m.replicaIdentity);
    this.int16(m.columns.length);
    for (const c of m.columns) this.byte(c.flags).cstring(c.name).uint32(c.typeOid).int32(c.typeMod);
    return this;
  }

  /** 'Y': Int32 type OID, String namespace ('' for pg_catalog), String type name. */
  type(m: { typeOid: number; namespace: string; name: string }): this {
    return this.char('Y').uint32(m.typeOid).cstring(m.namespace).cstring(m.name);
  }

  /** 'I': Int32 relation OID, Byte1 'N', TupleData. */
  insert(m: { relationId: number; newTuple: readonly TupleColumnFixture[] }): this {
    return this.char('I').uint32(m.relationId).char('N').tuple(m.newTuple);
  }

  /** 'U': Int32 relation OID, optional ('K' | 'O') TupleData, Byte1 'N', TupleData. */
  update(m: { relationId: number; old?: { marker: OldTupleMarker; tuple: readonly TupleColumnFixture[] }; newTuple: readonly TupleColumnFixture[] }): this {
    this.char('U').uint32(m.relationId);
    if (m.old !== undefined) this.char(m.old.marker).tuple(m.old.tuple);
    return this.char('N').tuple(m.newTuple);
  }

  /** 'D': Int32 relation OID, ('K' | 'O') TupleData. */
  delete(m: { relationId: number; marker: OldTupleMarker; oldTuple: readonly TupleColumnFixture[] }): this {
    return this.char('D').uint32(m.relationId).char(m.marker).tuple(m.oldTuple);
  }

  /** 'T': Int32 relation count, Int8 options (1 CASCADE, 2 RESTART IDENTITY), Int32 OID per relation. */
  truncate(m: { cascade: boolean; restartIdentity: boolean; relationIds: readonly number[] }): this {
    const options = (m.cascade ? 1 : 0) | (m.restartIdentity ? 2 : 0);
    this.char('T').uint32(m.relationIds.length).byte(options);
    for (const id of m.relationIds) this.uint32(id);
    return this;
  }

  /** 'M': Int8 flags (1 = transactional), Int64 LSN, String prefix, Int32 length, Byte[n] content. */
  message(m: { transactional: boolean; lsn: bigint; prefix: string; content: Buffer }): this {
    return this.char('M')
      .byte(m.transactional ? 1 : 0)
      .uint64(m.lsn)
      .cstring(m.prefix)
      .uint32(m.content.length)
      .raw(m.content);
  }

  /** TupleData: Int16 column count, then per column 'n' | 'u' | ('t' | 'b', Int32 length, bytes). */
  tuple(columns: readonly TupleColumnFixture[]): this {
    this.int16(columns.length);
    for (const c of columns) {
      switch (c.kind) {
        case 'n':
        case 'u':
          this.char(c.kind);
          break;
        case 't':
        case 'b': {
          const bytes = typeof c.value === 'string' ? Buffer.from(c.value, 'utf8') : c.value;
          this.char(c.kind).uint32(bytes.length).raw(bytes);
          break;
        }
      }
    }
    return this;
  }
}

/** CopyData payload 'w' XLogData: Int64 WAL start, Int64 WAL end, Int64 send time, Byte[n] payload. */
export function xlogDataPayload(m: { walStart: bigint; walEnd: bigint; sendTime: bigint; payload: Buffer }): Buffer {
  return new ByteBuilder().char('w').uint64(m.walStart).uint64(m.walEnd).int64(m.sendTime).raw(m.payload).build();
}

/** CopyData payload 'k' primary keepalive: Int64 WAL end, Int64 send time, Byte1 reply requested. */
export function keepalivePayload(m: { walEnd: bigint; sendTime: bigint; replyRequested: boolean }): Buffer {
  return new ByteBuilder()
    .char('k')
    .uint64(m.walEnd)
    .int64(m.sendTime)
    .byte(m.replyRequested ? 1 : 0)
    .build();
}

/** Backend CopyData frame: 'd', Int32 length (including itself), payload. */
export function copyDataFrame(payload: Buffer): Buffer {
  return new ByteBuilder()
    .char('d')
    .int32(4 + payload.length)
    .raw(payload)
    .build();
}

/** Backend CopyBothResponse frame as sent by START_REPLICATION: 'W', length 7, Int8 format 0, Int16 0 columns. */
export function copyBothResponseFrame(): Buffer {
  return new ByteBuilder()
    .char('W')
    .int32(4 + 1 + 2)
    .byte(0)
    .int16(0)
    .build();
}
