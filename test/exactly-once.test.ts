import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { stringify } from 'yaml';
import { afterAll, describe, expect, it } from 'vitest';
import { AgentProcess } from './support/agent-process.js';
import { availableServerVersions } from './support/pg-versions.js';
import { eventually, sleep, useCluster } from './support/cluster-fixture.js';

describe.each(availableServerVersions())('exactly-once apply across agent crashes on $label', ({ binDir }) => {
  const cluster = useCluster(() => ({
    binDir,
    nodes: ['a', 'b'],
    schema: [
      // No key at all: a change applied twice would show up as an extra row.
      `CREATE TABLE events (node text, seq bigint, payload text)`,
      `ALTER TABLE events REPLICA IDENTITY FULL`,
      `CREATE TABLE counters (id int PRIMARY KEY, n bigint NOT NULL)`,
      `INSERT INTO counters SELECT g, 0 FROM generate_series(1, 20) g`,
    ],
  }));
  const dir = mkdtempSync(join(tmpdir(), 'pgbidi-eo-'));
  const agents: AgentProcess[] = [];
  afterAll(() => {
    for (const a of agents) void a.kill9();
    rmSync(dir, { recursive: true, force: true });
  });

  it('applies every change once while the applying agent is killed with SIGKILL 5 times', async () => {
    const c = cluster.get();
    // The counters table differs per node at start; only a writes to it, b must follow a exactly.
    await c.query('b', 'UPDATE counters SET n = 0');
    await c.setupAll();
    for (const n of ['a', 'b']) {
      const raw = c.rawConfig(n, '127.0.0.1:0');
      writeFileSync(join(dir, `${n}.yaml`), stringify({ ...raw, log: { level: 'warn' } }));
      const agent = new AgentProcess(join(dir, `${n}.yaml`));
      agent.start();
      agents.push(agent);
    }
    const agentB = agents[1] as AgentProcess;

    const stopAt = Date.now() + 15_000;
    const writer = (async () => {
      const client = new pg.Client({ connectionString: c.dsn('a') });
      await client.connect();
      let seq = 0;
      try {
        while (Date.now() < stopAt) {
          const rows = 1 + Math.floor(Math.random() * 20);
          await client.query('BEGIN');
          await client.query(`INSERT INTO events SELECT 'a', $1 + g, md5(g::text) FROM generate_series(1, $2) g`, [seq, rows]);
          await client.query('UPDATE counters SET n = n + 1 WHERE id = $1', [1 + (seq % 20)]);
          await client.query('COMMIT');
          seq += rows;
        }
      } finally {
        await client.end();
      }
      return seq;
    })();

    for (let i = 0; i < 5; i++) {
      await sleep(800 + Math.random() * 1500);
      await agentB.kill9();
      await sleep(200 + Math.random() * 400);
      agentB.start();
    }
    const written = await writer;
    expect(written).toBeGreaterThan(500);
    const [afterWrites] = await c.query<{ lsn: string }>('a', 'SELECT pg_current_wal_lsn()::text AS lsn');

    await eventually(
      'b to apply every event',
      async () => (await c.query<{ n: number }>('b', 'SELECT count(*)::int AS n FROM events'))[0]?.n === written,
      60_000,
    );
    await sleep(1500); // a duplicate would arrive after the count first matches
    for (const table of ['events', 'counters']) {
      const ha = await c.tableHash('a', 'public', table);
      expect(await c.tableHash('b', 'public', table)).toEqual(ha);
    }
    const [count] = await c.query<{ n: number; distinct: number }>('b', 'SELECT count(*)::int AS n, count(DISTINCT seq)::int AS distinct FROM events');
    expect(count).toEqual({ n: written, distinct: written });
    expect(agentB.exits.filter((e) => e.signal === 'SIGKILL').length).toBeGreaterThanOrEqual(5);

    // SIGTERM drains and exits 0.
    for (const a of agents) expect((await a.terminate()).code).toBe(0);
    // b's final feedback confirmed everything it applied: the slot on a retains nothing written before.
    const [slot] = await c.query<{ covered: boolean }>(
      'a',
      `SELECT confirmed_flush_lsn >= $1::pg_lsn AS covered FROM pg_replication_slots WHERE slot_name = 'pgbidi_a_to_b'`,
      [afterWrites?.lsn],
    );
    expect(slot).toEqual({ covered: true });
  });
});
