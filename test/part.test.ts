import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { main } from '../src/cli.js';
import { partNode } from '../src/node/part-node.js';
import { setupNode } from '../src/node/setup-node.js';
import type { LocalCluster } from '../src/testbed/local-cluster.js';
import { eventually, useCluster } from './support/cluster-fixture.js';
import { availableServerVersions } from './support/pg-versions.js';

const SCHEMA = [`CREATE TABLE t (id text PRIMARY KEY, v int NOT NULL)`];

/** Every slot and origin on `node` that belongs to x (its own, or the ones peers keep for it). */
async function objectsOf(c: LocalCluster, node: string, x: string): Promise<string[]> {
  const slots = await c.query<{ n: string }>(
    node,
    `SELECT 'slot ' || slot_name AS n FROM pg_replication_slots WHERE starts_with(slot_name, $1) OR slot_name LIKE $2`,
    [`pgbidi_${x}_to_`, `%\\_to\\_${x}`],
  );
  const origins = await c.query<{ n: string }>(node, `SELECT 'origin ' || roname AS n FROM pg_replication_origin WHERE roname = $1`, [`pgbidi_${x}`]);
  return [...slots, ...origins].map((r) => r.n).sort();
}

async function insert(c: LocalCluster, node: string, prefix: string, n: number): Promise<void> {
  await c.query(node, `INSERT INTO t SELECT $1 || g, g FROM generate_series(1, $2::int) g`, [prefix, n]);
}

/** Waits until a and b hold the same rows, and returns their row count. */
async function survivorsConverge(c: LocalCluster): Promise<number> {
  let rows = -1;
  await eventually(
    'a and b converge',
    async () => {
      const [a, b] = await Promise.all([c.tableHash('a', 'public', 't'), c.tableHash('b', 'public', 't')]);
      rows = a.rows;
      return a.rows === b.rows && a.md5 === b.md5;
    },
    60_000,
  );
  return rows;
}

async function startAll(c: LocalCluster): Promise<void> {
  await c.setupAll();
  for (const n of ['a', 'b', 'x']) await c.startAgent(n);
  for (const n of ['a', 'b', 'x']) await insert(c, n, `${n}-before-`, 20);
  const hashes = await c.waitConverged('public', 't', 60_000);
  expect([...hashes.values()].map((h) => h.rows)).toEqual([60, 60, 60]);
}

function linkOf(c: LocalCluster, node: string, peer: string) {
  const link = c.agents
    .get(node)
    ?.status()
    .find((l) => l.peer === peer);
  if (!link) throw new Error(`no link ${node}<-${peer}`);
  return link;
}

