/**
 * A cursor over one message. It owns all offset arithmetic; readers never index the buffer
 * themselves. Every read checks bounds so that a truncated message becomes a typed error rather
 * than garbage.
 */
export class TruncatedMessageError extends Error {
  readonly code = 'PGBIDI_TRUNCATED_MESSAGE';
  constructor(needed: number, offset: number, length: number) {
    super(`message truncated: needed ${needed} bytes at offset ${offset} of ${length}`);
    this.name = 'TruncatedMessageError';
  }
}

export class ByteReader {
  private offset = 0;

  constructor(private readonly buffer: Buffer) {}

  get position(): number {
    return this.offset;
  }

  get remaining(): number {
    return this.buffer.length - this.offset;
  }

  private need(n: number): void {
    if (this.offset + n > this.buffer.length) throw new TruncatedMessageError(n, this.offset, this.buffer.length);
  }

  byte(): number {
    this.need(1);
    return this.buffer[this.offset++] as number;
  }

  char(): string {
    return String.fromCharCode(this.byte());
  }

  int16(): number {
    this.need(2);
    const v = this.buffer.readInt16BE(this.offset);
    this.offset += 2;
    return v;
  }

  /** Counts that PostgreSQL reads back with pq_getmsgint(in, 2), which is unsigned. */
  uint16(): number {
    this.need(2);
    const v = this.buffer.readUInt16BE(this.offset);
    this.offset += 2;
    return v;
  }

  int32(): number {
    this.need(4);
    const v = this.buffer.readInt32BE(this.offset);
    this.offset += 4;
    return v;
  }

  uint32(): number {
    this.need(4);
    const v = this.buffer.readUInt32BE(this.offset);
    this.offset += 4;
    return v;
  }

  uint64(): bigint {
    this.need(8);
    const v = this.buffer.readBigUInt64BE(this.offset);
    this.offset += 8;
    return v;
  }

  int64(): bigint {
    this.need(8);
    const v = this.buffer.readBigInt64BE(this.offset);
    this.offset += 8;
    return v;
  }

  /** NUL-terminated UTF-8 string ("String" in the protocol docs). */
  cstring(): string {
    const end = this.buffer.indexOf(0, this.offset);
    if (end < 0) throw new TruncatedMessageError(1, this.buffer.length, this.buffer.length);
    const s = this.buffer.toString('utf8', this.offset, end);
    this.offset = end + 1;
    return s;
  }

  /** An owned copy: the driver reuses its receive buffer (node-postgres PR #3776). */
  bytes(n: number): Buffer {
    this.need(n);
    const copy = Buffer.from(this.buffer.subarray(this.offset, this.offset + n));
    this.offset += n;
    return copy;
  }

  utf8(n: number): string {
    this.need(n);
    const s = this.buffer.toString('utf8', this.offset, this.offset + n);
    this.offset += n;
    return s;
  }
}
