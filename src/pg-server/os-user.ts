import { execFile } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** Name of the unprivileged account that runs PostgreSQL when the caller is root. */
export const SERVER_USER_NAME = 'pgbidi-pg';

export interface ServerUser {
  uid: number;
  gid: number;
}

export class OsUserError extends Error {
  readonly code = 'PG_SERVER_USER_FAILED';
  override readonly name = 'OsUserError';
}

let pending: Promise<ServerUser | undefined> | undefined;

/**
 * PostgreSQL refuses to run as root. When this process is root, makes sure the system account
 * `pgbidi-pg` exists (creating it if needed) and returns its ids, for chown and spawn({uid, gid}).
 * Returns undefined when not root: servers then run as the current user. Memoized per process.
 */
export function ensureServerUser(): Promise<ServerUser | undefined> {
  if (process.getuid?.() !== 0) return Promise.resolve(undefined);
  pending ??= findOrCreateUser().catch((error: unknown) => {
    pending = undefined; // let a later call try again instead of caching the failure
    throw error;
  });
  return pending;
}

async function findOrCreateUser(): Promise<ServerUser> {
  const existing = await lookupUser(SERVER_USER_NAME);
  if (existing) return existing;
  // Test workers race to create the account: useradd exits 9 when another one won, and 10 when
  // /etc/passwd is locked by a concurrent useradd. Both end well once the lookup succeeds.
  let lastError: unknown;
  for (let attempt = 0; attempt < 20; attempt += 1) {
    try {
      await run('useradd', ['--system', '--no-create-home', '--shell', '/usr/sbin/nologin', SERVER_USER_NAME]);
    } catch (error) {
      lastError = error;
    }
    const user = await lookupUser(SERVER_USER_NAME);
    if (user) return user;
    await sleep(50 + Math.floor(Math.random() * 100));
  }
  throw new OsUserError(`cannot create OS user ${SERVER_USER_NAME} with useradd`, { cause: lastError });
}

/** Resolves through NSS (getent), as PostgreSQL and useradd do; undefined when the user is unknown. */
async function lookupUser(name: string): Promise<ServerUser | undefined> {
  let stdout: string;
  try {
    ({ stdout } = await run('getent', ['passwd', name]));
  } catch {
    return undefined; // getent exits 2 for "no such key"
  }
  const [, , uid, gid] = stdout.trim().split(':');
  const ids = { uid: Number(uid), gid: Number(gid) };
  if (!Number.isInteger(ids.uid) || !Number.isInteger(ids.gid)) {
    throw new OsUserError(`unexpected passwd entry for ${name}: ${stdout.trim()}`);
  }
  return ids;
}
