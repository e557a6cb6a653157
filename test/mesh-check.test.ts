import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { main } from '../src/cli.js';
import type { RawConfig } from '../src/config/config-schema.js';
import { parseConfig } from '../src/config/load-config.js';
import { checkMesh } from '../src/node/mesh-check.js';
import { setupNode } from '../src/node/setup-node.js';
import type { LocalCluster } from '../src/testbed/local-cluster.js';
import { eventually, useCluster } from './support/cluster-fixture.js';
import { availableServerVersions } from './support/pg-versions.js';

const messages = async (raw: RawConfig): Promise<string[]> => (await checkMesh(parseConfig(raw, {}))).map((p) => p.message);

describe.each(availableServerVersions())('mesh checks ($label)', ({ binDir }) => {
  const cluster = useCluster(() => ({ binDir, nodes: ['a', 'b', 'c'], schema: [`CREATE TABLE t (id int PRIMARY KEY)`] }));
  const dir = mkdtempSync(join(tmpdir(), 'pgbidi-mesh-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  /** b's config leaves c out: b does not list c back. */
  const bWithoutC = (c: LocalCluster): RawConfig => ({ ...c.rawConfig('b'), peers: (c.rawConfig('b').peers ?? []).filter((p) => p.name !== 'c') });

  it('names a peer not set up, a peer that does not list this node back, and a missing publication or slot', async () => {
    const c = cluster.get();
    await setupNode(c.config('a'));
    await setupNode(parseConfig(bWithoutC(c), {}));

    // setup prints the check: c is not set up yet.
    const file = join(dir, 'a.yaml');
    writeFileSync(file, JSON.stringify(c.rawConfig('a')));
    const out: string[] = [];
    expect(await main(['setup', '--config', file], { out: (s) => out.push(s), err: (s) => out.push(s) })).toBe(0);
    expect(out.join('')).toContain("mesh: peer c is not set up (no pgbidi schema there): run 'pgbidi setup' on c with a config that lists a");

    await setupNode(c.config('c'));
    expect(await messages(c.rawConfig('a'))).toEqual([]);
    expect(await messages(c.rawConfig('c'))).toEqual([
      "peer b does not list c back (no replication origin pgbidi_c on b): add c to the peers in b's config and run 'pgbidi setup' on b",
      "slot pgbidi_b_to_c on b is missing: run 'pgbidi setup' on b before starting the agent here (the agent would create it at start, and b's changes before then would never reach c)",
    ]);
    // From b's side every listed peer (a) is fine.
    expect(await messages(bWithoutC(c))).toEqual([]);

    await setupNode(c.config('b'));
    expect(await messages(c.rawConfig('c'))).toEqual([]);
    // Taken out of b's config again: b's slot for c is left behind and named.
    expect(await messages(bWithoutC(c))).toEqual([
      "slot pgbidi_b_to_c here is for c, which is not a peer: it retains WAL; if c left the group, run 'pgbidi part --config <this config> --node c'",
      "replication origin pgbidi_c here is for c, which is not a peer: if c left the group, run 'pgbidi part --config <this config> --node c'",
    ]);

    await c.query('b', 'DROP PUBLICATION pgbidi');
    await c.query('b', `SELECT pg_drop_replication_slot('pgbidi_b_to_a')`);
    expect(await messages(c.rawConfig('a'))).toEqual([
      "peer b has no publication pgbidi: run 'pgbidi setup' on b (replication.publication must be the same on every node)",
      "slot pgbidi_b_to_a on b is missing: run 'pgbidi setup' on b before starting the agent here (the agent would create it at start, and b's changes before then would never reach a)",
    ]);

    // status shows the same lines under the links, and in --json as "mesh".
    await c.startAgent('a', undefined, '127.0.0.1:0');
    writeFileSync(file, JSON.stringify({ ...c.rawConfig('a'), http: { listen: c.agents.get('a')?.httpAddress } }));
    const status: string[] = [];
    expect(await main(['status', '--config', file], { out: (s) => status.push(s), err: (s) => status.push(s) })).toBe(0);
    expect(status.join('')).toContain('mesh: peer b has no publication pgbidi');
    // The agent's link re-creates the slot on b when it gets that far in its start; the publication stays missing.
    await eventually('slot pgbidi_b_to_a re-created by the agent', async () => {
      const rows = await c.query('b', `SELECT 1 FROM pg_replication_slots WHERE slot_name = 'pgbidi_b_to_a'`);
      return rows.length === 1;
    });
    const json: string[] = [];
    expect(await main(['status', '--config', file, '--json'], { out: (s) => json.push(s), err: (s) => json.push(s) })).toBe(0);
    const body = JSON.parse(json.join('')) as { mesh: { peer: string; message: string }[] };
    expect(body.mesh.map((m) => m.message)).toEqual([expect.stringContaining('peer b has no publication pgbidi')]);

    await setupNode(c.config('b'));
    const fixed: string[] = [];
    await main(['status', '--config', file], { out: (s) => fixed.push(s), err: (s) => fixed.push(s) });
    expect(fixed.join('')).toContain('mesh: every peer lists this node back and holds its publication and slot');
  });
});
