import { ENV_OVERRIDES } from '../config/load-config.js';
import { sqlState } from '../apply/error-kind.js';
import { errorMessage } from '../util/error-message.js';

/**
 * A failed connection (or a missing privilege) explained for the operator: what was reached, by
 * which config key, what went wrong and what to change. Decided from the SQLSTATE (errcodes.txt) or
 * the Node errno, never from the message. `code` stays the original one, so that retry decisions
 * (apply/error-kind.ts) are unchanged; the DSN itself (and its password) is never repeated.
 */
export class ConnectionProblemError extends Error {
  readonly code: string | null;
  constructor(
    message: string,
    readonly original: unknown,
  ) {
    super(message);
    this.name = 'ConnectionProblemError';
    this.code = sqlState(original) ?? errnoOf(original);
  }
}

/** Where a DSN comes from: this node or a peer, for the messages. */
export interface Endpoint {
  /** 'this node' or 'peer b'. */
  readonly what: string;
  /** The config key of the DSN: node.dsn or peers.<i>.dsn. */
  readonly key: string;
  /** The environment variable that may carry its password. */
  readonly passwordEnv: string;
  readonly dsn: string;
}

export function nodeEndpoint(dsn: string): Endpoint {
  return { what: 'this node', key: 'node.dsn', passwordEnv: ENV_OVERRIDES.nodePassword, dsn };
}

export function peerEndpoint(name: string, index: number, dsn: string): Endpoint {
  return { what: `peer ${name}`, key: `peers.${index}.dsn`, passwordEnv: ENV_OVERRIDES.peerPassword(name), dsn };
}

function errnoOf(err: unknown): string | null {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : null;
}

function parts(dsn: string): { host: string; port: string; user: string; database: string } {
  try {
    const u = new URL(dsn);
    return {
      host: u.searchParams.get('host') ?? (u.hostname || 'localhost'),
      port: u.port || '5432',
      user: decodeURIComponent(u.username) || '(the OS user)',
      database: decodeURIComponent(u.pathname.replace(/^\//, '')) || '(the user name)',
    };
  } catch {
    return { host: '?', port: '?', user: '?', database: '?' };
  }
}

/** The problem and its fix, for an error met while connecting to (or working on) `at`. */
export function explainConnectionError(err: unknown, at: Endpoint): ConnectionProblemError {
  const { host, port, user, database } = parts(at.dsn);
  const where = `${at.what} (${at.key}: ${host}:${port}, database ${database}, user ${user})`;
  const said = errorMessage(err);
  const state = sqlState(err);
  const errno = errnoOf(err);
  let message: string;
  switch (state ?? errno ?? '') {
    case 'ECONNREFUSED':
      message = `cannot connect to ${where}: connection refused; start PostgreSQL there, or correct the host and port in ${at.key} (listen_addresses and port on the server)`;
      break;
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      message = `cannot connect to ${where}: host ${host} is not known; correct the host in ${at.key}`;
      break;
    case 'ETIMEDOUT':
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'ECONNRESET':
      message = `cannot connect to ${where}: ${errno}; check the network and firewall between this agent and ${host}:${port}, and ${at.key}`;
      break;
    case '28P01':
      message = `password authentication failed on ${where}; set the right password in ${at.key} or in ${at.passwordEnv}`;
      break;
    case '28000':
      message = `${where} does not admit user ${user} (${said}); check that the role exists and that pg_hba.conf has a line for it from this host (then SELECT pg_reload_conf())`;
      break;
    case '3D000':
      message = `database ${database} does not exist on ${where}; create it, or correct the database name in ${at.key}`;
      break;
    case '42501':
      message = `user ${user} lacks a privilege on ${where}: ${said}; grant what the README's "Least privilege" section lists (setup runs as the tables' owner)`;
      break;
    case '53300':
      message = `${where} has no connection slot left (${said}); raise max_connections there or close idle sessions`;
      break;
    case '55006':
      message = `${where}: ${said}; another pgbidi agent (or session) already applies this peer's changes there: run one agent per node`;
      break;
    case '57P03':
      message = `${where} is starting up or shutting down (${said}); the link retries`;
      break;
    default:
      message = `${where}: ${said}`;
  }
  return new ConnectionProblemError(message, err);
}

/** Runs `connect`, turning its failure into a ConnectionProblemError for `at`. */
export async function connecting<T>(at: Endpoint, connect: () => Promise<T>): Promise<T> {
  try {
    return await connect();
  } catch (err) {
    throw explainConnectionError(err, at);
  }
}

/**
 * A server setting that pgbidi needs is off, or the node is not set up (found when a link connects, after setup checked it):
 * the link retries with backoff, and this says which node and what to set.
 */
export class ServerSettingError extends Error {
  readonly code = 'PGBIDI_SERVER_SETTING';
  constructor(message: string) {
    super(message);
    this.name = 'ServerSettingError';
  }
}
