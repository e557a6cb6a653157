import type pg from 'pg';
import { errorMessage } from '../util/error-message.js';

/**
 * COPY … TO STDOUT on one connection piped into COPY … FROM STDIN on another, without parsing the
 * rows: the server sends one CopyData message per row (protocol-flow.html "COPY Operations"), so the
 * rows are counted as they pass. node-postgres has no COPY API of its own; both ends are Submittables
 * (the interface pg's Client calls for every message of the active query), as the replication
 * connection uses the CopyBoth messages.
 */

interface PgConnection {
  query(text: string): void;
  sendCopyFromChunk(chunk: Buffer): void;
  endCopyFrom(): void;
  sendCopyFail(message: string): void;
  stream: { pause(): void; resume(): void; writableNeedDrain?: boolean; once(event: 'drain', fn: () => void): void };
}

export class CopyPipeError extends Error {
  readonly code = 'PGBIDI_COPY_FAILED';
  constructor(
    message: string,
    override readonly cause: unknown,
  ) {
    super(message);
    this.name = 'CopyPipeError';
  }
}

/** Fires the handlers pg's Client expects of a submittable query; settles once ReadyForQuery arrives. */
abstract class CopyQuery {
  protected connection: PgConnection | null = null;
  private error: unknown = null;
  readonly done: Promise<void>;
  private settle!: (err: unknown) => void;

  constructor(readonly text: string) {
    this.done = new Promise<void>((resolve, reject) => {
      this.settle = (err) => (err === null ? resolve() : reject(err instanceof Error ? err : new Error(JSON.stringify(err))));
    });
    this.done.catch(() => undefined);
  }

  submit(connection: PgConnection): void {
    this.connection = connection;
    connection.query(this.text);
  }

  /** A server error (ReadyForQuery follows) or a lost connection (nothing follows): settle now. */
  handleError(err: unknown): void {
    this.error = err;
    this.settle(err);
  }

  handleCommandComplete(): void {}
  handleRowDescription(): void {}
  handleDataRow(): void {}
  handleEmptyQuery(): void {}
  handlePortalSuspended(): void {}
  handleCopyInResponse(connection: PgConnection): void {
    void connection;
  }
  handleCopyData(msg: { chunk: Buffer }, connection: PgConnection): void {
    void msg;
    void connection;
  }

  handleReadyForQuery(): void {
    this.settle(this.error);
  }
}

class CopyIn extends CopyQuery {
  readonly ready: Promise<PgConnection>;
  private onReady!: (c: PgConnection) => void;

  constructor(text: string) {
    super(text);
    this.ready = new Promise<PgConnection>((resolve) => {
      this.onReady = resolve;
    });
  }

  override handleCopyInResponse(connection: PgConnection): void {
    this.onReady(connection);
  }
}

class CopyOut extends CopyQuery {
  constructor(
    text: string,
    private readonly onRow: (chunk: Buffer, source: PgConnection) => void,
  ) {
    super(text);
  }

  override handleCopyData(msg: { chunk: Buffer }, connection: PgConnection): void {
    this.onRow(msg.chunk, connection);
  }
}

/**
 * Runs `copyOut` (a COPY … TO STDOUT) on `source` and streams every row into `copyIn` (a COPY … FROM
 * STDIN) on `target`, pausing the source while the target's socket has a full buffer. `onRows` is
 * called with the number of rows passed since the last call. Resolves with the row count.
 */
export async function pipeCopy(
  source: pg.ClientBase,
  copyOut: string,
  target: pg.ClientBase,
  copyIn: string,
  onRows: (n: number) => void = () => undefined,
): Promise<number> {
  const inbound = new CopyIn(copyIn);
  // A submittable is returned as is by Client.query, not as a promise.
  submit(target, inbound);
  const sink = await Promise.race([inbound.ready, inbound.done.then(() => null)]);
  if (sink === null) throw new CopyPipeError(`target did not accept ${copyIn}`, null);

  let rows = 0;
  let pending = 0;
  const outbound = new CopyOut(copyOut, (chunk, from) => {
    sink.sendCopyFromChunk(chunk);
    rows++;
    if (++pending >= 1000) {
      onRows(pending);
      pending = 0;
    }
    if (sink.stream.writableNeedDrain) {
      from.stream.pause();
      sink.stream.once('drain', () => from.stream.resume());
    }
  });
  submit(source, outbound);
  try {
    await outbound.done;
  } catch (err) {
    sink.sendCopyFail('pgbidi: the source of the copy failed');
    await inbound.done.catch(() => undefined);
    throw new CopyPipeError(`${copyOut} failed: ${errorMessage(err)}`, err);
  }
  sink.endCopyFrom();
  try {
    await inbound.done;
  } catch (err) {
    throw new CopyPipeError(`${copyIn} failed: ${errorMessage(err)}`, err);
  }
  onRows(pending);
  return rows;
}

/** Client.query with a submittable returns the submittable itself, not a promise (pg's client.js). */
function submit(client: pg.ClientBase, query: CopyQuery): void {
  (client as unknown as { query(q: CopyQuery): unknown }).query(query);
}
