import { mkdir, mkdtemp, readdir, readFile, readlink, rm, stat, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { freePort, isPortFree } from '../src/pg-server/free-port.js';
import { ensureServerUser } from '../src/pg-server/os-user.js';
import { hydrateSymlinks } from '../src/pg-server/postgres-binaries.js';
import { PostgresServer, PostgresServerError, SERVER_LOG, stopAllServers } from '../src/pg-server/postgres-server.js';
import { eventually } from './support/cluster-fixture.js';
import { availableServerVersions } from './support/pg-versions.js';

afterAll(stopAllServers);

interface ProcessInfo {
  pid: number;
  ppid: number;
  argv: string[];
}

/** Live (non-zombie) processes, from /proc. */
async function liveProcesses(): Promise<ProcessInfo[]> {
  const found: ProcessInfo[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const statLine = await readFile(`/proc/${entry}/stat`, 'utf8');
      const [state, ppid] = statLine.slice(statLine.lastIndexOf(')') + 2).split(' ');
      if (state === 'Z') continue;
      const argv = (await readFile(`/proc/${entry}/cmdline`, 'utf8')).split('\0');
      found.push({ pid: Number(entry), ppid: Number(ppid), argv });
    } catch {
      // the process exited while we looked
    }
  }
  return found;
}

/** The postmaster and its children (backends rename themselves, so cmdline alone misses them). */
async function serverFamily(server: PostgresServer): Promise<number[]> {
  const children = (await liveProcesses()).filter((p) => p.ppid === server.pid).map((p) => p.pid);
  return [server.pid, ...children];
}

/** Pids still alive among `family`, or running `postgres -D <dataDir>`. */
async function leftovers(dataDir: string, family: number[]): Promise<number[]> {
  return (await liveProcesses()).filter((p) => family.includes(p.pid) || p.argv.includes(dataDir)).map((p) => p.pid);
}

describe.each(availableServerVersions())('PostgresServer on $label', ({ label, binDir }) => {
  const expectedMajor = label === 'pg15' ? 15 : 18;

  it('starts with the replication settings, owned by the server user, and keeps data across restart', async () => {
    const server = await PostgresServer.start({ binDir, name: label });
    try {
      expect(Math.floor(server.versionNum / 10_000)).toBe(expectedMajor);
      expect(server.host).toBe('127.0.0.1');
      expect(path.basename(server.dataDir)).toMatch(/^pgbidi-pg-/);
      const [settings] = await server.query<{ wal_level: string; tct: string; slots: string }>(
        "select current_setting('wal_level') as wal_level, current_setting('track_commit_timestamp') as tct, " +
          "current_setting('max_replication_slots') as slots",
      );
      expect(settings).toEqual({ wal_level: 'logical', tct: 'on', slots: '20' });

      const user = await ensureServerUser();
      const owner = (await stat(server.dataDir)).uid;
      expect(owner).toBe(user ? user.uid : process.getuid?.());
      if (user) expect(owner).not.toBe(0);

      await server.createDatabase('app "db"');
      await server.query('create table t (id int primary key, v text)', [], 'app "db"');
      await server.query('insert into t values ($1, $2)', [1, 'kept'], 'app "db"');
      const { port, pid } = server;
      await server.restart();
      expect(server.port).toBe(port);
      expect(server.pid).not.toBe(pid);
      expect(await server.query('select v from t', [], 'app "db"')).toEqual([{ v: 'kept' }]);
    } finally {
      await server.destroy();
    }
  });

  it('recovers committed data after kill(), and destroy() leaves no process or directory behind', async () => {
    const server = await PostgresServer.start({ binDir, settings: { max_connections: 30 } });
    const dataDir = server.dataDir;
    let recovered: PostgresServer | undefined;
    try {
      expect(await server.query("select current_setting('max_connections') as n")).toEqual([{ n: '30' }]);
      await server.query('create table crash (id int)');
      await server.query('insert into crash select generate_series(1, 1000)');
      const crashed = await serverFamily(server);
      expect(crashed.length).toBeGreaterThan(3); // checkpointer, walwriter, ... were found
      await server.kill();
      expect(server.running).toBe(false);
      expect(await leftovers(dataDir, crashed)).toEqual([]);

      // A second instance on the same (caller-owned) data dir runs crash recovery.
      recovered = await PostgresServer.start({ binDir, dataDir });
      expect(recovered.port).not.toBe(0);
      expect(await recovered.query('select count(*)::int as n from crash')).toEqual([{ n: 1000 }]);
      const recoveredFamily = await serverFamily(recovered);
      await recovered.destroy();
      expect(existsSync(dataDir)).toBe(true); // not a temp dir of *this* instance: kept
      expect(await leftovers(dataDir, recoveredFamily)).toEqual([]);
    } finally {
      await recovered?.destroy();
      await server.destroy();
    }
    expect(existsSync(dataDir)).toBe(false);
    expect(await leftovers(dataDir, [])).toEqual([]);
  });
});

