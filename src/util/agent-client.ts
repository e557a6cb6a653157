import pg from 'pg';
import { parseIntoClientConfig } from 'pg-connection-string';
import { KEY_FORMAT_SETTINGS } from './key-format-settings.js';

/**
 * Settings pinned at connection start (they win over the server's, the database's and the role's) for
 * every session pgbidi opens for its own statements: the walsender, apply, the link's control
 * connection, setup, join, the janitor, the schema watch, the metrics reads and the CLI's. Values are
 * produced the same way on every peer (§1.1) and read back as they were meant. array_nulls and
 * xmloption govern input: with array_nulls = off on a database, an unquoted NULL in an array literal
 * is the string "NULL" (apply's columns are arrays: a null text arrived as 'NULL', a null integer was
 * refused); with xmloption = document, an XML fragment (content) a peer holds is refused.
 * search_path: the names pgbidi's statements use unqualified (unnest, coalesce, casts,
 * pg_replication_origin_progress) are pg_catalog's, whatever schema a database puts first, so that a
 * function of the same name and signature that a database user created there is never run with the
 * agent's rights (CVE-2018-1058's pattern); PostgreSQL's own apply worker and pg_dump run with an
 * empty search_path for the same reason. `pgbidi ddl` is the one exception: it runs the operator's
 * statement, whose names mean what the operator's own session would make of them. exit_on_error: on,
 * every error ends the session, also those apply expects (a row set aside in its savepoint, the
 * insert fast path stopped by a tombstone), and the link started over at the same transaction every
 * time. default_transaction_read_only: a DBA who sets it on for a node's database (to keep applications
 * from writing there) does not stop replication into it with PostgreSQL's own apply worker, which
 * kept applying in the same setup; pgbidi's apply stopped at its first write (SQLSTATE 25006) and
 * retried the same transaction for ever.
 */
export const PINNED_GUCS = [
  'client_encoding=UTF8',
  'datestyle=ISO,MDY',
  ...KEY_FORMAT_SETTINGS.map(([name, value]) => `${name}=${value}`),
  'array_nulls=on',
  'xmloption=content',
  'search_path=pg_catalog',
  'exit_on_error=off',
  'default_transaction_read_only=off',
]
  .map((setting) => `-c ${setting}`)
  .join(' ');

/**
 * The connection settings of a session pgbidi opens for its own statements: PINNED_GUCS after any
 * options the DSN carries, and the caller's application_name. node-postgres lets a connection
 * string's parameters win over the fields given beside it (connection-parameters.js merges the
 * parsed string last), so a peer DSN with `?options=-c search_path=public` replaced every pinned
 * setting, and one with `?application_name=…` renamed the walsender that a synchronous link's
 * synchronous_standby_names waits for. The DSN is parsed here with node-postgres' own parser, its
 * options kept (a proxy may route by them) and followed by ours: of two -c for one setting, the
 * server keeps the last.
 */
/**
 * What a caller gives: node-postgres' settings but the options (always PINNED_GUCS), and
 * `replication: 'database'` for a walsender, which node-postgres sends in the startup message but
 * its ClientConfig type does not name.
 */
export type AgentClientConfig = Omit<pg.ClientConfig, 'options'> & { readonly replication?: 'database' };

export function agentConfig(config: AgentClientConfig): pg.ClientConfig {
  const { connectionString, ...given } = config;
  const fromDsn = connectionString === undefined ? {} : parseIntoClientConfig(connectionString);
  const options = fromDsn.options === undefined || fromDsn.options === '' ? PINNED_GUCS : `${fromDsn.options} ${PINNED_GUCS}`;
  return { ...fromDsn, ...given, options };
}

/** A client for pgbidi's own statements (agentConfig). */
export function agentClient(config: AgentClientConfig): pg.Client {
  return new pg.Client(agentConfig(config));
}
