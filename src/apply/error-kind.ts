import type { ApplyErrorKind } from '../observability/metrics.js';

/** SQLSTATE query_canceled: pg_cancel_backend or statement_timeout. */
export const QUERY_CANCELED = '57014';

/**
 * Classifies a failure by SQLSTATE (errcodes.txt), never by message text. Connection-level errors
 * from the driver carry a Node errno code instead.
 */
export function errorKind(err: unknown): ApplyErrorKind {
  const code = sqlState(err);
  if (code === undefined) {
    const errno = (err as { code?: unknown } | null)?.code;
    if (typeof errno === 'string' && /^E[A-Z]+$/.test(errno)) return 'connection';
    if (errno === 'PGBIDI_SCHEMA_MISMATCH' || errno === 'PGBIDI_ROW_REJECTED') return 'schema';
    return 'other';
  }
  if (code === '23505') return 'unique_violation';
  if (code.startsWith('08') || code === '57P01' || code === '57P02' || code === '57P03') return 'connection';
  if (code === QUERY_CANCELED || code === '55P03') return 'timeout';
  if (code === '40001' || code === '40P01') return 'serialization';
  if (code.startsWith('42')) return 'schema';
  // Class 53, insufficient resources: disk full (53100), out of memory, too many connections. The
  // node must get room before apply can go on; the link retries with backoff meanwhile.
  if (code.startsWith('53')) return 'resources';
  return 'other';
}

export function sqlState(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
}
