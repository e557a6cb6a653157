import { readFileSync } from 'node:fs';
import { parse as parseYaml, YAMLParseError } from 'yaml';
import { configSchema } from './config-schema.js';
import type { Config } from './config-schema.js';

/**
 * The only reader of the config file and of process.env: everything else receives a frozen Config.
 * Every problem is collected and reported at once (like fastify's schema validation), each with its key path.
 */

export interface ConfigIssue {
  readonly path: string;
  readonly message: string;
}

export class ConfigError extends Error {
  readonly code = 'PGBIDI_CONFIG_INVALID';
  constructor(
    readonly source: string,
    readonly issues: readonly ConfigIssue[],
  ) {
    super(`invalid configuration in ${source}:\n${issues.map((i) => `  - ${i.path}: ${i.message}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

export type Env = Readonly<Record<string, string | undefined>>;

export function loadConfigFile(path: string, env: Env): Config {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(path, [{ path: '(file)', message: `cannot read: ${(err as NodeJS.ErrnoException).code ?? String(err)}` }]);
  }
  let raw: unknown;
  try {
    raw = parseYaml(text);
  } catch (err) {
    const message = err instanceof YAMLParseError ? (err.message.split('\n')[0] ?? err.message) : String(err);
    throw new ConfigError(path, [{ path: '(yaml)', message }]);
  }
  return parseConfig(raw, env, path);
}

/** Environment overrides, so that secrets need not live in the file. */
export const ENV_OVERRIDES = {
  nodeDsn: 'PGBIDI_NODE_DSN',
  nodePassword: 'PGBIDI_NODE_PASSWORD',
  peerDsn: (peer: string) => `PGBIDI_PEER_${peer.toUpperCase()}_DSN`,
  peerPassword: (peer: string) => `PGBIDI_PEER_${peer.toUpperCase()}_PASSWORD`,
  httpListen: 'PGBIDI_HTTP_LISTEN',
  adminToken: 'PGBIDI_ADMIN_TOKEN',
  logLevel: 'PGBIDI_LOG_LEVEL',
} as const;

export function parseConfig(raw: unknown, env: Env, source = 'config'): Config {
  const withEnv = applyEnv(raw, env);
  const result = configSchema.safeParse(withEnv);
  if (!result.success) {
    throw new ConfigError(
      source,
      result.error.issues.map((i) => ({ path: i.path.length ? i.path.join('.') : '(root)', message: i.message })),
    );
  }
  const issues: ConfigIssue[] = [];
  // A per-peer variable whose name matches no peer is a typo that would go unnoticed (the DSN of the
  // file would be used instead).
  const peerVariable = /^PGBIDI_PEER_(.+)_(DSN|PASSWORD)$/;
  const peerNames = new Set(result.data.peers.map((p) => p.name.toUpperCase()));
  for (const name of Object.keys(env).sort()) {
    const m = peerVariable.exec(name);
    if (m && env[name] !== undefined && !peerNames.has(m[1] ?? '')) {
      issues.push({ path: name, message: `names no peer of this config (peers: ${result.data.peers.map((p) => p.name).join(', ')}); rename or unset it` });
    }
  }
  const config: Config = { ...result.data, http: { ...result.data.http, admin_token: adminToken(env, result.data.http.admin_token_file, issues) } };
  config.node.dsn = withPassword(config.node.dsn, env[ENV_OVERRIDES.nodePassword], 'node.dsn', issues);
  config.peers.forEach((p, i) => {
    p.dsn = withPassword(p.dsn, env[ENV_OVERRIDES.peerPassword(p.name)], `peers.${i}.dsn`, issues);
  });
  if (issues.length) throw new ConfigError(source, issues);
  return deepFreeze(config);
}

function applyEnv(raw: unknown, env: Env): unknown {
  if (!isRecord(raw)) return raw;
  const out: Record<string, unknown> = { ...raw };
  const nodeDsn = env[ENV_OVERRIDES.nodeDsn];
  if (nodeDsn !== undefined && isRecord(out.node)) out.node = { ...out.node, dsn: nodeDsn };
  if (Array.isArray(out.peers)) {
    out.peers = out.peers.map((p: unknown) => {
      if (!isRecord(p) || typeof p.name !== 'string') return p;
      const override = env[ENV_OVERRIDES.peerDsn(p.name)];
      return override === undefined ? p : { ...p, dsn: override };
    });
  }
  const listen = env[ENV_OVERRIDES.httpListen];
  if (listen !== undefined) out.http = { ...(isRecord(out.http) ? out.http : {}), listen };
  const level = env[ENV_OVERRIDES.logLevel];
  if (level !== undefined) out.log = { ...(isRecord(out.log) ? out.log : {}), level };
  return out;
}

/** Shortest accepted admin token: a guessable token is no protection. */
export const MIN_ADMIN_TOKEN_LENGTH = 16;

function adminToken(env: Env, file: string | undefined, issues: ConfigIssue[]): string | null {
  let token: string | undefined;
  let path = 'http.admin_token_file';
  const fromEnv = env[ENV_OVERRIDES.adminToken];
  if (fromEnv !== undefined && fromEnv !== '') {
    token = fromEnv.trim();
    path = ENV_OVERRIDES.adminToken;
  } else if (file !== undefined) {
    try {
      token = readFileSync(file, 'utf8').trim();
    } catch (err) {
      issues.push({ path, message: `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}` });
      return null;
    }
  }
  if (token === undefined) return null;
  if (token.length < MIN_ADMIN_TOKEN_LENGTH || /\s/.test(token)) {
    issues.push({ path, message: `the admin token must be at least ${MIN_ADMIN_TOKEN_LENGTH} characters without spaces (e.g. openssl rand -hex 32)` });
    return null;
  }
  return token;
}

function withPassword(dsn: string, password: string | undefined, path: string, issues: ConfigIssue[]): string {
  if (password === undefined) return dsn;
  try {
    const url = new URL(dsn);
    url.password = encodeURIComponent(password);
    return url.toString();
  } catch {
    issues.push({ path, message: 'cannot set the password from the environment on this DSN' });
    return dsn;
  }
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null) {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}
