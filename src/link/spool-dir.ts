import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';

/**
 * The directories streamed transactions are spooled in (stream-spool.ts): one per spool, made with
 * mkdtemp in the OS temp dir (or the parent a test gives), and removed when its link's attempt
 * ends. An agent killed (SIGKILL, OOM, a crash) cannot remove its own, and what it spooled can be as
 * large as the largest transaction a peer streams: so each directory names its owner (host and
 * process id, in OWNER_FILE), and a spool that makes a new directory first removes those of owners
 * that are gone. Another user's directories, another host's (a temp dir shared between containers)
 * and any directory without an owner are left alone.
 */

export const SPOOL_DIR_PREFIX = 'pgbidi-stream-';
export const OWNER_FILE = 'owner';

/** Whether process `pid` exists on this host (kill 0: ESRCH is gone, EPERM is someone else's). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}

/** Parses an owner file: `<host> <pid>`. */
export function parseOwner(text: string): { readonly host: string; readonly pid: number } | null {
  const m = /^(\S+) ([1-9][0-9]*)\n?$/.exec(text);
  return m?.[1] && m[2] ? { host: m[1], pid: Number(m[2]) } : null;
}

/** Removes the spool directories in `parent` whose owner process is gone; returns their paths. */
export function removeOrphanSpoolDirs(parent: string, alive: (pid: number) => boolean = processAlive, host: string = hostname()): string[] {
  const uid = process.getuid?.();
  const removed: string[] = [];
  let names: string[];
  try {
    names = readdirSync(parent).filter((n) => n.startsWith(SPOOL_DIR_PREFIX));
  } catch {
    return removed;
  }
  for (const name of names) {
    const dir = join(parent, name);
    try {
      const st = statSync(dir);
      if (!st.isDirectory() || (uid !== undefined && st.uid !== uid)) continue;
      const owner = parseOwner(readFileSync(join(dir, OWNER_FILE), 'utf8'));
      if (!owner || owner.host !== host || alive(owner.pid)) continue;
      rmSync(dir, { recursive: true, force: true });
      removed.push(dir);
    } catch {
      // Gone meanwhile, no owner file, not ours to read: not an orphan this spool can tell.
    }
  }
  return removed;
}

/** A new spool directory in `parent`, marked with this process as its owner, after removing orphans. */
export function makeSpoolDir(parent: string): string {
  removeOrphanSpoolDirs(parent);
  const dir = mkdtempSync(join(parent, SPOOL_DIR_PREFIX));
  writeFileSync(join(dir, OWNER_FILE), `${hostname()} ${process.pid}\n`, { mode: 0o600 });
  return dir;
}
