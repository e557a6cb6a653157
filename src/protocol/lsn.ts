/**
 * Log sequence numbers are 64-bit WAL positions, written by PostgreSQL as two hex halves
 * ("16/B374D848", see pg_lsn's output function). We keep them as bigint everywhere.
 */
export type Lsn = bigint;

export const ZERO_LSN: Lsn = 0n;

export class InvalidLsnError extends Error {
  readonly code = 'PGBIDI_INVALID_LSN';
  constructor(text: string) {
    super(`not a valid LSN: ${JSON.stringify(text)}`);
    this.name = 'InvalidLsnError';
  }
}

const LSN_PATTERN = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/;

export function parseLsn(text: string): Lsn {
  const m = LSN_PATTERN.exec(text.trim());
  if (!m || m[1] === undefined || m[2] === undefined) throw new InvalidLsnError(text);
  return (BigInt(`0x${m[1]}`) << 32n) | BigInt(`0x${m[2]}`);
}

export function formatLsn(lsn: Lsn): string {
  const hi = (lsn >> 32n) & 0xffffffffn;
  const lo = lsn & 0xffffffffn;
  return `${hi.toString(16).toUpperCase()}/${lo.toString(16).toUpperCase()}`;
}

export function maxLsn(a: Lsn, b: Lsn): Lsn {
  return a > b ? a : b;
}
