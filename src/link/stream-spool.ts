import { closeSync, ftruncateSync, openSync, rmSync, writeSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodePgoutput } from '../protocol/pgoutput-decoder.js';
import type { PgoutputMessage, StreamAbortMessage, StreamStartMessage, StreamedMessage } from '../protocol/pgoutput-messages.js';
import { makeSpoolDir } from './spool-dir.js';

/**
 * Keeps the transactions the peer streams before they commit (protocol 2 Stream Start … Stop
 * blocks), one file per transaction, until Stream Commit hands it to the receive stage whole, or
 * Stream Abort drops it or its aborted subtransaction. Like the apply worker's "streaming = on"
 * (worker.c stream_write_change, subxact_info_add, stream_abort_internal): memory stays bounded
 * whatever the transaction's size, and nothing is applied before the commit, whose time
 * last-update-wins compares.
 *
 * A file holds the messages as protocol 1 sends them, each behind its length (UInt32). Relation
 * messages are kept in memory with the file offset they came at instead: pgoutput sends a relation's
 * schema once per streamed transaction (maybe_send_schema, get_schema_sent_in_streamed_txn) and
 * tags it with the subtransaction that first used it, so the truncation that drops an aborted
 * subtransaction's changes must keep it.
 */

/**
 * Bytes gathered before a write, and read back at once. Messages are copied into one buffer rather
 * than kept as objects until the write: a million small buffers that outlive a young-generation
 * collection each would be promoted to the old generation and raise the agent's peak RSS.
 */
const WRITE_CHUNK = 256 * 1024;
const READ_CHUNK = 256 * 1024;

interface Spooled {
  readonly xid: number;
  readonly path: string;
  readonly fd: number;
  /** Bytes in the file. */
  written: number;
  /** Bytes in the spool's write buffer, which belongs to the transaction of the open block. */
  buffered: number;
  /** Subtransactions in the order of their first change, with the file offset of that change. */
  subxacts: { readonly xid: number; readonly offset: number }[];
  relations: { offset: number; readonly payload: Buffer }[];
  /** An Origin message came with it: a change replicated from elsewhere, which the assembler drops. */
  origin: boolean;
}

/** A committed streamed transaction, read back in order; `discard` removes its file. */
export interface SpooledTransaction {
  readonly xid: number;
  readonly origin: boolean;
  /**
   * The messages in stream order, a file chunk at a time, each chunk's decoded one by one as its
   * iterator is advanced: the caller can wait between them (backpressure) without holding decoded
   * messages, or an object per message, that would outlive a young-generation collection.
   */
  chunks(): AsyncGenerator<Iterable<PgoutputMessage>>;
  discard(): void;
}

export class StreamSpoolError extends Error {
  readonly code = 'PGBIDI_STREAM_SPOOL';
  constructor(message: string) {
    super(message);
    this.name = 'StreamSpoolError';
  }
}

export class StreamSpool {
  private dir: string | null = null;
  private readonly open = new Map<number, Spooled>();
  private current: Spooled | null = null;
  private serial = 0;
  private readonly buffer = Buffer.allocUnsafe(WRITE_CHUNK);

  /** `parent`: where the spool's private directory is made (the OS temp dir by default). */
  constructor(private readonly parent: string = tmpdir()) {}

  /** Streamed transactions neither committed nor aborted yet. */
  get pending(): boolean {
    return this.open.size > 0;
  }

  /** Between Stream Start and Stop. */
  get inBlock(): boolean {
    return this.current !== null;
  }

  start(m: StreamStartMessage): void {
    if (this.current) throw new StreamSpoolError(`Stream Start of ${m.xid} inside the block of ${this.current.xid}`);
    let s = this.open.get(m.xid);
    if (s && m.first) throw new StreamSpoolError(`first Stream Start of ${m.xid}, which is already open`);
    if (!s) {
      this.dir ??= makeSpoolDir(this.parent);
      const path = join(this.dir, `${m.xid}-${++this.serial}`);
      s = { xid: m.xid, path, fd: openSync(path, 'w+', 0o600), written: 0, buffered: 0, subxacts: [], relations: [], origin: false };
      this.open.set(m.xid, s);
    }
    this.current = s;
  }

  stop(): void {
    const s = this.block('Stream Stop');
    this.flush(s);
    this.current = null;
  }

  /** An Origin message inside the block. */
  origin(): void {
    this.block('Origin').origin = true;
  }

  add(m: StreamedMessage): void {
    const s = this.block('a streamed change');
    const offset = s.written + s.buffered;
    const length = 1 + m.body.length;
    if (m.messageTag === 0x52 /* 'R' */) {
      const payload = Buffer.allocUnsafe(length);
      payload[0] = m.messageTag;
      m.body.copy(payload, 1);
      s.relations.push({ offset, payload });
      return;
    }
    if (m.xid !== s.xid && s.subxacts.at(-1)?.xid !== m.xid && !s.subxacts.some((x) => x.xid === m.xid)) s.subxacts.push({ xid: m.xid, offset });
    if (s.buffered + 4 + length > WRITE_CHUNK) this.flush(s);
    if (4 + length > WRITE_CHUNK) {
      const frame = Buffer.allocUnsafe(5);
      frame.writeUInt32BE(length, 0);
      frame[4] = m.messageTag;
      this.write(s, frame);
      this.write(s, m.body);
      return;
    }
    const b = this.buffer;
    b.writeUInt32BE(length, s.buffered);
    b[s.buffered + 4] = m.messageTag;
    m.body.copy(b, s.buffered + 5);
    s.buffered += 4 + length;
  }

