import type { ClientBase } from 'pg';
import { METADATA_SCHEMA } from './names.js';

/**
 * The record of nodes that left the group (`pgbidi part`), kept on every survivor. It is what tells
 * an agent whose config still lists a departed node to stop its link for good ('parted') instead of
 * reconnecting and re-creating the departed node's slot (link/link.ts), and what `setup` and
 * `status` name in their mesh checks. Setting the node up again as a peer (`pgbidi setup` with it
 * listed) removes its record.
 */
export const PARTED_NODES_TABLE = `${METADATA_SCHEMA}.parted_nodes`;

export const PARTED_NODES_SQL = `CREATE TABLE IF NOT EXISTS ${PARTED_NODES_TABLE} (
  name text PRIMARY KEY,
  parted_at timestamptz NOT NULL DEFAULT now(),
  parted_by text NOT NULL)`;

export interface PartedRecord {
  readonly name: string;
  readonly partedAt: Date;
  /** The node whose `pgbidi part` wrote the record. */
  readonly partedBy: string;
}

/** Writes the record that `node` parted (keeps the first record when parted twice). */
export async function recordParted(client: ClientBase, node: string, by: string): Promise<void> {
  await client.query(`CREATE SCHEMA IF NOT EXISTS ${METADATA_SCHEMA}`);
  await client.query(PARTED_NODES_SQL);
  await client.query(`INSERT INTO ${PARTED_NODES_TABLE} (name, parted_by) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING`, [node, by]);
}

/**
 * The parted records among `names` on the node `client` is connected to; none when the node has no
 * such table (it never saw a part, or is not set up). Plain SQL, so it also runs on a walsender
 * connection (replication=database).
 */
export async function partedRecords(client: ClientBase, names: readonly string[]): Promise<PartedRecord[]> {
  const exists = await client.query<{ t: string | null }>(`SELECT to_regclass('${PARTED_NODES_TABLE}')::text AS t`);
  if (!exists.rows[0]?.t) return [];
  const r = await client.query<{ name: string; parted_at: Date; parted_by: string }>(
    `SELECT name, parted_at, parted_by FROM ${PARTED_NODES_TABLE} WHERE name = ANY($1::text[]) ORDER BY name`,
    [names],
  );
  return r.rows.map((x) => ({ name: x.name, partedAt: new Date(x.parted_at), partedBy: x.parted_by }));
}

/** Forgets the records of nodes that are peers again; returns those it removed. */
export async function forgetParted(client: ClientBase, names: readonly string[]): Promise<PartedRecord[]> {
  const found = await partedRecords(client, names);
  if (found.length) await client.query(`DELETE FROM ${PARTED_NODES_TABLE} WHERE name = ANY($1::text[])`, [found.map((f) => f.name)]);
  return found;
}

/** A link whose peer left the group, or whose own node did: it stays stopped until the agent restarts. */
export class PeerPartedError extends Error {
  readonly code = 'PGBIDI_PEER_PARTED';
  constructor(message: string) {
    super(message);
    this.name = 'PeerPartedError';
  }
}

/**
 * Why the link from `peer` to `self` must not run, or null: `local` (this node) recorded that the
 * peer parted, or `remote` (the peer) recorded that this node did. `remote` is null when the peer
 * cannot be asked.
 */
export async function partedLink(local: ClientBase, remote: ClientBase | null, self: string, peer: string): Promise<PeerPartedError | null> {
  const here = (await partedRecords(local, [peer]))[0];
  if (here) {
    return new PeerPartedError(
      `peer ${peer} left the group (pgbidi part by ${here.partedBy} at ${here.partedAt.toISOString()}): this link stays stopped and ` +
        `re-creates nothing on ${peer}; remove ${peer} from peers in this node's config and restart the agent`,
    );
  }
  const there = remote ? (await partedRecords(remote, [self]))[0] : undefined;
  if (there) {
    return new PeerPartedError(
      `${peer} records that this node (${self}) left the group (pgbidi part by ${there.partedBy} at ${there.partedAt.toISOString()}): ` +
        `this link stays stopped; stop this agent, or set ${self} up again as a peer (pgbidi setup on ${peer} and here) to rejoin`,
    );
  }
  return null;
}

/**
 * Which parted nodes that `config` lists as peers may come back. A parted node rejoins when it was
 * set up again with this node listed (its pgbidi.node names it and it holds an origin for this
 * node); otherwise listing it is a stale config, and re-creating its slot here would retain WAL for
 * a node that reads nothing. Returns the records to forget and the problems to report.
 */
export async function partedPeers(
  local: ClientBase,
  config: { readonly node: { readonly name: string }; readonly peers: readonly { readonly name: string; readonly dsn: string }[] },
  isBack: (peer: { readonly name: string; readonly dsn: string }) => Promise<boolean>,
): Promise<{ rejoin: string[]; problems: string[] }> {
  const rejoin: string[] = [];
  const problems: string[] = [];
  for (const r of await partedRecords(
    local,
    config.peers.map((p) => p.name),
  )) {
    const peer = config.peers.find((p) => p.name === r.name);
    if (peer && (await isBack(peer))) rejoin.push(r.name);
    else {
      problems.push(
        `peer ${r.name} left the group (pgbidi part by ${r.partedBy} at ${r.partedAt.toISOString()}): remove it from peers; ` +
          `to take it back, run 'pgbidi setup' on ${r.name} first (with ${config.node.name} listed), then here`,
      );
    }
  }
  return { rejoin, problems };
}
