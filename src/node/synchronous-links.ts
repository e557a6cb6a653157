/**
 * Synchronous links: a peer marked `synchronous: true` in this node's config waits, at every commit,
 * until this node's agent has applied and flushed the transaction.
 *
 * A walsender that serves a logical slot takes part in synchronous replication by its
 * application_name (warm-standby.html#SYNCHRONOUS-REPLICATION; walsender.c calls
 * SyncRepReleaseWaiters from ProcessStandbyReplyMessage). The agent streams from the peer as
 * applicationName(peer, node), so setup lists that name in the peer's synchronous_standby_names.
 *
 * pgbidi owns the setting on a peer only in the one form it writes, `ANY n ("pgbidi_…", …)` with n
 * equal to the number of names: every listed agent must confirm (with n = 1 the same as a single
 * name). A value in any other form was set by someone else and is left alone with an error, so that
 * a physical standby's synchronous setup is never overwritten.
 *
 * Deadlock rule: apply sessions never wait for synchronous standbys (synchronous_commit is `local`
 * on a synchronous link, `off` otherwise; see ApplySession). With A ⇄ B both synchronous, a user
 * commit on A waits for B's agent, whose apply commit on B waits for nobody, so no cycle can form.
 */
import type pg from 'pg';
import { agentClient } from '../util/agent-client.js';
import type { Config } from '../config/config-schema.js';
import { applicationName, ORIGIN_PREFIX } from './names.js';
import { errorMessage } from '../util/error-message.js';

/**
 * Run by every session of pgbidi's own that writes (setup, the link's control connection with its
 * heartbeats, the janitor): their commits must not wait for this node's synchronous standbys. Setup
 * of one node would otherwise hang until the peers' agents run, and a heartbeat waiting for the
 * agent on the other side would hold up the feedback queued behind it on the same connection.
 */
export const WITHOUT_SYNC_WAIT = 'SET synchronous_commit = local';

/** What the peer's setting was and became, for setup's report. */
export interface SynchronousLinkReport {
  readonly peer: string;
  readonly synchronous: boolean;
  /** The application_name the peer waits for (this node's agent streaming from it). */
  readonly standby: string;
  readonly status: 'set' | 'already set' | 'removed' | 'not listed' | 'unreachable';
  readonly value: string;
}

/** The names of a pgbidi-written synchronous_standby_names, [] for an empty one, null for any other form. */
export function parseStandbyNames(value: string): string[] | null {
  const text = value.trim();
  if (text === '') return [];
  const m = /^ANY\s+(\d+)\s*\((.*)\)$/i.exec(text);
  if (!m || m[1] === undefined || m[2] === undefined) return null;
  const names = m[2].split(',').map((n) => n.trim().replace(/^"(.*)"$/, '$1'));
  if (names.some((n) => !n.startsWith(ORIGIN_PREFIX) || !/^[a-z0-9_]+$/.test(n))) return null;
  if (Number(m[1]) !== names.length) return null;
  return names;
}

/** The setting with `standby` added (want) or removed; '' when no name is left. */
export function formatStandbyNames(names: readonly string[]): string {
  if (names.length === 0) return '';
  return `ANY ${names.length} (${names.map((n) => `"${n}"`).join(', ')})`;
}

export class SynchronousLinkError extends Error {
  readonly code = 'PGBIDI_SYNCHRONOUS_LINK';
  constructor(message: string) {
    super(message);
    this.name = 'SynchronousLinkError';
  }
}

/** One advisory lock key for every pgbidi setup editing a node's synchronous_standby_names. */
const LOCK_KEY = 'pgbidi.synchronous_standby_names';

/**
 * Makes every peer's synchronous_standby_names list this node's agent exactly when the link from
 * that peer is synchronous. A synchronous peer that cannot be reached or changed is an error; a
 * peer that should not list this node and cannot be reached is reported and skipped.
 */
