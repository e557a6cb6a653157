import { describe, expect, it } from 'vitest';
import { availableServerVersions } from './support/pg-versions.js';
import { eventually, useCluster } from './support/cluster-fixture.js';
import { GrowingGroup, Writer } from './support/join-fixture.js';
import { identical } from '../src/testbed/local-cluster.js';
import { main } from '../src/cli.js';
import { setupNode } from '../src/node/setup-node.js';
import { parseConfig } from '../src/config/load-config.js';

const NODES = ['a', 'b', 'c'];
const ROWS = 3000;

async function run(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await main(argv, { out: (s) => (out += s), err: (s) => (err += s) });
  return { code, out, err };
}

describe.each(availableServerVersions())('pgbidi ddl and schema drift on $label', ({ binDir }) => {
  const cluster = useCluster(() => ({
    binDir,
    nodes: NODES,
    schema: [
      'CREATE TABLE items (id bigint PRIMARY KEY, v int NOT NULL, note text)',
      `INSERT INTO items SELECT g, 0, 'seed' FROM generate_series(0, ${ROWS - 1}) g`,
    ],
  }));

  it('adds a column on every node under writes; the nodes converge with it; setup names a drift', async () => {
    const c = cluster.get();
    const group = new GrowingGroup(c);
    const writers: Writer[] = [];
    try {
      for (const n of NODES) await setupNode(parseConfig(group.rawConfig(n, NODES), {}, n));
      for (const n of NODES) await group.startAgent(n, NODES);
      NODES.forEach((n, i) => writers.push(new Writer(c.dsn(n), i, NODES.length, ROWS, 1_000_000)));
      await new Promise((r) => setTimeout(r, 1500));

      const ddl = await run(['ddl', '--config', group.configFile('a', NODES), `ALTER TABLE items ADD COLUMN extra text NOT NULL DEFAULT 'none'`]);
      console.log(ddl.out, ddl.err);
      expect(ddl.err).toBe('');
      expect(ddl.code).toBe(0);
      for (const n of NODES) expect(ddl.out).toContain(`  ${n}: committed (ALTER)`);
      expect(ddl.out).not.toMatch(/schema still differs/);

      // Every node writes the new column on rows of its own; the others receive it.
      for (const [i, n] of NODES.entries()) {
        await c.query(n, `UPDATE items SET extra = $1 WHERE id % 3 = $2 AND id < 300`, [`from ${n}`, i]);
      }
      await new Promise((r) => setTimeout(r, 1500));
      await Promise.all(writers.map((w) => w.stop()));
      expect(writers.every((w) => w.operations > 0)).toBe(true);
      await eventually(
        'items identical with the new column on every node',
        async () => {
          const hashes = new Map<string, { rows: number; md5: string }>();
          for (const n of NODES) hashes.set(n, await c.tableHash(n, 'public', 'items'));
          return identical(hashes);
        },
        120_000,
      );
      // Rows below 300 that the writers did not delete carry the value their residue's node wrote.
      for (const n of NODES) {
        const r = await c.query<{ right: number; wrong: number }>(
          n,
          `SELECT count(*) FILTER (WHERE extra = 'from ' || (ARRAY['a', 'b', 'c'])[id % 3 + 1])::int AS right,
                  count(*) FILTER (WHERE extra IS DISTINCT FROM 'from ' || (ARRAY['a', 'b', 'c'])[id % 3 + 1])::int AS wrong
             FROM items WHERE id < 300`,
        );
        expect(r[0]?.wrong).toBe(0);
        expect(r[0]?.right).toBeGreaterThan(250);
      }

      // A statement that fails on one node is rolled back on all of them.
      await c.query('c', 'ALTER TABLE items ADD COLUMN blocker int');
      const failed = await run(['ddl', '--config', group.configFile('a', NODES), 'ALTER TABLE items ADD COLUMN blocker int']);
      expect(failed.code).toBe(1);
      expect(failed.out).toMatch(/c: failed \(statement failed: .*blocker.* \[42701\]\)/);
      expect(failed.err).toMatch(/rolled back on every node/);
      for (const n of ['a', 'b']) {
        const cols = await c.query(n, `SELECT 1 FROM pg_attribute WHERE attrelid = 'items'::regclass AND attname = 'blocker'`);
        expect(cols).toEqual([]);
      }

      // Drift: setup names the table and the column, with both sides.
      const setup = await run(['setup', '--config', group.configFile('a', NODES)]);
      expect(setup.code).toBe(0);
      expect(setup.out).toContain('note: schema differs from c: public.items.blocker (integer) exists on c but not on a');
      expect(setup.out).not.toContain('schema differs from b');

      // At run time: the agent's check names it in /status and counts it in the metric.
      const agent = group.agents.get('a');
      if (!agent) throw new Error('no agent a');
      await agent.schema.check();
      const status = (await (await fetch(`http://${agent.httpAddress}/status`)).json()) as {
        schemaDifferences: { peer: string; table: string; column: string; description: string }[];
      };
      expect(status.schemaDifferences.map((d) => [d.peer, d.table, d.column, d.description])).toEqual([
        ['c', 'public.items', 'blocker', 'public.items.blocker (integer) exists on c but not on a'],
      ]);
      const metrics = await (await fetch(`http://${agent.httpAddress}/metrics`)).text();
      expect(metrics).toContain('pgbidi_schema_differences{peer="b"} 0');
      expect(metrics).toContain('pgbidi_schema_differences{peer="c"} 1');
    } finally {
      await Promise.all(writers.map((w) => w.stop().catch(() => 0)));
      await group.stop();
    }
  }, 600_000);
});
