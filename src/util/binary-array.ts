/**
 * One-dimensional arrays in PostgreSQL's binary array format (arrayfuncs.c, array_send and
 * array_recv): Int32 number of dimensions, Int32 has-nulls flag, Int32 element type OID, then per
 * dimension Int32 length and Int32 lower bound, then every element as an Int32 byte length (-1 for
 * NULL) and its bytes in the element type's binary form. node-postgres sends a Buffer parameter with
 * format code 1 (binary). array_recv checks the element type OID against the parameter's type, so
 * each writer names its type.
 *
 * Why not array literals: the apply procedure's values go to the server once per CALL, thousands
 * of them. The literal was a string per element plus their join, then the driver's UTF-8 copy of the
 * whole (a third of the agent's CPU during a pgbench backlog was garbage collection), and the server
 * scanned it character by character for quotes and commas (ReadArrayStr), then parsed each element
 * with the type's input function. Here the bytes are written once, array_recv reads each element by
 * its length, and a pg_lsn or timestamptz is eight bytes (pg_lsn_recv, timestamptz_recv: an Int64,
 * the timestamp in microseconds since 2000-01-01 as on the replication wire) instead of text.
 */

const TEXT_OID = 25;
const INT4_OID = 23;
/** Element types whose binary form is an Int64. */
export const INT8_OID = { int8: 20, timestamptz: 1184, pg_lsn: 3220 } as const;
const HEADER_BYTES = 20;
/**
 * Up to this length a JavaScript loop writes ASCII faster than a call into Buffer#write (on the
 * development machine the two cost the same near 24 to 28 characters; at 8, 15 ns against ~70 ns).
 */
const SHORT = 24;

export function binaryTextArray(values: readonly (string | null)[]): Buffer {
  let estimate = HEADER_BYTES;
  let nulls = false;
  let longest = 0;
  for (const v of values) {
    if (v === null) nulls = true;
    else if (v.length > longest) longest = v.length;
    estimate += 4 + (v === null ? 0 : v.length);
  }
  // Room for the worst case of the element being written (three bytes per UTF-16 unit) while the
  // ones before it were ASCII: without it, ASCII text grew the buffer at its last long element.
  let buf: Buffer = Buffer.allocUnsafe(estimate + 2 * longest);
  writeHeader(buf, nulls, TEXT_OID, values.length);
  let off = HEADER_BYTES;
  for (let i = 0; i < values.length; i++) {
    const v = values[i] as string | null;
    if (v === null) {
      if (off + 4 > buf.length) buf = grow(buf, off + 4);
      buf.writeInt32BE(-1, off);
      off += 4;
      continue;
    }
    // The elements after this one need at least their length prefix each: keep the estimate for them.
    if (off + 4 + v.length * 3 > buf.length) buf = grow(buf, off + 4 + v.length * 3 + (values.length - i) * 4);
    const start = off + 4;
    let end = v.length <= SHORT ? writeAscii(buf, v, start) : -1;
    if (end < 0) end = start + buf.write(v, start, 'utf8');
    buf.writeInt32BE(end - start, off);
    off = end;
  }
  return buf.subarray(0, off);
}

/** Int64 elements: `type` says which (pg_lsn and timestamptz are sent as their Int64). */
export function binaryInt8Array(values: readonly bigint[], type: keyof typeof INT8_OID): Buffer {
  const buf = Buffer.allocUnsafe(HEADER_BYTES + values.length * 12);
  writeHeader(buf, false, INT8_OID[type], values.length);
  let off = HEADER_BYTES;
  for (const v of values) {
    buf.writeInt32BE(8, off);
    // The same eight bytes either way; each writer takes only its own range.
    if (v < 0n) buf.writeBigInt64BE(v, off + 4);
    else buf.writeBigUInt64BE(v, off + 4);
    off += 12;
  }
  return buf;
}

/** int4 elements. */
export function binaryInt4Array(values: readonly number[]): Buffer {
  const buf = Buffer.allocUnsafe(HEADER_BYTES + values.length * 8);
  writeHeader(buf, false, INT4_OID, values.length);
  let off = HEADER_BYTES;
  for (const v of values) {
    buf.writeInt32BE(4, off);
    buf.writeInt32BE(v, off + 4);
    off += 8;
  }
  return buf;
}

function writeHeader(buf: Buffer, nulls: boolean, elementOid: number, length: number): void {
  buf.writeInt32BE(1, 0);
  buf.writeInt32BE(nulls ? 1 : 0, 4);
  buf.writeInt32BE(elementOid, 8);
  buf.writeInt32BE(length, 12);
  buf.writeInt32BE(1, 16);
}

/** Writes `s` at `at` if it is ASCII; -1 (nothing to rely on written) if it is not. */
function writeAscii(buf: Buffer, s: string, at: number): number {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0x80) return -1;
    buf[at + i] = c;
  }
  return at + s.length;
}

function grow(buf: Buffer, needed: number): Buffer {
  const next = Buffer.allocUnsafe(Math.max(needed, buf.length * 2));
  buf.copy(next);
  return next;
}