describe.each(availableServerVersions())('part ($label)', ({ binDir }) => {
  describe('run on the leaving node', () => {
    const cluster = useCluster(() => ({ binDir, nodes: ['a', 'b', 'x'], schema: SCHEMA }));

    it("waits for x's last changes, drops every slot and origin of x, and the survivors go on", async () => {
      const c = cluster.get();
      await startAll(c);
      // b's agent is down: b cannot confirm x's last changes, so part stops before dropping anything.
      await c.stopAgent('b');
      await insert(c, 'x', 'x-last-', 200);
      await expect(partNode(c.config('x'), { waitTimeoutMs: 3000 })).rejects.toThrow(/peer b has not confirmed x's changes up to .*nothing was dropped/s);
      expect(await objectsOf(c, 'b', 'x')).toEqual(['origin pgbidi_x', 'slot pgbidi_b_to_x']);
      expect(await objectsOf(c, 'x', 'x')).toEqual(['slot pgbidi_x_to_a', 'slot pgbidi_x_to_b']);
      await c.startAgent('b');
      // Written just before part, while x's agent still runs: part must wait until a and b have them.
      const report = await partNode(c.config('x'), { waitTimeoutMs: 60_000 });

      expect(report.nodes.map((n) => [n.node, n.error])).toEqual([
        ['a', null],
        ['b', null],
        ['x', null],
      ]);
      expect(report.nodes.find((n) => n.node === 'a')?.dropped).toEqual(['slot pgbidi_a_to_x', 'origin pgbidi_x']);
      expect(report.nodes.find((n) => n.node === 'x')?.dropped).toEqual([
        'slot pgbidi_x_to_a',
        'slot pgbidi_x_to_b',
        'origin pgbidi_a',
        'origin pgbidi_b',
        'publication pgbidi',
        'schema pgbidi (with 2 tombstone triggers)',
      ]);
      for (const n of ['a', 'b']) {
        const got = await c.query<{ n: number }>(n, `SELECT count(*)::int AS n FROM t WHERE id LIKE 'x-last-%'`);
        expect(got[0]?.n, `x's last rows on ${n}`).toBe(200);
      }

      // Every agent that still lists the other side stops that link for good, with the reason.
      await eventually('links to and from x parted', () =>
        [linkOf(c, 'a', 'x'), linkOf(c, 'b', 'x'), linkOf(c, 'x', 'a'), linkOf(c, 'x', 'b')].every((l) => l.state === 'parted'),
      );
      expect(linkOf(c, 'a', 'x').lastError?.message).toContain('peer x left the group (pgbidi part by x');
      expect(linkOf(c, 'a', 'x').lastError?.code).toBe('PGBIDI_PEER_PARTED');
      expect(linkOf(c, 'x', 'a').lastError?.message).toContain('this node (x) left the group');

      // An agent restarted with a config that still lists x re-creates nothing of x's.
      await c.stopAgent('a');
      await c.startAgent('a');
      await eventually(
        'restarted link from x parted, from b streaming',
        () => linkOf(c, 'a', 'x').state === 'parted' && linkOf(c, 'a', 'b').state === 'streaming',
      );
      const ready = await fetch(`http://${c.agents.get('a')?.httpAddress}/readyz`);
      expect(ready.status, 'a parted link does not make the node unready').toBe(200);
      for (const n of ['a', 'b', 'x']) expect(await objectsOf(c, n, 'x'), `objects of x on ${n}`).toEqual([]);
      const pgbidiSchema = await c.query<{ n: number }>('x', `SELECT count(*)::int AS n FROM pg_namespace WHERE nspname = 'pgbidi'`);
      expect(pgbidiSchema[0]?.n).toBe(0);

      await c.stopAgent('x');
      await insert(c, 'a', 'a-after-', 30);
      await insert(c, 'b', 'b-after-', 30);
      expect(await survivorsConverge(c)).toBe(60 + 200 + 60);
      const xRows = await c.query<{ n: number }>('x', `SELECT count(*)::int AS n FROM t WHERE id LIKE '%-after-%'`);
      expect(xRows[0]?.n, 'x receives nothing after it left').toBe(0);

      // x comes back: set up again with a and b listed, then a's setup forgets the record.
      await setupNode(c.config('x'));
      const back = await setupNode(c.config('a'));
      expect(back.notes.join(' ')).toContain('peer x had parted');
      expect(await objectsOf(c, 'a', 'x')).toEqual(['origin pgbidi_x', 'slot pgbidi_a_to_x']);
    });
  });

  describe('run on a survivor when x is gone for good', () => {
    const cluster = useCluster(() => ({ binDir, nodes: ['a', 'b', 'x'], schema: SCHEMA }));
    const dir = mkdtempSync(join(tmpdir(), 'pgbidi-part-'));
    afterAll(() => rmSync(dir, { recursive: true, force: true }));

    it("drops x's slots and origins on every survivor, and a and b go on replicating", async () => {
      const c = cluster.get();
      await startAll(c);
      await c.stopAgent('x');
      await c.server('x').destroy();
      const file = join(dir, 'a.yaml');
      writeFileSync(file, JSON.stringify(c.rawConfig('a')));
      const out: string[] = [];
      const err: string[] = [];
      const code = await main(['part', '--config', file, '--node', 'x'], { out: (s) => out.push(s), err: (s) => err.push(s) });
      expect(err.join('')).toBe('');
      expect(code).toBe(0);
      const text = out.join('');
      expect(text).toContain('node x parted');
      expect(text).toContain('a: dropped slot pgbidi_a_to_x, origin pgbidi_x');
      expect(text).toContain('b: dropped slot pgbidi_b_to_x, origin pgbidi_x');
      expect(text).toContain('next: remove x from peers in the configs of a, b');

      for (const n of ['a', 'b']) expect(await objectsOf(c, n, 'x'), `objects of x on ${n}`).toEqual([]);
      await eventually('links from x parted', () => linkOf(c, 'a', 'x').state === 'parted' && linkOf(c, 'b', 'x').state === 'parted');
      await insert(c, 'a', 'a-after-', 30);
      await insert(c, 'b', 'b-after-', 30);
      expect(await survivorsConverge(c)).toBe(60 + 60);

      // Running it again finds nothing left; setup with a stale config that still lists x refuses
      // to give x its slot back (x is not set up again with b listed).
      const again = await partNode(c.config('a'), { node: 'x' });
      expect(again.nodes.map((n) => n.dropped.length)).toEqual([0, 0]);
      await expect(setupNode(c.config('b'))).rejects.toThrow(
        /peer x left the group \(pgbidi part by a at .*\): remove it from peers; to take it back, run 'pgbidi setup' on x first/,
      );
      expect(await objectsOf(c, 'b', 'x')).toEqual([]);
    });
  });
});
