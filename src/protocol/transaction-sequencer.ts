import { assertNever } from '../util/assert-never.js';
import type { BeginMessage, PgoutputMessage, OriginMessage } from './pgoutput-messages.js';

/**
 * Checks the order of pgoutput messages the way PostgreSQL's apply worker does (worker.c rejects
 * e.g. "ORIGIN message sent out of order"): changes only inside Begin…Commit, Origin only right after
 * Begin, no nested Begin. Pure: it only tracks where in a transaction the stream is.
 */
export class OutOfOrderMessageError extends Error {
  readonly code = 'PGBIDI_OUT_OF_ORDER_MESSAGE';
  constructor(
    readonly messageTag: string,
    detail: string,
  ) {
    super(`${messageTag} message out of order: ${detail}`);
    this.name = 'OutOfOrderMessageError';
  }
}

type Position = 'idle' | 'after-begin' | 'in-transaction';

export class TransactionSequencer {
  private position: Position = 'idle';
  private begin: BeginMessage | null = null;
  private origin: OriginMessage | null = null;

  /** The open transaction's Begin, or null between transactions. */
  get currentBegin(): BeginMessage | null {
    return this.begin;
  }

  get currentOrigin(): OriginMessage | null {
    return this.origin;
  }

  accept(m: PgoutputMessage): void {
    switch (m.tag) {
      case 'begin':
        if (this.position !== 'idle') throw new OutOfOrderMessageError('BEGIN', 'previous transaction not committed');
        this.position = 'after-begin';
        this.begin = m;
        this.origin = null;
        return;
      case 'origin':
        if (this.position !== 'after-begin') throw new OutOfOrderMessageError('ORIGIN', 'not directly after BEGIN');
        this.origin = m;
        this.position = 'in-transaction';
        return;
      case 'commit':
        if (this.position === 'idle') throw new OutOfOrderMessageError('COMMIT', 'no transaction open');
        if (this.begin !== null && this.begin.finalLsn !== m.commitLsn) {
          throw new OutOfOrderMessageError('COMMIT', 'commit LSN does not match BEGIN final LSN');
        }
        this.position = 'idle';
        this.begin = null;
        this.origin = null;
        return;
      case 'insert':
      case 'update':
      case 'delete':
      case 'truncate':
        if (this.position === 'idle') throw new OutOfOrderMessageError(m.tag.toUpperCase(), 'outside a transaction');
        this.position = 'in-transaction';
        return;
      case 'relation':
      case 'type':
        // Schema messages may come between transactions or inside one (maybe_send_schema).
        if (this.position === 'after-begin') this.position = 'in-transaction';
        return;
      case 'message':
        if (m.transactional && this.position === 'idle') {
          throw new OutOfOrderMessageError('MESSAGE', 'transactional message outside a transaction');
        }
        if (this.position === 'after-begin') this.position = 'in-transaction';
        return;
      default:
        assertNever(m);
    }
  }
}
