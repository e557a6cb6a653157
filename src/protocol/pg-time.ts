/**
 * PostgreSQL timestamps on the replication wire are microseconds since 2000-01-01 00:00:00 UTC
 * (protocol-replication.html, "Standby status update" and pgoutput Begin/Commit). This is the one
 * place that converts them.
 */
export type PgMicros = bigint;

/** 2000-01-01T00:00:00Z in Unix milliseconds. */
export const PG_EPOCH_UNIX_MS = 946_684_800_000n;

export function unixMsToPgMicros(unixMs: number): PgMicros {
  return (BigInt(Math.trunc(unixMs)) - PG_EPOCH_UNIX_MS) * 1000n;
}

export function pgMicrosToUnixSeconds(ts: PgMicros): number {
  return Number(ts + PG_EPOCH_UNIX_MS * 1000n) / 1e6;
}

export function pgMicrosToUnixMs(ts: PgMicros): number {
  return Number(ts / 1000n + PG_EPOCH_UNIX_MS);
}

export function nowPgMicros(clock: () => number = Date.now): PgMicros {
  return unixMsToPgMicros(clock());
}

/**
 * Exact text for a timestamptz literal, microseconds included ("2024-01-02 03:04:05.123456+00").
 * JavaScript Dates stop at milliseconds, so the fraction is formatted from the bigint directly.
 */
export function formatPgTimestamp(ts: PgMicros): string {
  const unixMicros = ts + PG_EPOCH_UNIX_MS * 1000n;
  let seconds = unixMicros / 1_000_000n;
  let micros = unixMicros % 1_000_000n;
  if (micros < 0n) {
    micros += 1_000_000n;
    seconds -= 1n;
  }
  // Consecutive transactions mostly commit within the same second: its text is made once.
  if (seconds !== lastSecond) {
    const iso = new Date(Number(seconds) * 1000).toISOString(); // YYYY-MM-DDTHH:MM:SS.000Z
    lastSecond = seconds;
    lastSecondText = `${iso.slice(0, 10)} ${iso.slice(11, 19)}.`;
  }
  return `${lastSecondText}${micros.toString().padStart(6, '0')}+00`;
}

let lastSecond = -1n;
let lastSecondText = '';
