import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import type { LocalCluster } from '../src/testbed/local-cluster.js';
import { AgentProcess } from './support/agent-process.js';
import { eventually, sleep, useCluster } from './support/cluster-fixture.js';
import { availableServerVersions } from './support/pg-versions.js';

/**
 * Big inputs (README "Bad input"): a 100 MB bytea value, a 1,000-column table, 1,000 replicated
 * tables, and a transaction that stays open on the source while others commit around it. Each must
 * arrive whole on the other node. The issue asks for a 10-minute transaction; the test holds it
 * LONG_TRANSACTION_SECONDS (raise it, or set PGBIDI_LONG_TRANSACTION_SECONDS, for the long run).
 */
const LONG_TRANSACTION_SECONDS = Number(process.env['PGBIDI_LONG_TRANSACTION_SECONDS'] ?? 25);
const VALUE_BYTES = 100 * 1024 * 1024;
const WIDE_COLUMNS = 1000;
const TABLES = 1000;
/**
 * Single-table transactions on distinct tables, each the first use of its table by the apply
 * procedure (a redefinition): about 3 a second on the 2-core development machine under load, so the
 * test sends them to the first PER_TABLE_TRANSACTIONS tables; raise it to TABLES for the full run.
 */
const PER_TABLE_TRANSACTIONS = Number(process.env['PGBIDI_PER_TABLE_TRANSACTIONS'] ?? 100);

const versions = availableServerVersions();
const pg18 = versions.filter((v) => v.label === 'pg18');

