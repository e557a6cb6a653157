import { Socket } from 'node:net';
import type { SocketConstructorOpts } from 'node:net';
import type { Duplex, DuplexOptions } from 'node:stream';
import type pg from 'pg';
import { formatLsn } from '../protocol/lsn.js';
import type { Lsn } from '../protocol/lsn.js';
import { decodeReplicationMessage } from '../protocol/replication-messages.js';
import type { ReplicationMessage, StandbyStatus } from '../protocol/replication-messages.js';
import { encodeStandbyStatus } from '../protocol/replication-messages.js';
import { agentClient } from '../util/agent-client.js';
import { quoteIdent, quoteLiteral } from '../util/sql.js';
import { ReadGate } from './read-gate.js';

/**
 * One walsender connection to a peer (replication=database), streaming pgoutput from a durable slot.
 * node-postgres only exposes CopyBoth through its Connection object: 'copyData' events in, CopyData
 * frames out (sendCopyFromChunk), CopyDone (endCopyFrom) to stop (technical research §1).
 */

interface CopyBothConnection {
  on(event: 'copyData', listener: (msg: { chunk: Buffer }) => void): void;
  removeAllListeners(event: 'copyData'): void;
  sendCopyFromChunk(chunk: Buffer): void;
  endCopyFrom(): void;
  stream: { pause(): void; resume(): void; destroy(): void };
}

export interface ReplicationConnectionOptions {
  readonly dsn: string;
  readonly applicationName: string;
  readonly slot: string;
  readonly publication: string;
  /** The peer's node name, for messages. */
  readonly peer?: string;
  /** The walsender sends keepalives at half of wal_sender_timeout; this bounds connect time. */
  readonly connectTimeoutMs?: number;
}

export interface StartOptions {
  readonly startLsn: Lsn;
  /** Called synchronously for every message, already decoded into owned values. */
  readonly onMessage: (m: ReplicationMessage) => void;
  /** A decoding error in the handler: the stream cannot continue. */
  readonly onError: (err: unknown) => void;
}

/**
 * The slot this link reads on the peer has been invalidated: the peer removed WAL the slot still
 * needed. Changes of the peer are missing here for good; only re-synchronizing this node helps.
 */
export class SlotLostError extends Error {
  readonly code = 'PGBIDI_SLOT_LOST';
  override readonly name = 'SlotLostError';
  constructor(
    readonly slot: string,
    peer = 'the peer',
  ) {
    super(
      `replication slot ${slot} on ${peer} is lost (pg_replication_slots.wal_status = 'lost'): ${peer} removed WAL it still needed ` +
        `(max_slot_wal_keep_size or idle_replication_slot_timeout), and changes made on ${peer} since are missing on this node. ` +
        `The link cannot resume: re-synchronize this node (empty its replicated tables under a replication origin, then \`pgbidi join --config <this node's config> --from ${peer}\`; README "A lost slot")`,
    );
  }
}

/**
 * The walsender connection's socket (node-postgres' `stream` option): a plain TCP or Unix socket, as
 * node-postgres makes, whose readable buffer is one byte. A paused Readable goes on reading from the
 * kernel until its buffer reaches that mark (16 KiB by default), so with the default a link that
 * paused still woke for every segment the walsender sent; with this one it stops reading after the
 * first (stream_base_commons.js: onStreamRead stops the handle when push() returns false). Data flows
 * as before while the stream is not paused: a chunk goes to the 'data' listener without entering the
 * buffer. Over TLS node-postgres wraps this socket, and the TLS socket's own buffer sets the mark.
 */
export function replicationSocket(): Duplex {
  // net.Socket hands its options on to stream.Duplex (net.js); @types/node's SocketConstructorOpts
  // does not list the Duplex ones.
  const options: SocketConstructorOpts & DuplexOptions = { readableHighWaterMark: 1 };
  return new Socket(options);
}

export class ReplicationConnection {
  private client: pg.Client | null = null;
  private gate: ReadGate | null = null;
  private streaming: Promise<unknown> | null = null;
  serverVersionNum = 0;
  /** The peer's wal_level, read at connect: logical decoding needs 'logical'. */
  walLevel = '';

  constructor(private readonly options: ReplicationConnectionOptions) {}

  async connect(onConnectionError: (err: Error) => void): Promise<void> {
    const client = agentClient({
      connectionString: this.options.dsn,
      replication: 'database',
      application_name: this.options.applicationName,
      keepAlive: true,
      connectionTimeoutMillis: this.options.connectTimeoutMs ?? 10_000,
      stream: replicationSocket,
    });
    client.on('error', onConnectionError);
    await client.connect();
    this.client = client;
    this.gate = new ReadGate(this.connection.stream);
    // The simple query protocol is the only one a walsender accepts; no parameters here.
    const v = await client.query<{ v: string; w: string }>(`SELECT current_setting('server_version_num') AS v, current_setting('wal_level') AS w`);
    this.serverVersionNum = Number(v.rows[0]?.v ?? 0);
    this.walLevel = v.rows[0]?.w ?? '';
  }

