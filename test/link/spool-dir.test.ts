import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { OWNER_FILE, parseOwner, processAlive, removeOrphanSpoolDirs, SPOOL_DIR_PREFIX } from '../../src/link/spool-dir.js';
import { StreamSpool } from '../../src/link/stream-spool.js';
import { tempDir } from '../support/temp-dir.js';

/** The pid of a process that has exited. */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  return Number(r.stdout);
}

function spoolDir(parent: string, name: string, owner: string | null): string {
  const dir = join(parent, `${SPOOL_DIR_PREFIX}${name}`);
  mkdirSync(dir);
  writeFileSync(join(dir, '1-1'), 'spooled bytes');
  if (owner !== null) writeFileSync(join(dir, OWNER_FILE), owner);
  return dir;
}

describe('spool directories', () => {
  it('parses an owner file and tells a live process from a gone one', () => {
    expect(parseOwner('node-a 1234\n')).toEqual({ host: 'node-a', pid: 1234 });
    expect(parseOwner('node-a 0\n')).toBeNull();
    expect(parseOwner('1234\n')).toBeNull();
    expect(processAlive(process.pid)).toBe(true);
    expect(processAlive(deadPid())).toBe(false);
  });

  it('a new spool removes the directories of agents that are gone, and only those', () => {
    const parent = tempDir('pgbidi-spooldir-');
    const here = hostname();
    const gone = spoolDir(parent, 'gone', `${here} ${deadPid()}\n`);
    const live = spoolDir(parent, 'live', `${here} ${process.pid}\n`);
    const elsewhere = spoolDir(parent, 'elsewhere', `another-host ${deadPid()}\n`);
    const unowned = spoolDir(parent, 'unowned', null);
    const other = join(parent, 'something-else');
    mkdirSync(other);

    const spool = new StreamSpool(parent);
    spool.start({ tag: 'stream-start', xid: 7, first: true });
    expect(existsSync(gone)).toBe(false);
    for (const kept of [live, elsewhere, unowned, other]) expect(existsSync(kept)).toBe(true);
    const made = readdirSync(parent).filter((n) => n.startsWith(SPOOL_DIR_PREFIX) && ![live, elsewhere, unowned].includes(join(parent, n)));
    expect(made).toHaveLength(1);
    expect(parseOwner(readFileSync(join(parent, made[0] ?? '', OWNER_FILE), 'utf8'))).toEqual({ host: here, pid: process.pid });
    spool.stop();
    spool.reset();
    expect(readdirSync(parent).sort()).toEqual([`${SPOOL_DIR_PREFIX}elsewhere`, `${SPOOL_DIR_PREFIX}live`, `${SPOOL_DIR_PREFIX}unowned`, 'something-else']);
  });

  it('asks the liveness check about each owner on this host', () => {
    const parent = tempDir('pgbidi-spooldir-');
    spoolDir(parent, 'a', 'h 11\n');
    spoolDir(parent, 'b', 'h 12\n');
    const asked: number[] = [];
    const removed = removeOrphanSpoolDirs(parent, (pid) => (asked.push(pid), pid === 12), 'h');
    expect(asked.sort()).toEqual([11, 12]);
    expect(removed).toEqual([join(parent, `${SPOOL_DIR_PREFIX}a`)]);
  });
});