/** Peak resident memory of a process in MiB (VmHWM), from /proc. */
function peakRssMiB(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

async function sameContent(c: LocalCluster, sql: string, timeoutMs: number): Promise<unknown> {
  let last: unknown[] = [];
  await eventually(
    `both nodes answer the same to ${sql.slice(0, 60)}`,
    async () => {
      last = await Promise.all(['a', 'b'].map(async (n) => (await c.query(n, sql))[0]));
      return JSON.stringify(last[0]) === JSON.stringify(last[1]);
    },
    timeoutMs,
  );
  return last[0];
}

describe.each(pg18)('a 100 MB bytea value on $label', ({ binDir }) => {
  const cluster = useCluster(() => ({ binDir, nodes: ['a', 'b'], schema: [`CREATE TABLE blobs (id int PRIMARY KEY, note text, data bytea)`] }));
  const dir = mkdtempSync(join(tmpdir(), 'pgbidi-big-'));
  const agents: AgentProcess[] = [];
  afterAll(async () => {
    await Promise.all(agents.map((a) => a.kill9()));
    rmSync(dir, { recursive: true, force: true });
  });

  it('replicates it whole, then an update of another column that leaves it unchanged (TOAST)', async () => {
    const c = cluster.get();
    await c.setupAll();
    for (const n of ['a', 'b']) {
      writeFileSync(join(dir, `${n}.yaml`), stringify({ ...c.rawConfig(n), log: { level: 'warn' } }));
      const agent = new AgentProcess(join(dir, `${n}.yaml`));
      agent.start();
      agents.push(agent);
    }
    const receiver = agents[1] as AgentProcess;
    // Incompressible bytes (sha256 blocks), so that the value is stored and sent at full size.
    await c.query('a', `INSERT INTO blobs SELECT 1, 'first', string_agg(sha256(g::text::bytea), ''::bytea ORDER BY g) FROM generate_series(1, $1::int) g`, [
      VALUE_BYTES / 32,
    ]);
    const fingerprint = `SELECT id, note, length(data) AS bytes, md5(data) AS md5 FROM blobs ORDER BY id`;
    const [onA] = await c.query(`a`, fingerprint);
    expect(onA).toMatchObject({ id: 1, bytes: VALUE_BYTES });
    expect(await sameContent(c, fingerprint, 300_000)).toEqual(onA);
    await c.query('a', `UPDATE blobs SET note = 'second' WHERE id = 1`);
    expect(await sameContent(c, fingerprint, 120_000)).toMatchObject({ note: 'second', bytes: VALUE_BYTES, md5: (onA as { md5: string }).md5 });
    const pid = receiver.pid;
    expect(pid).toBeDefined();
    // For the report: how much memory the receiving agent needed for the value (text form: 2 hex digits a byte).
    console.info(`100 MB bytea: peak RSS of the receiving agent ${peakRssMiB(pid as number).toFixed(0)} MiB`);
    expect(receiver.exits).toEqual([]);
  }, 600_000);
});

describe.each(versions)('a 1,000-column table on $label', ({ binDir }) => {
  const columns = Array.from({ length: WIDE_COLUMNS - 1 }, (_, i) => `c${i + 1}`);
  const cluster = useCluster(() => ({
    binDir,
    nodes: ['a', 'b'],
    // int columns: 1,000 text values would not fit in one 8 kB heap page ("row is too big").
    schema: [`CREATE TABLE wide (id int PRIMARY KEY, ${columns.map((c, i) => `${c} ${i === 0 ? 'text' : 'int'}`).join(', ')})`],
  }));

  it('replicates small and large transactions, updates and deletes of it', async () => {
    const c = cluster.get();
    await c.setupAll();
    await c.startAgent('a');
    await c.startAgent('b');
    const row = (id: number): string =>
      `(${id}, 'row ${id}', ${columns
        .slice(1)
        .map((_, i) => id * 1000 + i)
        .join(', ')})`;
    // A few small transactions (the apply procedure), then one of 300 rows (the statements).
    for (let id = 1; id <= 3; id++) await c.query('a', `INSERT INTO wide VALUES ${row(id)}`);
    await c.query(
      'a',
      `INSERT INTO wide SELECT g, 'row ' || g, ${columns
        .slice(1)
        .map((_, i) => `g * 1000 + ${i}`)
        .join(', ')} FROM generate_series(100, 399) g`,
    );
    const inserted = await c.waitConverged('public', 'wide', 120_000);
    expect(inserted.get('b')).toEqual(inserted.get('a'));
    expect(inserted.get('b')?.rows).toBe(303);
    await c.query('b', `UPDATE wide SET c1 = 'changed on b', c500 = -1, c999 = NULL WHERE id IN (2, 150)`);
    await c.query('b', `DELETE FROM wide WHERE id = 3`);
    const hashes = await c.waitConverged('public', 'wide', 120_000);
    expect(hashes.get('a')).toEqual(hashes.get('b'));
    expect(hashes.get('a')?.rows).toBe(302);
    expect(await c.query('a', `SELECT c1, c500, c999, c998 FROM wide WHERE id = 150`)).toEqual([
      { c1: 'changed on b', c500: -1, c999: null, c998: 150 * 1000 + 996 },
    ]);
  }, 300_000);
});

describe.each(pg18)('1,000 replicated tables on $label', ({ binDir }) => {
  const cluster = useCluster(() => ({
    binDir,
    nodes: ['a', 'b'],
    schema: [
      `DO $$ BEGIN FOR i IN 1..${TABLES} LOOP EXECUTE format('CREATE TABLE t%s (id int PRIMARY KEY, v text)', i); END LOOP; END $$`,
      // The content of every table in one text, to compare the nodes.
      `CREATE FUNCTION all_rows() RETURNS text LANGUAGE plpgsql AS $$
         DECLARE out text := ''; part text;
         BEGIN
           FOR i IN 1..${TABLES} LOOP
             EXECUTE format('SELECT string_agg(id || ''='' || v, '','' ORDER BY id) FROM t%s', i) INTO part;
             out := out || i || ':' || coalesce(part, '') || ';';
           END LOOP;
           RETURN md5(out) || ' ' || length(out);
         END $$`,
    ],
  }));

  it('sets them up, and replicates one transaction that writes to all of them and single-table transactions', async () => {
    const c = cluster.get();
    const t0 = Date.now();
    const phase = (what: string): void => console.info(`${TABLES} tables: ${what} after ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    await c.setupAll();
    phase('setup of both nodes');
    expect(await c.query('a', `SELECT count(*)::int AS n FROM pg_publication_tables WHERE pubname = 'pgbidi'`)).toEqual([{ n: TABLES }]);
    await c.startAgent('a');
    await c.startAgent('b');
    // One transaction across every table (the statements), then one per table (the apply procedure) on b.
    await c.query('a', `DO $$ BEGIN FOR i IN 1..${TABLES} LOOP EXECUTE format('INSERT INTO t%s VALUES (1, ''a'')', i); END LOOP; END $$`);
    const client = new pg.Client({ connectionString: c.dsn('b') });
    await client.connect();
    try {
      for (let i = 1; i <= PER_TABLE_TRANSACTIONS; i++) await client.query(`INSERT INTO t${i} VALUES (2, 'b')`);
    } finally {
      await client.end();
    }
    phase('writes');
    const content = await sameContent(c, `SELECT all_rows() AS fp`, 600_000);
    phase('converged');
    // Each table holds a's row, and b's where b wrote one, on both nodes.
    for (const n of ['a', 'b']) {
      const counts = await c.query<{ bad: number }>(
        n,
        `SELECT count(*)::int AS bad FROM generate_series(1, ${TABLES}) i
          WHERE (xpath('/row/n/text()', query_to_xml(format('SELECT count(*) AS n FROM t%s', i), false, true, '')))[1]::text::int
                <> CASE WHEN i <= ${PER_TABLE_TRANSACTIONS} THEN 2 ELSE 1 END`,
      );
      expect(counts).toEqual([{ bad: 0 }]);
    }
    expect(String((content as { fp: unknown }).fp)).toMatch(/^[0-9a-f]{32} \d+$/);
  }, 900_000);
});

describe.each(versions)('a long transaction on $label', ({ binDir }) => {
  const cluster = useCluster(() => ({
    binDir,
    nodes: ['a', 'b'],
    schema: [`CREATE TABLE long_tx (id int PRIMARY KEY, v text)`, `CREATE TABLE around (id int PRIMARY KEY, node text)`],
  }));

  it(
    `applies a transaction open ${LONG_TRANSACTION_SECONDS} s on the source, while others commit around it and keep arriving`,
    async () => {
      const c = cluster.get();
      await c.setupAll();
      await c.startAgent('a');
      await c.startAgent('b');
      const long = new pg.Client({ connectionString: c.dsn('a') });
      await long.connect();
      try {
        await long.query('BEGIN');
        const started = Date.now();
        let id = 0;
        let around = 0;
        let seenWhileOpen = 0;
        while (Date.now() - started < LONG_TRANSACTION_SECONDS * 1000) {
          await long.query(`INSERT INTO long_tx SELECT g, 'long' FROM generate_series($1::int, $1::int + 99) g`, [id]);
          id += 100;
          // Others commit on both nodes meanwhile.
          await c.query('a', `INSERT INTO around VALUES ($1, 'a')`, [++around]);
          await c.query('b', `INSERT INTO around VALUES ($1, 'b')`, [++around]);
          await sleep(500);
          const [r] = await c.query<{ n: number }>('b', `SELECT count(*)::int AS n FROM around WHERE node = 'a'`);
          seenWhileOpen = r?.n ?? 0;
        }
        // What committed around the open transaction arrived while it was open (the link is not held up).
        expect(seenWhileOpen).toBeGreaterThan(0);
        expect(await c.query('b', `SELECT count(*)::int AS n FROM long_tx`)).toEqual([{ n: 0 }]);
        await long.query('COMMIT');
        const hashes = await c.waitConverged('public', 'long_tx', 120_000);
        expect(hashes.get('b')).toEqual(hashes.get('a'));
        expect(hashes.get('b')?.rows).toBe(id);
        const aroundHashes = await c.waitConverged('public', 'around', 60_000);
        expect(aroundHashes.get('b')).toEqual(aroundHashes.get('a'));
        expect(aroundHashes.get('a')?.rows).toBe(around);
      } finally {
        await long.end();
      }
    },
    (LONG_TRANSACTION_SECONDS + 300) * 1000,
  );
});