  private get connection(): CopyBothConnection {
    if (!this.client) throw new Error('replication connection is not open');
    return (this.client as unknown as { connection: CopyBothConnection }).connection;
  }

  /**
   * Creates the slot if it is missing (CREATE_REPLICATION_SLOT … LOGICAL pgoutput, durable).
   * `beforeCreate` may veto the creation by throwing (a link whose node parted: link/link.ts). A slot
   * whose WAL is gone (wal_status 'lost', PG 13+: invalidated by max_slot_wal_keep_size, or on 18 by
   * idle_replication_slot_timeout) can never stream again: SlotLostError, instead of the walsender's
   * ERROR on START_REPLICATION, whose SQLSTATE (55000) says no more than "not in the right state".
   */
  async ensureSlot(beforeCreate?: () => Promise<void>): Promise<'created' | 'exists'> {
    const client = this.requireClient();
    const found = await client.query<{ wal_status: string | null }>(
      `SELECT wal_status FROM pg_replication_slots WHERE slot_name = ${quoteLiteral(this.options.slot)}`,
    );
    if (found.rows[0]?.wal_status === 'lost') throw new SlotLostError(this.options.slot, this.options.peer);
    if (found.rowCount) return 'exists';
    await beforeCreate?.();
    await client.query(`CREATE_REPLICATION_SLOT ${quoteIdent(this.options.slot)} LOGICAL pgoutput NOEXPORT_SNAPSHOT`);
    return 'created';
  }

  /**
   * START_REPLICATION. Loop prevention: PostgreSQL 16+ filters every change that has a replication
   * origin (origin 'none'); 15 does not know the option, and the link skips transactions that carry an
   * Origin message instead. messages 'true' brings heartbeats and traceparent messages.
   */
  start(opts: StartOptions): Promise<unknown> {
    const client = this.requireClient();
    // Protocol 2 with streaming: a transaction that outgrows logical_decoding_work_mem is sent while
    // it is decoded (Stream Start … Stop blocks, then Stream Commit or Abort) instead of being spilled
    // to disk by the walsender and read back at its commit, which cost the walsender about as much as
    // decoding it (a committed 1,000,000-row transaction: 15.6 s with protocol 1, 10.0 s streamed, to
    // pg_recvlogical on PostgreSQL 18). The link keeps such a transaction until it commits.
    const options = [`proto_version '2'`, `streaming 'true'`, `publication_names ${quoteLiteral(quoteIdent(this.options.publication))}`, `messages 'true'`];
    if (this.serverVersionNum >= 160000) options.push(`origin 'none'`);
    const conn = this.connection;
    let inStream = false;
    conn.on('copyData', ({ chunk }) => {
      let message: ReplicationMessage;
      try {
        message = decodeReplicationMessage(chunk, inStream);
      } catch (err) {
        opts.onError(err);
        return;
      }
      if (message.kind === 'xlogdata') {
        if (message.message.tag === 'stream-start') inStream = true;
        else if (message.message.tag === 'stream-stop') inStream = false;
      }
      opts.onMessage(message);
    });
    this.streaming = client.query(`START_REPLICATION SLOT ${quoteIdent(this.options.slot)} LOGICAL ${formatLsn(opts.startLsn)} (${options.join(', ')})`);
    return this.streaming;
  }

  sendStatus(status: StandbyStatus): void {
    this.connection.sendCopyFromChunk(encodeStandbyStatus(status));
  }

  /** Backpressure: the receive stage's queue is full (link/receiver.ts). */
  pause(): void {
    this.requireGate().hold('backpressure');
  }

  resume(): void {
    this.requireGate().release('backpressure');
  }

  /**
   * The apply loop lets small transactions gather for a moment (link/apply-loop.ts): what the
   * walsender sends meanwhile waits in the kernel and is read at once afterwards, instead of waking
   * the agent for every transaction. A no-op once the connection is closed.
   */
  hold(): void {
    if (this.client) this.gate?.hold('gathering');
  }

  release(): void {
    if (this.client) this.gate?.release('gathering');
  }

  /** CopyDone, wait for the server to end the stream, then close. */
  async stop(timeoutMs = 5000): Promise<void> {
    const client = this.client;
    if (!client) return;
    this.client = null;
    try {
      if (this.streaming) {
        const conn = (client as unknown as { connection: CopyBothConnection }).connection;
        conn.stream.resume();
        conn.endCopyFrom();
        await Promise.race([this.streaming.catch(() => undefined), delay(timeoutMs)]);
      }
      await Promise.race([client.end(), delay(timeoutMs)]);
    } catch {
      // The connection may already be gone; nothing else to release.
    } finally {
      (client as unknown as { connection: CopyBothConnection }).connection.stream.destroy();
    }
  }

  /** Drop the socket without the CopyDone handshake (the peer went away). */
  destroy(): void {
    const client = this.client;
    this.client = null;
    if (client) (client as unknown as { connection: CopyBothConnection }).connection.stream.destroy();
  }

  private requireGate(): ReadGate {
    if (!this.client || !this.gate) throw new Error('replication connection is not open');
    return this.gate;
  }

  private requireClient(): pg.Client {
    if (!this.client) throw new Error('replication connection is not open');
    return this.client;
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}
