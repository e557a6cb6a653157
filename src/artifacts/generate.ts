/**
 * Writes the dashboards, rules, Alertmanager example and Kubernetes objects from src/artifacts/.
 *
 *   node dist/artifacts/generate.js            write the files under the repository root
 *   node dist/artifacts/generate.js --check    write nothing; exit 1 if a committed file differs
 *   node dist/artifacts/generate.js --root D   use D as the root instead
 */
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PATHS, renderArtifacts } from './artifacts.js';

export interface Drift {
  readonly path: string;
  readonly problem: 'missing' | 'differs' | 'not generated';
}

/** Compares the generated artifacts with the files under `root`. */
export async function findDrift(root: string, files: ReadonlyMap<string, string> = renderArtifacts()): Promise<Drift[]> {
  const drift: Drift[] = [];
  for (const [path, text] of files) {
    const current = await readFile(join(root, path), 'utf8').catch(() => null);
    if (current === null) drift.push({ path, problem: 'missing' });
    else if (current !== text) drift.push({ path, problem: 'differs' });
  }
  for (const path of await generatedLookalikes(root)) {
    if (!files.has(path)) drift.push({ path, problem: 'not generated' });
  }
  return drift;
}

/** Files in the generator's folders that look like its output (a renamed dashboard leaves one behind). */
async function generatedLookalikes(root: string): Promise<string[]> {
  const found: string[] = [];
  for (const [dir, pattern] of [
    [PATHS.dashboards, /\.json$/],
    [PATHS.provisioning, /\.ya?ml$/],
    [PATHS.kubernetes, /\.ya?ml$/],
  ] as const) {
    const names = await readdir(join(root, dir)).catch(() => [] as string[]);
    for (const n of names) if (pattern.test(n)) found.push(`${dir}/${n}`);
  }
  return found.sort();
}

export async function writeArtifacts(root: string, files: ReadonlyMap<string, string> = renderArtifacts()): Promise<string[]> {
  const written: string[] = [];
  for (const [path, text] of files) {
    const target = join(root, path);
    await mkdir(dirname(target), { recursive: true });
    const current = await readFile(target, 'utf8').catch(() => null);
    if (current !== text) {
      await writeFile(target, text);
      written.push(path);
    }
  }
  return written;
}

export const REPOSITORY_ROOT = resolve(fileURLToPath(new URL('../../', import.meta.url)));

async function main(argv: readonly string[]): Promise<number> {
  const check = argv.includes('--check');
  const rootIndex = argv.indexOf('--root');
  const root = rootIndex >= 0 && argv[rootIndex + 1] ? resolve(argv[rootIndex + 1] as string) : REPOSITORY_ROOT;
  const files = renderArtifacts();
  if (check) {
    const drift = await findDrift(root, files);
    for (const d of drift) process.stderr.write(`${d.problem}: ${d.path}\n`);
    if (drift.length) process.stderr.write('run `npm run build && node dist/artifacts/generate.js` and commit the result\n');
    else process.stdout.write(`${files.size} artifacts up to date\n`);
    return drift.length ? 1 : 0;
  }
  const written = await writeArtifacts(root, files);
  process.stdout.write(
    `${files.size} artifacts under ${relative(process.cwd(), root) || '.'}: ${written.length} written, ${files.size - written.length} unchanged\n`,
  );
  for (const w of written) process.stdout.write(`  ${w}\n`);
  const extra = (await findDrift(root, files)).filter((d) => d.problem === 'not generated');
  for (const d of extra) process.stderr.write(`warning: ${d.path} is not generated any more; delete it if it is stale\n`);
  return 0;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exitCode = 1;
    },
  );
}
