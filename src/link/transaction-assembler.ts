import { HEARTBEAT_PREFIX, TRACEPARENT_PREFIX } from '../node/names.js';
import type { ChangeOp } from '../observability/metrics.js';
import type { Lsn } from '../protocol/lsn.js';
import type { BeginMessage, ChangeMessage, CommitMessage, LogicalDecodingMessage, PgoutputMessage, RelationMessage } from '../protocol/pgoutput-messages.js';
import type { RemoteTransaction } from '../protocol/remote-transaction.js';
import { TransactionSequencer } from '../protocol/transaction-sequencer.js';

/**
 * The receive stage: pgoutput messages in stream order → transactions for the applier. Pure and
 * synchronous (it runs inside the driver's copyData callback).
 *
 * A transaction is held until its Commit and handed over whole while it stays small; one that grows
 * beyond `smallTransactionChanges` is streamed instead (begin, batches of `batchSize` changes,
 * messages, commit), so memory stays bounded by the batch size whatever the transaction's size.
 * Transactions that carry an Origin message are dropped (PostgreSQL 15 has no origin filter:
 * pgoutput_send_begin → send_repl_origin; full mesh, so nothing replicated is forwarded); a
 * transaction with nothing in it is reported as processed.
 */
export interface AssemblerSink {
  relation(r: RelationMessage): void;
  /** A small transaction, complete. */
  transaction(t: RemoteTransaction): void;
  /** A large transaction, streamed: begin, then changes and messages, then commit. */
  begin(b: BeginMessage): void;
  changes(batch: ChangeMessage[]): void;
  message(m: LogicalDecodingMessage): void;
  commit(c: CommitMessage): void;
  /** A transaction that needs no apply: filtered by origin, or empty. */
  skipped(t: { readonly endLsn: Lsn; readonly reason: 'origin' | 'empty' }): void;
}

export interface AssemblerCounters {
  received(op: ChangeOp, count?: number): void;
  filtered(op: ChangeOp, reason: 'origin'): void;
  transactionFiltered(reason: 'origin'): void;
}

export interface AssemblerOptions {
  readonly batchSize: number;
  readonly smallTransactionChanges: number;
}

const OP_OF: Record<ChangeMessage['tag'], ChangeOp> = { insert: 'insert', update: 'update', delete: 'delete', truncate: 'truncate' };

interface Open {
  readonly begin: BeginMessage;
  changes: ChangeMessage[];
  messages: LogicalDecodingMessage[];
  heartbeat: bigint | null;
  traceparent: string | null;
  /** Origin message seen: dropped. */
  filtered: boolean;
  /** Grown beyond a small transaction: handed over in batches. */
  streaming: boolean;
}

export class TransactionAssembler {
  private sequencer = new TransactionSequencer();
  private open: Open | null = null;

  constructor(
    private readonly sink: AssemblerSink,
    private readonly counters: AssemblerCounters,
    private readonly options: AssemblerOptions,
  ) {}

  /** Inside a transaction (Begin seen, Commit not yet). */
  get receiving(): boolean {
    return this.open !== null;
  }

  /** Changes held back for the open transaction (queue accounting). */
  get held(): number {
    return this.open?.changes.length ?? 0;
  }

  reset(): void {
    this.sequencer = new TransactionSequencer();
    this.open = null;
  }

  accept(msg: PgoutputMessage): void {
    this.sequencer.accept(msg);
    switch (msg.tag) {
      case 'begin':
        this.open = { begin: msg, changes: [], messages: [], heartbeat: null, traceparent: null, filtered: false, streaming: false };
        return;
      case 'origin':
        (this.open as Open).filtered = true;
        return;
      case 'relation': {
        const open = this.open;
        // Changes before it were decoded with the relation's previous definition: they go first.
        if (open && !open.filtered && open.changes.length > 0) this.stream(open);
        if (open?.streaming) this.flush(open);
        this.sink.relation(msg);
        return;
      }
      case 'type':
        return; // values are text and cast by local type names; nothing to map
      case 'insert':
      case 'update':
      case 'delete':
      case 'truncate': {
        const open = this.open as Open;
        const op = OP_OF[msg.tag];
        this.counters.received(op);
        if (open.filtered) {
          this.counters.filtered(op, 'origin');
          return;
        }
        open.changes.push(msg);
        if (open.streaming) {
          if (open.changes.length >= this.options.batchSize) this.flush(open);
        } else if (open.changes.length > this.options.smallTransactionChanges || open.changes.length > this.options.batchSize) {
          this.stream(open);
        }
        return;
      }
      case 'message': {
        const open = this.open;
        if (!msg.transactional || !open || open.filtered) return;
        if (msg.prefix === HEARTBEAT_PREFIX) open.heartbeat = parseHeartbeat(msg);
        else if (msg.prefix === TRACEPARENT_PREFIX) open.traceparent = msg.content.toString('utf8');
        if (open.streaming) this.sink.message(msg);
        else open.messages.push(msg);
        return;
      }
      case 'commit': {
        const open = this.open as Open;
        this.open = null;
        if (open.filtered) {
          this.counters.transactionFiltered('origin');
          this.sink.skipped({ endLsn: msg.endLsn, reason: 'origin' });
        } else if (open.streaming) {
          this.flush(open);
          this.sink.commit(msg);
        } else if (open.changes.length === 0 && open.messages.length === 0) {
          this.sink.skipped({ endLsn: msg.endLsn, reason: 'empty' });
        } else {
          this.sink.transaction({ begin: open.begin, commit: msg, changes: open.changes, heartbeat: open.heartbeat, traceparent: open.traceparent });
        }
        return;
      }
    }
  }

  /** Switches the open transaction to streaming: what it holds goes out now, the rest as it comes. */
  private stream(open: Open): void {
    if (open.streaming) return;
    open.streaming = true;
    this.sink.begin(open.begin);
    for (const m of open.messages) this.sink.message(m);
    open.messages = [];
    // Full batches now; the rest stays held and fills up with what comes next.
    const size = this.options.batchSize;
    const held = open.changes;
    const full = held.length - (held.length % size);
    for (let i = 0; i < full; i += size) this.sink.changes(held.slice(i, i + size));
    open.changes = held.slice(full);
  }

  private flush(open: Open): void {
    if (open.changes.length === 0) return;
    const batch = open.changes;
    open.changes = [];
    this.sink.changes(batch);
  }
}

/** The peer clock time (µs since 2000) a pgbidi heartbeat message carries; null when malformed. */
export function parseHeartbeat(m: LogicalDecodingMessage): bigint | null {
  try {
    const v = JSON.parse(m.content.toString('utf8')) as { ts?: unknown };
    return typeof v.ts === 'string' && /^-?\d+$/.test(v.ts) ? BigInt(v.ts) : null;
  } catch {
    return null;
  }
}