export async function configureSynchronousLinks(config: Config): Promise<SynchronousLinkReport[]> {
  const reports: SynchronousLinkReport[] = [];
  const problems: string[] = [];
  for (const peer of config.peers) {
    const standby = applicationName(peer.name, config.node.name);
    const client = agentClient({ connectionString: peer.dsn, application_name: 'pgbidi_setup', connectionTimeoutMillis: 5000 });
    client.on('error', () => undefined);
    try {
      await client.connect();
    } catch (err) {
      await client.end().catch(() => undefined);
      if (peer.synchronous) problems.push(`peer ${peer.name} is unreachable (${errorMessage(err)}): cannot make its commits wait for this node`);
      reports.push({ peer: peer.name, synchronous: peer.synchronous, standby, status: 'unreachable', value: '' });
      continue;
    }
    try {
      reports.push(await configurePeer(client, peer.name, standby, peer.synchronous));
    } catch (err) {
      if (err instanceof SynchronousLinkError) problems.push(err.message);
      else if ((err as { code?: string }).code === '42501') {
        problems.push(
          `peer ${peer.name}: the role in its dsn may not change synchronous_standby_names (${errorMessage(err)}); ` +
            `connect as a superuser, or on the peer: GRANT ALTER SYSTEM ON PARAMETER synchronous_standby_names TO <role>`,
        );
      } else throw err;
    } finally {
      await client.end().catch(() => undefined);
    }
  }
  if (problems.length) throw new SynchronousLinkError(problems.join('; '));
  return reports;
}

/** Takes `standby` out of `node`'s synchronous_standby_names (pgbidi part); whether it was listed. */
export async function forgetStandby(client: pg.Client, node: string, standby: string): Promise<boolean> {
  return (await configurePeer(client, node, standby, false)).status === 'removed';
}

/** synchronous_standby_names as this session sees it. */
async function standbyNamesNow(client: pg.Client): Promise<string> {
  const r = await client.query<{ v: string }>(`SELECT current_setting('synchronous_standby_names') AS v`);
  return r.rows[0]?.v ?? '';
}

/** How long a session waits to see its own ALTER SYSTEM after pg_reload_conf(). */
const RELOAD_WAIT_MS = 10_000;

/**
 * pg_reload_conf() only signals the postmaster: each backend, this one included, takes the new file
 * in when it next reads a command, so current_setting() may still give the old list for a moment.
 * The lock is held until this session sees the new value; the next read-modify-write (in this
 * session or another, after it) then starts from it instead of undoing this edit.
 */
async function untilReloaded(client: pg.Client, value: string): Promise<void> {
  const deadline = Date.now() + RELOAD_WAIT_MS;
  for (;;) {
    if ((await standbyNamesNow(client)) === value || Date.now() > deadline) return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

async function configurePeer(client: pg.Client, peer: string, standby: string, want: boolean): Promise<SynchronousLinkReport> {
  // Setups of several nodes may edit one peer's list at once: read-modify-write under a lock.
  // ALTER SYSTEM cannot run in a transaction block, so the lock is a session lock.
  await client.query('SELECT pg_advisory_lock(hashtext($1))', [LOCK_KEY]);
  try {
    const current = await standbyNamesNow(client);
    const names = parseStandbyNames(current);
    if (names === null) {
      if (!want) return { peer, synchronous: want, standby, status: 'not listed', value: current };
      throw new SynchronousLinkError(
        `peer ${peer}: synchronous_standby_names is '${current}', which pgbidi did not write; ` +
          `add "${standby}" to it by hand (e.g. ANY 1 ("${standby}", …) or FIRST n (…)), or reset it and run setup again`,
      );
    }
    const listed = names.includes(standby);
    if (listed === want) return { peer, synchronous: want, standby, status: want ? 'already set' : 'not listed', value: current };
    const next = formatStandbyNames(want ? [...names, standby].sort() : names.filter((n) => n !== standby));
    // ALTER SYSTEM takes no parameters: the value is built from validated node names only.
    await client.query(next === '' ? 'ALTER SYSTEM RESET synchronous_standby_names' : `ALTER SYSTEM SET synchronous_standby_names = '${next}'`);
    await client.query('SELECT pg_reload_conf()');
    await untilReloaded(client, next);
    return { peer, synchronous: want, standby, status: want ? 'set' : 'removed', value: next };
  } finally {
    await client.query('SELECT pg_advisory_unlock(hashtext($1))', [LOCK_KEY]).catch(() => undefined);
  }
}
