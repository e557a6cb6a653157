/**
 * The settings that decide how a key's values print as jsonb (to_jsonb, jsonb_build_array), and so
 * how pgbidi.tombstones and pgbidi.row_versions spell a key: a timestamptz is written in the session's
 * TimeZone ("2024-01-02T06:34:05+05:30" in Asia/Kolkata, "…T01:04:05+00:00" in UTC), an interval in
 * its IntervalStyle, a bytea in its bytea_output, a float8 with fewer digits at extra_float_digits
 * <= 0. jsonb compares those strings, not the values. pgbidi's sessions pin these values
 * (PINNED_GUCS); the trigger that writes a local delete's tombstone runs in the application's
 * session and sets them for its own call (a function's SET clause, restored when it returns), so
 * that both spell a key the same way.
 */
export const KEY_FORMAT_SETTINGS: readonly (readonly [name: string, value: string])[] = [
  ['timezone', 'UTC'],
  ['intervalstyle', 'postgres'],
  ['extra_float_digits', '3'],
  ['bytea_output', 'hex'],
];
