import type pg from 'pg';
import type { Config } from '../config/config-schema.js';
import { redactedMessage } from '../config/redact.js';
import { METADATA_SCHEMA, originName, ORIGIN_PREFIX, slotName } from './names.js';
import { tryConnect } from './try-connect.js';
import { partedRecords } from './parted-nodes.js';

/**
 * Whether the group is a full mesh as this node's config sees it: every peer listed here lists this
 * node back, and holds what this node's link needs from it. What `setup` records is the evidence
 * (node/setup-node.ts): on a node n whose config lists m, the replication origin pgbidi_<m> (what n
 * applied from m), the slot pgbidi_<n>_to_<m> (what m reads from n), the publication, and the
 * pgbidi.node row with n's name. Read-only; run by `pgbidi setup` and `pgbidi status`.
 */
export interface MeshProblem {
  /** The peer the problem is about; null: this node. */
  readonly peer: string | null;
  /** What is wrong and how to fix it, naming the node. */
  readonly message: string;
}

export async function checkMesh(config: Config): Promise<MeshProblem[]> {
  const self = config.node.name;
  const peers = config.peers.map((p) => p.name);
  const problems: MeshProblem[] = [];
  const local = await connect(config.node.dsn);
  if (local instanceof Error) return [{ peer: null, message: `this node (${self}) does not answer: ${local.message}` }];
  try {
    if (!(await isSetUp(local))) {
      problems.push({ peer: null, message: `this node (${self}) is not set up (no ${METADATA_SCHEMA}.node): run 'pgbidi setup' here` });
    } else {
      problems.push(...(await localProblems(local, config, peers)));
    }
  } finally {
    await local.end().catch(() => undefined);
  }
  for (const peer of config.peers) problems.push(...(await peerProblems(peer.name, peer.dsn, config)));
  return problems;
}

async function localProblems(local: pg.Client, config: Config, peers: readonly string[]): Promise<MeshProblem[]> {
  const self = config.node.name;
  const problems: MeshProblem[] = [];
  for (const r of await partedRecords(local, peers)) {
    problems.push({
      peer: r.name,
      message:
        `peer ${r.name} left the group (pgbidi part by ${r.partedBy} at ${r.partedAt.toISOString()}) but is still listed here: ` +
        `remove it from peers and restart the agent (or run 'pgbidi setup' to take it back as a peer)`,
    });
  }
  const objects = await local.query<{ kind: 'slot' | 'origin'; name: string }>(
    `SELECT 'slot' AS kind, slot_name::text AS name FROM pg_replication_slots WHERE database = current_database() AND starts_with(slot_name, $1)
     UNION ALL SELECT 'origin', roname FROM pg_replication_origin WHERE starts_with(roname, $2)`,
    [`pgbidi_${self}_to_`, ORIGIN_PREFIX],
  );
  const slots = new Set(objects.rows.filter((o) => o.kind === 'slot').map((o) => o.name));
  const origins = new Set(objects.rows.filter((o) => o.kind === 'origin').map((o) => o.name));
  for (const p of peers) {
    if (!origins.has(originName(p))) {
      problems.push({ peer: p, message: `no replication origin ${originName(p)} here for peer ${p}: run 'pgbidi setup' on this node (${self})` });
    }
    if (!slots.has(slotName(self, p))) {
      problems.push({ peer: p, message: `slot ${slotName(self, p)} (read by ${p}) is missing here: run 'pgbidi setup' on this node (${self})` });
    }
  }
  // Left behind by a node that is no longer a peer: a slot holds WAL here for as long as it exists.
  const listed = new Set(peers.map((p) => slotName(self, p)));
  for (const s of [...slots].filter((s) => !listed.has(s)).sort()) {
    const other = s.slice(`pgbidi_${self}_to_`.length);
    problems.push({
      peer: other,
      message: `slot ${s} here is for ${other}, which is not a peer: it retains WAL; if ${other} left the group, run 'pgbidi part --config <this config> --node ${other}'`,
    });
  }
  const listedOrigins = new Set(peers.map(originName));
  for (const o of [...origins].filter((o) => !listedOrigins.has(o)).sort()) {
    const other = o.slice(ORIGIN_PREFIX.length);
    if (other === self) continue;
    problems.push({
      peer: other,
      message: `replication origin ${o} here is for ${other}, which is not a peer: if ${other} left the group, run 'pgbidi part --config <this config> --node ${other}'`,
    });
  }
  return problems;
}