  /**
   * The whole transaction (subxid = xid) or one subtransaction aborted. A subtransaction's changes
   * and those of every subtransaction after it (nested in it: they end with it) are cut off.
   */
  abort(m: StreamAbortMessage): void {
    const s = this.open.get(m.xid);
    if (!s) return; // nothing of it was streamed to this connection
    if (m.subxid === m.xid) {
      this.drop(s);
      return;
    }
    const i = s.subxacts.findIndex((x) => x.xid === m.subxid);
    if (i < 0) return; // it changed nothing
    const offset = (s.subxacts[i] as { offset: number }).offset;
    this.flush(s);
    ftruncateSync(s.fd, offset);
    s.written = offset;
    s.subxacts.length = i;
    for (const r of s.relations) r.offset = Math.min(r.offset, offset);
  }

  /** Stream Commit: the transaction, to be read back once; null when nothing of it was streamed here. */
  commit(xid: number): SpooledTransaction | null {
    const s = this.open.get(xid);
    if (!s) return null;
    if (this.current === s) throw new StreamSpoolError(`Stream Commit of ${xid} inside its own block`);
    this.flush(s);
    this.open.delete(xid);
    closeSync(s.fd);
    return {
      xid,
      origin: s.origin,
      chunks: () => readBack(s),
      discard: () => rmSync(s.path, { force: true }),
    };
  }

  /** Drops everything (a new connection attempt streams every open transaction again from its start). */
  reset(): void {
    for (const s of this.open.values()) closeSync(s.fd);
    this.open.clear();
    this.current = null;
    if (this.dir) rmSync(this.dir, { recursive: true, force: true });
    this.dir = null;
  }

  private block(what: string): Spooled {
    if (!this.current) throw new StreamSpoolError(`${what} outside a Stream Start … Stop block`);
    return this.current;
  }

  private flush(s: Spooled): void {
    if (s.buffered === 0) return;
    const bytes = this.buffer.subarray(0, s.buffered);
    s.buffered = 0;
    this.write(s, bytes);
  }

  private write(s: Spooled, bytes: Buffer): void {
    let done = 0;
    while (done < bytes.length) done += writeSync(s.fd, bytes, done, bytes.length - done, s.written + done);
    s.written += bytes.length;
  }

  private drop(s: Spooled): void {
    this.open.delete(s.xid);
    if (this.current === s) this.current = null;
    closeSync(s.fd);
    rmSync(s.path, { force: true });
  }
}

/** The file's messages in order, each Relation message before the first change at or after its offset. */
async function* readBack(s: Spooled): AsyncGenerator<Iterable<PgoutputMessage>> {
  let nextRelation = 0;
  const file = await open(s.path, 'r');
  try {
    let carry: Buffer = Buffer.alloc(0);
    let offset = 0; // file offset of carry[0]
    for (;;) {
      const chunk = Buffer.allocUnsafe(Math.max(READ_CHUNK, carry.length * 2));
      carry.copy(chunk, 0);
      const { bytesRead } = await file.read(chunk, carry.length, chunk.length - carry.length, offset + carry.length);
      if (bytesRead === 0) break;
      const data = chunk.subarray(0, carry.length + bytesRead);
      // The complete messages of `data` end at `end`; the rest is carried into the next chunk.
      let end = 0;
      while (end + 4 <= data.length && end + 4 + data.readUInt32BE(end) <= data.length) end += 4 + data.readUInt32BE(end);
      const base = offset;
      const relations = s.relations;
      const first = nextRelation;
      let last = first;
      while (last < relations.length && (relations[last] as { offset: number }).offset < base + end) last++;
      nextRelation = last;
      yield (function* messages(): Generator<PgoutputMessage> {
        let r = first;
        for (let at = 0; at < end;) {
          for (; r < last && (relations[r] as { offset: number }).offset <= base + at; r++) yield decodePgoutput((relations[r] as { payload: Buffer }).payload);
          const length = data.readUInt32BE(at);
          yield decodePgoutput(data.subarray(at + 4, at + 4 + length));
          at += 4 + length;
        }
      })();
      carry = data.subarray(end);
      offset += end;
    }
    if (carry.length > 0) throw new StreamSpoolError(`spool file of transaction ${s.xid} ends inside a message`);
    if (nextRelation < s.relations.length) yield s.relations.slice(nextRelation).map((r) => decodePgoutput(r.payload));
  } finally {
    await file.close();
  }
}
