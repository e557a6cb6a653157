/**
 * Lifts the lock, idle and transaction time limits a server, database or role may set for
 * application sessions, for one of pgbidi's own long-running sessions (pg_dump does the same for
 * its own). Such a session waits inside a transaction by design (an apply transaction for the peer's
 * next changes, a join's snapshot while the other tables are copied), and ended by a limit it would
 * be started again and meet the same limit at the same place, every time. transaction_timeout exists
 * from PostgreSQL 17 on (SQLSTATE 25P04): set only where the server knows it, so that the same
 * statements serve 15 and 16.
 */
export const SESSION_LIMITS_OFF: readonly string[] = [
  // Waiting for a row a local transaction holds is part of applying (the session's own
  // statement_timeout, when set, still bounds it); ended, a large transaction starts over.
  'SET lock_timeout = 0',
  'SET idle_in_transaction_session_timeout = 0',
  'SET idle_session_timeout = 0',
  `SELECT pg_catalog.set_config('transaction_timeout', '0', false) FROM (SELECT pg_catalog.current_setting('transaction_timeout', true) AS t) s WHERE t IS NOT NULL`,
];

/**
 * Row-level security policies filter the rows a role without BYPASSRLS sees: an apply statement
 * would miss a row a policy hides (an update logged as update_missing while the row stays stale),
 * a join's COPY would copy only the visible rows. Off, such a statement fails instead (42501, "query
 * would be affected by row-level security policy"), as pg_dump makes its COPY fail: the role needs
 * BYPASSRLS, and nothing is missed in silence. A role that bypasses row security is not affected.
 */
export const ROW_SECURITY_OFF = 'SET row_security = off';

/**
 * A session of a bulk copy (`pgbidi join`, donor and target side): a table's COPY or load may outlast
 * any statement limit too, and it must see every row.
 */
export const COPY_SESSION_SQL: readonly string[] = ['SET statement_timeout = 0', ...SESSION_LIMITS_OFF, ROW_SECURITY_OFF];