describe('PostgresServer startup failures', () => {
  const [{ binDir } = { binDir: '' }] = availableServerVersions().slice(-1);

  it('fails fast with the server log when postgres cannot start', async () => {
    const started = Date.now();
    const error: unknown = await PostgresServer.start({ binDir, settings: { no_such_setting: 1 } }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PostgresServerError);
    expect((error as PostgresServerError).code).toBe('PG_START_FAILED');
    expect((error as PostgresServerError).message).toContain('no_such_setting');
    expect(Date.now() - started).toBeLessThan(30_000);
  });

  it("writes the postmaster's output to its log file, or to onLog when one is given", async () => {
    const seen: string[] = [];
    const [quiet, listened] = await Promise.all([PostgresServer.start({ binDir }), PostgresServer.start({ binDir, onLog: (line) => seen.push(line) })]);
    try {
      for (const server of [quiet, listened]) await server.query(`DO $$ BEGIN RAISE LOG 'pgbidi marker %', ${server.port}; END $$`);
      const marker = (server: PostgresServer): string => `pgbidi marker ${server.port}`;
      // The backend writes its log line before the statement returns; a pipe is read later.
      expect(quiet.recentLog.some((l) => l.includes(marker(quiet)))).toBe(true);
      expect(await readFile(path.join(quiet.dataDir, SERVER_LOG), 'utf8')).toContain(marker(quiet));
      await eventually('the marker on onLog', () => seen.some((l) => l.includes(marker(listened))), 5_000);
      expect(listened.recentLog.some((l) => l.includes(marker(listened)))).toBe(true);
      expect(existsSync(path.join(listened.dataDir, SERVER_LOG))).toBe(false);
    } finally {
      await Promise.all([quiet.destroy(), listened.destroy()]);
    }
  });

  it('fails on a taken fixed port even though another server answers there', async () => {
    const other = await PostgresServer.start({ binDir });
    try {
      const error: unknown = await PostgresServer.start({ binDir, port: other.port }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(PostgresServerError);
      expect((error as PostgresServerError).code).toBe('PG_START_FAILED');
      expect(await other.query('select 1 as ok')).toEqual([{ ok: 1 }]);
    } finally {
      await other.destroy();
    }
  });
});

describe('freePort', () => {
  it('returns a port that can be bound', async () => {
    const port = await freePort();
    expect(port).toBeGreaterThan(0);
    expect(await isPortFree(port)).toBe(true);
  });
});

describe('hydrateSymlinks', () => {
  it('creates missing relative links once and tolerates existing ones', async () => {
    const root = await mkdtemp(path.join(tmpdir(), 'pgbidi-hydrate-'));
    try {
      await mkdir(path.join(root, 'native', 'lib'), { recursive: true });
      await writeFile(path.join(root, 'native', 'lib', 'libx.so.1.2'), 'x');
      const list = [
        { source: 'native/lib/libx.so.1.2', target: 'native/lib/libx.so.1' },
        { source: 'native/lib/libx.so.1.2', target: 'native/lib/libx.so' },
      ];
      await writeFile(path.join(root, 'native', 'pg-symlinks.json'), JSON.stringify(list));
      expect(hydrateSymlinks(root)).toBe(2);
      expect(hydrateSymlinks(root)).toBe(0);
      expect(await readlink(path.join(root, 'native', 'lib', 'libx.so'))).toBe('libx.so.1.2');
      expect(await readFile(path.join(root, 'native', 'lib', 'libx.so.1'), 'utf8')).toBe('x');
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});
