import type pg from 'pg';
import { agentClient } from '../util/agent-client.js';
import type { Config } from '../config/config-schema.js';
import { qualifiedName, quoteIdent } from '../util/sql.js';
import { metadataSchemaSql, tombstoneTriggerSql } from './metadata-schema.js';
import { METADATA_SCHEMA, originName, slotName } from './names.js';
import { forgetParted, partedPeers } from './parted-nodes.js';
import { replicaIdentityProblem, resolveTables } from './table-selection.js';
import type { SelectedTable } from './table-selection.js';
import { globToRegExp } from '../util/glob.js';
import { configureSynchronousLinks, SynchronousLinkError, WITHOUT_SYNC_WAIT } from './synchronous-links.js';
import type { SynchronousLinkReport } from './synchronous-links.js';
import { compareWithPeers, describeDifference } from './schema-compare.js';
import { sqlState } from '../apply/error-kind.js';
import { connecting, explainConnectionError, nodeEndpoint } from './connection-problem.js';
import { errorMessage } from '../util/error-message.js';

async function connectPeer(dsn: string): Promise<pg.Client> {
  const c = agentClient({ connectionString: dsn, application_name: 'pgbidi_setup', connectionTimeoutMillis: 5000 });
  c.on('error', () => undefined);
  await c.connect();
  return c;
}