async function peerProblems(peer: string, dsn: string, config: Config): Promise<MeshProblem[]> {
  const self = config.node.name;
  const client = await connect(dsn);
  if (client instanceof Error) return [{ peer, message: `peer ${peer} does not answer (${client.message}): its side of the mesh is not checked` }];
  try {
    if (!(await isSetUp(client))) {
      return [
        { peer, message: `peer ${peer} is not set up (no ${METADATA_SCHEMA} schema there): run 'pgbidi setup' on ${peer} with a config that lists ${self}` },
      ];
    }
    const name = (await client.query<{ name: string }>(`SELECT name FROM ${METADATA_SCHEMA}.node`)).rows[0]?.name;
    if (name !== peer) {
      return [{ peer, message: `the database at peer ${peer}'s dsn belongs to node '${name ?? '?'}', not '${peer}': fix the dsn of ${peer} in this config` }];
    }
    const problems: MeshProblem[] = [];
    const parted = (await partedRecords(client, [self]))[0];
    if (parted) {
      problems.push({
        peer,
        message: `${peer} records that this node (${self}) left the group (pgbidi part by ${parted.partedBy} at ${parted.partedAt.toISOString()}): run 'pgbidi setup' on ${peer} with ${self} listed to take it back`,
      });
    }
    const r = await client.query<{ origin: boolean; publication: boolean; slot: boolean }>(
      `SELECT EXISTS (SELECT 1 FROM pg_replication_origin WHERE roname = $1) AS origin,
              EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $2) AS publication,
              EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $3 AND database = current_database()) AS slot`,
      [originName(self), config.replication.publication, slotName(peer, self)],
    );
    const has = r.rows[0];
    if (!has?.origin && !parted) {
      problems.push({
        peer,
        message: `peer ${peer} does not list ${self} back (no replication origin ${originName(self)} on ${peer}): add ${self} to the peers in ${peer}'s config and run 'pgbidi setup' on ${peer}`,
      });
    }
    if (!has?.publication) {
      problems.push({
        peer,
        message: `peer ${peer} has no publication ${config.replication.publication}: run 'pgbidi setup' on ${peer} (replication.publication must be the same on every node)`,
      });
    }
    if (!has?.slot) {
      problems.push({
        peer,
        message:
          `slot ${slotName(peer, self)} on ${peer} is missing: run 'pgbidi setup' on ${peer} before starting the agent here ` +
          `(the agent would create it at start, and ${peer}'s changes before then would never reach ${self})`,
      });
    }
    return problems;
  } catch (err) {
    return [{ peer, message: `peer ${peer} could not be checked: ${redactedMessage(err)}` }];
  } finally {
    await client.end().catch(() => undefined);
  }
}

async function isSetUp(client: pg.Client): Promise<boolean> {
  const r = await client.query<{ t: string | null }>(`SELECT to_regclass('${METADATA_SCHEMA}.node')::text AS t`);
  return Boolean(r.rows[0]?.t);
}

function connect(dsn: string): Promise<pg.Client | Error> {
  return tryConnect(dsn, 'pgbidi_mesh_check');
}

/** The mesh check's lines as `setup` and `status` print them. */
export function formatMesh(problems: readonly MeshProblem[]): string {
  if (problems.length === 0) return 'mesh: every peer lists this node back and holds its publication and slot\n';
  return problems.map((p) => `mesh: ${p.message}\n`).join('');
}
