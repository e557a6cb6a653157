/**
 * The published package works from a clean install: `npm pack`, then `npm install <tarball>` in an
 * empty folder (production dependencies from the registry, npm's cache first), then the `pgbidi`
 * bin answers --help and --version and validates a config.
 *
 * The tarball is packed from the dist/ that `npm run build` produced (`npm test` builds first; this
 * file builds when dist/ is missing). It packs with --ignore-scripts so that the `prepare` script
 * does not recompile dist/ underneath test files running in parallel; `npm publish` runs `prepare`.
 */
import { spawnSync } from 'node:child_process';
import type { SpawnSyncReturns } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, normalize } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO } from './support/deploy-files.js';

const INSTALL_TIMEOUT_MS = 180_000;

interface PackageJson {
  readonly name: string;
  readonly version: string;
  readonly bin: Readonly<Record<string, string>>;
  readonly files: readonly string[];
  readonly scripts: Readonly<Record<string, string>>;
}

const pkg = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as PackageJson;

/** The environment without the npm_* variables an outer `npm test` sets, which would steer the inner npm. */
function cleanEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^npm_/i.test(k)));
}

function run(command: string, args: readonly string[], cwd: string, timeout = 60_000): SpawnSyncReturns<string> {
  return spawnSync(command, [...args], { cwd, env: cleanEnv(), encoding: 'utf8', timeout });
}

function output(r: SpawnSyncReturns<string>): string {
  return `exit ${String(r.status)} ${r.error?.message ?? ''}\n${r.stdout}${r.stderr}`;
}

/** Relative module specifiers a file imports (static and dynamic). */
function relativeImports(source: string): string[] {
  const out: string[] = [];
  for (const m of source.matchAll(/(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)['"](\.{1,2}\/[^'"]+)['"]/g)) out.push(m[1] ?? '');
  return out;
}

describe('npm pack', () => {
  let work = '';
  let tarball = '';
  let packed: readonly string[] = [];

  beforeAll(() => {
    if (!existsSync(join(REPO, 'dist/cli.js'))) {
      const build = run('npm', ['run', 'build'], REPO, 120_000);
      expect(build.status, output(build)).toBe(0);
    }
    work = mkdtempSync(join(tmpdir(), 'pgbidi-pack-'));
    const r = run('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', work], REPO, 120_000);
    expect(r.status, output(r)).toBe(0);
    const [info] = JSON.parse(r.stdout) as { filename: string; files: { path: string }[] }[];
    expect(info).toBeDefined();
    tarball = join(work, info?.filename ?? '');
    packed = (info?.files ?? []).map((f) => f.path);
  }, 150_000);

  afterAll(() => {
    if (work !== '') rmSync(work, { recursive: true, force: true });
  });

  it('package.json ships bin/ and dist/, and a prepare script builds dist/ on publish', () => {
    expect(pkg.files).toEqual(expect.arrayContaining(['bin', 'dist']));
    expect(pkg.scripts['prepare']).toMatch(/\btsc\b/);
    expect(Object.keys(pkg.bin)).toEqual(['pgbidi']);
  });

  it('the tarball holds the bin and every module it reaches through relative imports', () => {
    expect(existsSync(tarball)).toBe(true);
    const bin = normalize(pkg.bin['pgbidi'] ?? '');
    expect(packed).toContain(bin);
    expect(packed).toContain('package.json');
    // walk the import graph from the bin, in the repository's copy of the packed files
    const seen = new Set<string>();
    const queue = [bin];
    while (queue.length > 0) {
      const file = queue.pop() ?? '';
      if (seen.has(file)) continue;
      seen.add(file);
      expect(packed, `imported by the bin: ${file}`).toContain(file);
      for (const spec of relativeImports(readFileSync(join(REPO, file), 'utf8'))) {
        queue.push(normalize(join(dirname(file), spec)));
      }
    }
    expect(seen.has('dist/cli.js')).toBe(true);
    expect(seen.size).toBeGreaterThan(10);
    // no sources or tests travel with it
    expect(packed.filter((f) => f.startsWith('src/') || f.startsWith('test/'))).toEqual([]);
  });

  it(
    'installs from the tarball into an empty folder, and `pgbidi --help`, `--version` and config validation work',
    () => {
      const app = join(work, 'app');
      // a package.json keeps npm from installing into a parent folder that has one
      mkdirSync(app);
      writeFileSync(join(app, 'package.json'), `${JSON.stringify({ name: 'pgbidi-install-check', version: '0.0.0', private: true })}\n`);
      const install = run(
        'npm',
        ['install', tarball, '--no-audit', '--no-fund', '--omit=optional', '--prefer-offline', '--loglevel=error'],
        app,
        INSTALL_TIMEOUT_MS - 30_000,
      );
      expect(install.status, output(install)).toBe(0);
      const installed = JSON.parse(readFileSync(join(app, 'node_modules/pgbidi/package.json'), 'utf8')) as PackageJson;
      expect(installed.version).toBe(pkg.version);
      expect(existsSync(join(app, 'node_modules/pgbidi/src'))).toBe(false);

      const help = run('npx', ['--no', '--', 'pgbidi', '--help'], app);
      expect(help.status, output(help)).toBe(0);
      expect(help.stdout).toContain(`pgbidi ${pkg.version}: bidirectional replication`);
      expect(help.stdout).toMatch(/Usage:\n\s+pgbidi demo/);
      expect(help.stdout).toContain('pgbidi run    --config FILE');

      const version = run(join(app, 'node_modules/.bin/pgbidi'), ['--version'], app);
      expect(version.status, output(version)).toBe(0);
      expect(version.stdout).toBe(`${pkg.version}\n`);

      // config validation runs on the installed production dependencies (yaml, zod) and exits 2
      writeFileSync(join(app, 'bad.yaml'), 'node: { name: A, dsn: "mysql://x" }\npeers: []\n');
      const bad = run(join(app, 'node_modules/.bin/pgbidi'), ['setup', '--config', 'bad.yaml'], app);
      expect(bad.status, output(bad)).toBe(2);
      expect(bad.stderr).toContain('node.name');
      expect(bad.stderr).toContain('peers');
    },
    INSTALL_TIMEOUT_MS,
  );
});