export class SetupError extends Error {
  readonly code = 'PGBIDI_SETUP_FAILED';
  constructor(readonly problems: readonly string[]) {
    super(`setup cannot continue:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'SetupError';
  }
}

export interface SetupReport {
  readonly serverVersionNum: number;
  readonly tables: readonly string[];
  readonly origins: readonly string[];
  readonly slots: readonly { peer: string; slot: string; status: 'created' | 'exists' }[];
  /** Each peer's synchronous_standby_names as far as this node's agent is concerned. */
  readonly synchronous: readonly SynchronousLinkReport[];
  /** Things the operator should know that do not stop setup. */
  readonly notes: readonly string[];
}

const MIN_VERSION_NUM = 150000;

/**
 * Prepares the local node (idempotent): checks server settings, creates the metadata schema,
 * the publication, one replication origin per peer, and one slot per peer on this node (the peer
 * consumes it). Every problem found is reported at once.
 */
export async function setupNode(config: Config): Promise<SetupReport> {
  const client = agentClient({ connectionString: config.node.dsn, application_name: 'pgbidi_setup' });
  const node = nodeEndpoint(config.node.dsn);
  try {
    await connecting(node, () => client.connect());
  } catch (err) {
    throw new SetupError([errorMessage(err)]);
  }
  try {
    await client.query(WITHOUT_SYNC_WAIT);
    const settings = await readSettings(client);
    const needed = config.peers.length;
    const problems: string[] = [];
    if (settings.server_version_num < MIN_VERSION_NUM) {
      problems.push(`PostgreSQL ${settings.server_version} is too old: pgbidi needs 15 or later`);
    }
    if (settings.wal_level !== 'logical') {
      problems.push(`wal_level is '${settings.wal_level}': set wal_level = logical in postgresql.conf and restart`);
    }
    if (settings.track_commit_timestamp !== 'on') {
      problems.push('track_commit_timestamp is off: set track_commit_timestamp = on and restart (conflict resolution needs commit times)');
    }
    if (settings.max_replication_slots < needed) {
      problems.push(`max_replication_slots is ${settings.max_replication_slots}: set it to at least ${needed} (one per peer) and restart`);
    }
    if (settings.max_wal_senders < needed) {
      problems.push(`max_wal_senders is ${settings.max_wal_senders}: set it to at least ${needed} (one per peer) and restart`);
    }
    const tables = await resolveTables(client, config.replication.tables, config.replication.exclude_tables);
    const unidentified = tables.filter((t) => t.primaryKey.length === 0 && t.replicaIdentity !== 'f');
    if (unidentified.length) {
      problems.push(
        `tables without a primary key cannot be replicated: ${unidentified.map((t) => `${t.schema}.${t.name}`).join(', ')}; ` +
          'add a primary key, or ALTER TABLE … REPLICA IDENTITY FULL for insert-mostly tables',
      );
    }
    const unlogged = tables.filter((t) => t.unlogged).map((t) => `${t.schema}.${t.name}`);
    if (unlogged.length) {
      // CREATE PUBLICATION refuses them too ("cannot add relation … to publication"), without a fix.
      problems.push(
        `unlogged tables cannot be replicated (their changes are not in the WAL that logical decoding reads): ${unlogged.join(', ')}; ` +
          'ALTER TABLE … SET LOGGED, or leave them out with replication.exclude_tables',
      );
    }
    const identities = tables.map(replicaIdentityProblem).filter((x): x is string => x !== null);
    if (identities.length) {
      problems.push(
        `tables whose replica identity does not carry their primary key cannot be replicated: ${identities.join(', ')}; ` +
          'a peer applies updates and deletes by primary key and finds it only in the old key PostgreSQL logs: ' +
          'ALTER TABLE … REPLICA IDENTITY DEFAULT (or FULL)',
      );
    }
    const deferrable = await deferrableKeys(client, tables);
    if (deferrable.length) {
      problems.push(
        `deferrable unique, primary key or exclusion constraints cannot be replicated: ${deferrable.join(', ')}; ` +
          'apply runs with session_replication_role = replica, which skips their recheck at commit (a remote row would ' +
          'break them without an error), and ON CONFLICT cannot use them: ALTER TABLE … ALTER CONSTRAINT … NOT DEFERRABLE ' +
          '(exclusion constraints: drop and re-add without DEFERRABLE)',
      );
    }
    const notes: string[] = [];
    for (const t of config.conflicts.tables) {
      if (t.policy !== 'delta') continue;
      const noFull = tables.filter((x) => t.match.some((p) => globToRegExp(p).test(`${x.schema}.${x.name}`)) && x.replicaIdentity !== 'f');
      if (noFull.length) {
        problems.push(`the delta policy needs the old row: ALTER TABLE … REPLICA IDENTITY FULL on ${noFull.map((x) => `${x.schema}.${x.name}`).join(', ')}`);
      }
    }
    const toasty = await tablesWithOutOfLineValues(
      client,
      tables.filter((t) => t.replicaIdentity !== 'f' && t.primaryKey.length > 0),
    );
    if (toasty.length) {
      notes.push(
        `${toasty.join(', ')} can hold out-of-line (TOAST) values: an update that must re-create a missing row needs the ` +
          'whole row, which only REPLICA IDENTITY FULL provides; without it such updates are skipped and logged as update_missing',
      );
    }
    const risky = [config.conflicts.default_policy, ...config.conflicts.tables.map((t) => t.policy)].filter(
      (p) => p === 'apply_remote' || p === 'keep_local' || p === 'skip',
    );
    if (risky.length) {
      notes.push(
        `policies ${[...new Set(risky)].join(', ')} converge only when no two nodes write the same row at the same time; ` +
          'last_update_wins (or delta for counters) converges always',
      );
    }
    for (const r of await compareWithPeers(
      client,
      config.peers,
      tables.map((t) => `${t.schema}.${t.name}`),
      connectPeer,
    )) {
      for (const d of r.differences ?? []) notes.push(`schema differs from ${r.peer}: ${describeDifference(d, config.node.name, r.peer)}`);
    }
    const policyJson = canonicalPolicy(config);
    problems.push(...(await peerPolicyMismatches(config, policyJson)));
    const parted = await partedPeers(client, config, (peer) => listsBack(peer.dsn, peer.name, config.node.name));
    problems.push(...parted.problems);
    if (problems.length) throw new SetupError(problems);

    await client.query('BEGIN');
    for (const sql of metadataSchemaSql(config.node.name)) await client.query(sql);
    const owner = await client.query<{ name: string }>(`SELECT name FROM ${METADATA_SCHEMA}.node`);
    const existing = owner.rows[0]?.name;
    if (existing !== undefined && existing !== config.node.name) {
      throw new SetupError([`this database belongs to pgbidi node '${existing}', not '${config.node.name}'`]);
    }
    if (existing === undefined) await client.query(`INSERT INTO ${METADATA_SCHEMA}.node (name) VALUES ($1)`, [config.node.name]);
    await client.query(`UPDATE ${METADATA_SCHEMA}.node SET conflict_policy = $1::jsonb`, [policyJson]);

    const pub = quoteIdent(config.replication.publication);
    const list = tables.map((t) => qualifiedName(t.schema, t.name)).join(', ');
    const pubExists = await client.query('SELECT 1 FROM pg_publication WHERE pubname = $1', [config.replication.publication]);
    if (pubExists.rowCount === 0) {
      await client.query(list ? `CREATE PUBLICATION ${pub} FOR TABLE ${list}` : `CREATE PUBLICATION ${pub}`);
    } else if (list) {
      await client.query(`ALTER PUBLICATION ${pub} SET TABLE ${list}`);
    }

    for (const t of tables) {
      if (t.primaryKey.length === 0) continue;
      for (const sql of tombstoneTriggerSql(qualifiedName(t.schema, t.name), t.primaryKey)) await client.query(sql);
    }

    const origins: string[] = [];
    for (const peer of config.peers) {
      const name = originName(peer.name);
      await client.query('SELECT pg_replication_origin_create($1) WHERE NOT EXISTS (SELECT 1 FROM pg_replication_origin WHERE roname = $1)', [name]);
      origins.push(name);
    }
    // A parted node set up again with this node listed rejoins (node/parted-nodes.ts).
    for (const r of await forgetParted(client, parted.rejoin)) {
      notes.push(`peer ${r.name} had parted (${r.partedAt.toISOString()}); it is a peer of this node again`);
    }
    await client.query('COMMIT');

    // The slots that peers consume live here, on their source, and are created after the publication:
    // pgoutput reads the publication through the historic catalog snapshot at the decoded position,
    // and PostgreSQL 15 fails with "publication does not exist" for a slot older than it.
    const slots: SetupReport['slots'][number][] = [];
    for (const peer of config.peers) {
      const slot = slotName(config.node.name, peer.name);
      slots.push({ peer: peer.name, slot, status: await ensureSlot(client, slot) });
    }
    const synchronous = await configureSynchronousLinks(config).catch((err: unknown) => {
      throw err instanceof SynchronousLinkError ? new SetupError([err.message]) : err;
    });
    return {
      serverVersionNum: settings.server_version_num,
      tables: tables.map((t) => `${t.schema}.${t.name}`),
      origins,
      slots,
      synchronous,
      notes,
    };
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    // A role that may not create the schema, the publication or the slots: the operator's problem
    // to fix, named with the grant it needs (SQLSTATE 42501 insufficient_privilege).
    if (sqlState(err) === '42501') throw new SetupError([explainConnectionError(err, node).message]);
    throw err;
  } finally {
    await client.end();
  }
}

interface Settings {
  server_version: string;
  server_version_num: number;
  wal_level: string;
  track_commit_timestamp: string;
  max_replication_slots: number;
  max_wal_senders: number;
}

async function readSettings(client: pg.Client): Promise<Settings> {
  const r = await client.query<Settings>(`SELECT current_setting('server_version') AS server_version,
      current_setting('server_version_num')::int AS server_version_num,
      current_setting('wal_level') AS wal_level,
      current_setting('track_commit_timestamp') AS track_commit_timestamp,
      current_setting('max_replication_slots')::int AS max_replication_slots,
      current_setting('max_wal_senders')::int AS max_wal_senders`);
  return r.rows[0] as Settings;
}

/**
 * Creates the durable logical slot on a peer if it is missing. Slot creation waits for transactions
 * running on the peer to finish (the snapshot builder), so do it before the node takes writes.
 */
async function ensureSlot(client: pg.Client, slot: string): Promise<'created' | 'exists'> {
  const found = await client.query('SELECT 1 FROM pg_replication_slots WHERE slot_name = $1', [slot]);
  if (found.rowCount) return 'exists';
  await client.query(`SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, [slot]);
  return 'created';
}

/** The conflict settings every node must share, in a stable JSON form. */
function canonicalPolicy(config: Config): string {
  const c = config.conflicts;
  return JSON.stringify({
    default_policy: c.default_policy,
    unique_violation: c.unique_violation,
    tables: c.tables.map((t) => ({ match: [...t.match].sort(), policy: t.policy, delta_columns: [...t.delta_columns].sort() })),
  });
}

/**
 * Nodes that resolve the same conflict differently diverge (keep_local here and apply_remote there
 * keeps both versions forever), so every peer that is already set up must have the same settings.
 */
async function peerPolicyMismatches(config: Config, mine: string): Promise<string[]> {
  const problems: string[] = [];
  for (const peer of config.peers) {
    const client = agentClient({ connectionString: peer.dsn, application_name: 'pgbidi_setup', connectionTimeoutMillis: 5000 });
    client.on('error', () => undefined);
    try {
      await client.connect();
      const r = await client.query<{ p: unknown }>(
        `SELECT conflict_policy AS p FROM ${METADATA_SCHEMA}.node WHERE to_regclass('${METADATA_SCHEMA}.node') IS NOT NULL`,
      );
      const theirs = r.rows[0]?.p;
      if (theirs !== undefined && theirs !== null && stableJson(theirs) !== stableJson(JSON.parse(mine))) {
        problems.push(
          `conflict settings differ from peer ${peer.name} (${stableJson(theirs)} there, ${stableJson(JSON.parse(mine))} here): ` +
            'nodes that resolve the same conflict differently cannot converge; use the same conflicts section on every node',
        );
      }
    } catch {
      // Not reachable or not set up yet: its own setup compares with this node.
    } finally {
      await client.end().catch(() => undefined);
    }
  }
  return problems;
}

/** Whether the node at `dsn` is set up as `name` and holds an origin for `self` (its setup lists it). */
async function listsBack(dsn: string, name: string, self: string): Promise<boolean> {
  const client = agentClient({ connectionString: dsn, application_name: 'pgbidi_setup', connectionTimeoutMillis: 5000 });
  client.on('error', () => undefined);
  try {
    await client.connect();
    const r = await client.query<{ ok: boolean }>(
      `SELECT to_regclass('${METADATA_SCHEMA}.node') IS NOT NULL AND EXISTS (SELECT 1 FROM pg_replication_origin WHERE roname = $1) AS ok`,
      [originName(self)],
    );
    if (!r.rows[0]?.ok) return false;
    const n = await client.query<{ name: string }>(`SELECT name FROM ${METADATA_SCHEMA}.node`);
    return n.rows[0]?.name === name;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** Tables with a column whose storage allows out-of-line values (attstorage 'x' or 'e'). */
/** Deferrable unique, primary key and exclusion constraints of the replicated tables, as table.constraint. */
async function deferrableKeys(client: pg.Client, tables: readonly SelectedTable[]): Promise<string[]> {
  if (tables.length === 0) return [];
  const r = await client.query<{ c: string }>(
    `SELECT n.nspname || '.' || t.relname || '.' || c.conname AS c
       FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid JOIN pg_namespace n ON n.oid = t.relnamespace
      WHERE n.nspname || '.' || t.relname = ANY($1) AND c.contype IN ('p', 'u', 'x') AND c.condeferrable
      ORDER BY 1`,
    [tables.map((t) => `${t.schema}.${t.name}`)],
  );
  return r.rows.map((x) => x.c);
}

async function tablesWithOutOfLineValues(client: pg.Client, tables: readonly SelectedTable[]): Promise<string[]> {
  if (tables.length === 0) return [];
  const names = tables.map((t) => `${t.schema}.${t.name}`);
  const r = await client.query<{ t: string }>(
    `SELECT DISTINCT n.nspname || '.' || c.relname AS t
       FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname || '.' || c.relname = ANY($1) AND a.attnum > 0 AND NOT a.attisdropped AND a.attstorage IN ('x', 'e')
      ORDER BY 1`,
    [names],
  );
  return r.rows.map((x) => x.t);
}

/** JSON with object keys sorted, so that jsonb's own key order does not matter. */
function stableJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(stableJson).join(',')}]`;
  if (typeof v === 'object' && v !== null) {
    return `{${Object.keys(v)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${stableJson((v as Record<string, unknown>)[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v);
}
