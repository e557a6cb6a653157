/**
 * Readers for the deployment files, for tests that cannot run Docker or a cluster: multi-document
 * YAML, Compose variable interpolation, and a Dockerfile split into instructions.
 */
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';

export const REPO = fileURLToPath(new URL('../../../', import.meta.url));

/** Every file under dir (absolute paths), depth first, sorted. */
export function listFiles(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir).sort()) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) out.push(...listFiles(path));
    else out.push(path);
  }
  return out;
}

export function repoPath(path: string): string {
  return relative(REPO, path);
}

/** All documents of a YAML file as plain values; throws with the file name on the first error. */
export function readYamlDocuments(path: string): unknown[] {
  return yamlDocuments(readFileSync(path, 'utf8'), repoPath(path));
}

/** All documents of a YAML text (a file, or YAML embedded in a ConfigMap); errors and warnings throw. */
export function yamlDocuments(text: string, source: string): unknown[] {
  const docs = parseAllDocuments(text);
  if (!Array.isArray(docs)) throw new Error(`${source}: not a YAML stream`);
  return docs.map((doc) => {
    const problem = doc.errors[0] ?? doc.warnings[0];
    if (problem !== undefined) throw new Error(`${source}: ${problem.message}`);
    return doc.toJS({ maxAliasCount: 100 }) as unknown;
  });
}

export function readYaml(path: string): unknown {
  const docs = readYamlDocuments(path);
  if (docs.length !== 1) throw new Error(`${repoPath(path)}: expected one YAML document, found ${docs.length}`);
  return docs[0];
}

export type Env = Readonly<Record<string, string | undefined>>;

/**
 * Compose interpolation of one value: `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`,
 * `${VAR?error}`, `$$`. A required variable that is missing throws, as `docker compose` does.
 */
export function interpolate(value: string, env: Env): string {
  return value.replace(
    /\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?)([-?])([^}]*))?\}/g,
    (whole, name: string | undefined, colon: string | undefined, op: string | undefined, arg: string | undefined) => {
      if (whole === '$$') return '$';
      const v = env[name ?? ''];
      const unset = v === undefined || (colon === ':' && v === '');
      if (!unset) return v;
      if (op === '-') return arg ?? '';
      if (op === '?') throw new Error(`required variable ${name ?? ''} is missing: ${arg ?? ''}`);
      return '';
    },
  );
}

export interface DockerInstruction {
  readonly keyword: string;
  readonly args: string;
  /** Index of the build stage (FROM starts a new one). */
  readonly stage: number;
}

/** The Dockerfile's instructions, continuation lines joined, comments and parser directives dropped. */
export function parseDockerfile(text: string): DockerInstruction[] {
  const out: DockerInstruction[] = [];
  let stage = -1;
  let pending = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (pending === '' && (line === '' || line.startsWith('#'))) continue;
    if (pending !== '' && line.startsWith('#')) continue;
    if (line.endsWith('\\')) {
      pending += `${line.slice(0, -1).trim()} `;
      continue;
    }
    const full = `${pending}${line}`.trim();
    pending = '';
    if (full === '') continue;
    const m = /^(\S+)\s*(.*)$/s.exec(full);
    if (m === null) continue;
    const keyword = (m[1] ?? '').toUpperCase();
    if (keyword === 'FROM') stage += 1;
    out.push({ keyword, args: m[2] ?? '', stage });
  }
  return out;
}

/** Sources of a COPY/ADD (everything but the last argument and the --flags). */
export function copySources(args: string): { sources: string[]; from: string | null } {
  const words = args.split(/\s+/).filter((w) => w !== '');
  const from = words.find((w) => w.startsWith('--from='))?.slice('--from='.length) ?? null;
  const rest = words.filter((w) => !w.startsWith('--'));
  return { sources: rest.slice(0, -1), from };
}

/** The value at a path of object keys and array indexes, or undefined. */
export function at(value: unknown, ...path: (string | number)[]): unknown {
  let v = value;
  for (const k of path) v = typeof v === 'object' && v !== null ? (v as Record<string | number, unknown>)[k] : undefined;
  return v;
}

/** The string at a path, or undefined when there is none (or it is not a string). */
export function stringAt(value: unknown, ...path: (string | number)[]): string | undefined {
  const v = at(value, ...path);
  return typeof v === 'string' ? v : undefined;
}

export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Whether every label of selector has the same value in labels. */
export function selects(selector: unknown, labels: unknown): boolean {
  if (!isRecord(selector) || !isRecord(labels) || Object.keys(selector).length === 0) return false;
  return Object.entries(selector).every(([k, v]) => labels[k] === v);
}
