import { describe, expect, it } from 'vitest';
import { formatLsn, InvalidLsnError, maxLsn, parseLsn } from '../../src/protocol/lsn.js';
import { formatPgTimestamp, nowPgMicros, PG_EPOCH_UNIX_MS, pgMicrosToUnixMs, pgMicrosToUnixSeconds, unixMsToPgMicros } from '../../src/protocol/pg-time.js';

describe('parseLsn / formatLsn', () => {
  it.each([
    { text: '0/0', value: 0n },
    { text: '16/B374D848', value: 0x16_b374_d848n },
    { text: 'FFFFFFFF/FFFFFFFF', value: 18446744073709551615n },
    { text: '0/1', value: 1n },
    { text: '1/0', value: 4294967296n },
    { text: 'ABCDEF/12345678', value: 0xab_cdef_1234_5678n },
  ])('$text ⇄ $value', ({ text, value }) => {
    expect(parseLsn(text)).toBe(value);
    expect(formatLsn(value)).toBe(text);
    expect(formatLsn(parseLsn(text))).toBe(text);
  });

  it('parses lower-case and zero-padded halves and formats them canonically', () => {
    expect(parseLsn('16/b374d848')).toBe(0x16_b374_d848n);
    expect(parseLsn('00000016/0000D848')).toBe(0x16_0000_d848n);
    expect(formatLsn(parseLsn('00000016/0000d848'))).toBe('16/D848');
  });

  it('keeps values above 2^53 exact', () => {
    const lsn = parseLsn('200000/1');
    expect(lsn).toBe(2n ** 53n + 1n);
    expect(formatLsn(lsn)).toBe('200000/1');
  });

  const invalid = ['', '0', '/0', '0/', '/', '123456789/0', '0/123456789', 'G/0', '0/G', '0/0/0', '-1/0', '0x1/0'];
  it.each([...invalid, '1 /0', '1/ 0', '1.5/0', '٣/0'])('rejects %j with InvalidLsnError', (text) => {
    let caught: unknown;
    try {
      parseLsn(text);
    } catch (e) {
      caught = e;
    }
    expect(caught).toBeInstanceOf(InvalidLsnError);
    expect(caught).toMatchObject({
      code: 'PGBIDI_INVALID_LSN',
      name: 'InvalidLsnError',
      message: expect.stringContaining(JSON.stringify(text)) as unknown,
    });
  });

  it('maxLsn compares as unsigned 64-bit values', () => {
    expect(maxLsn(parseLsn('FFFFFFFF/0'), parseLsn('1/FFFFFFFF'))).toBe(0xffff_ffff_0000_0000n);
    expect(maxLsn(1n, 2n)).toBe(2n);
    expect(maxLsn(2n, 2n)).toBe(2n);
  });
});

describe('PostgreSQL-epoch timestamps', () => {
  it('the PostgreSQL epoch is 2000-01-01T00:00:00Z', () => {
    expect(PG_EPOCH_UNIX_MS).toBe(946684800000n);
    expect(new Date(Number(PG_EPOCH_UNIX_MS)).toISOString()).toBe('2000-01-01T00:00:00.000Z');
  });

  it.each([
    { micros: 0n, text: '2000-01-01 00:00:00.000000+00' },
    { micros: 757479845123456n, text: '2024-01-02 03:04:05.123456+00' },
    { micros: 5140800000001n, text: '2000-02-29 12:00:00.000001+00' },
    { micros: -1n, text: '1999-12-31 23:59:59.999999+00' },
    { micros: -123456789012n, text: '1999-12-30 13:42:23.210988+00' },
    { micros: -1000000n, text: '1999-12-31 23:59:59.000000+00' },
    { micros: -946684800500000n, text: '1969-12-31 23:59:59.500000+00' },
  ])('formatPgTimestamp($micros) = $text', ({ micros, text }) => {
    expect(formatPgTimestamp(micros)).toBe(text);
  });

  it('unixMsToPgMicros', () => {
    expect(unixMsToPgMicros(946684800000)).toBe(0n);
    expect(unixMsToPgMicros(1704164645123)).toBe(757479845123000n);
    expect(unixMsToPgMicros(0)).toBe(-946684800000000n);
    expect(unixMsToPgMicros(946684800001.9)).toBe(1000n);
  });

  it('pgMicrosToUnixSeconds', () => {
    expect(pgMicrosToUnixSeconds(0n)).toBe(946684800);
    expect(pgMicrosToUnixSeconds(757479845123456n)).toBe(1704164645.123456);
    expect(pgMicrosToUnixSeconds(-946684800500000n)).toBe(-0.5);
  });

  it('pgMicrosToUnixMs', () => {
    expect(pgMicrosToUnixMs(0n)).toBe(946684800000);
    expect(pgMicrosToUnixMs(757479845123456n)).toBe(1704164645123);
  });

  it('unixMs → PG micros → unix seconds round trip', () => {
    expect(pgMicrosToUnixSeconds(unixMsToPgMicros(1704164645123))).toBe(1704164645.123);
  });

  it('nowPgMicros reads the injected clock', () => {
    expect(nowPgMicros(() => 1704164645123)).toBe(757479845123000n);
  });
});
