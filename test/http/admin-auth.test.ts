import { writeFileSync } from 'node:fs';
import type { Server } from 'node:http';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { main } from '../../src/cli.js';
import { ConfigError, parseConfig } from '../../src/config/load-config.js';
import { adminAccess, bearerMatches, isLoopbackListen } from '../../src/http/admin-auth.js';
import type { AdminAccess } from '../../src/http/admin-auth.js';
import { createHttpApp, listen } from '../../src/http/http-server.js';
import { tempDir } from '../support/temp-dir.js';

const TOKEN = 'c0ffee-token-for-tests-5d1e';

describe('admin access rules (pure)', () => {
  it('knows loopback listeners', () => {
    for (const l of ['127.0.0.1:9464', '127.1.2.3:1', '[::1]:9464', 'localhost:80', 'LOCALHOST:80']) expect(isLoopbackListen(l), l).toBe(true);
    for (const l of ['0.0.0.0:9464', '[::]:9464', '10.0.0.1:9464', 'pgbidi-a:9464', '128.0.0.1:1']) expect(isLoopbackListen(l), l).toBe(false);
  });

  it('needs the token when one is set, is open on loopback without one, and off elsewhere', () => {
    expect(adminAccess('0.0.0.0:9464', TOKEN)).toEqual({ kind: 'token', token: TOKEN });
    expect(adminAccess('127.0.0.1:9464', TOKEN)).toEqual({ kind: 'token', token: TOKEN });
    expect(adminAccess('127.0.0.1:9464', null)).toEqual({ kind: 'loopback' });
    expect(adminAccess('0.0.0.0:9464', null)).toEqual({ kind: 'off' });
  });

  it('accepts only the exact bearer token', () => {
    expect(bearerMatches(`Bearer ${TOKEN}`, TOKEN)).toBe(true);
    expect(bearerMatches(`bearer ${TOKEN}`, TOKEN)).toBe(true);
    for (const h of [undefined, '', 'Bearer', `Bearer ${TOKEN}x`, `Bearer ${TOKEN.slice(1)}`, `Basic ${TOKEN}`, TOKEN])
      expect(bearerMatches(h, TOKEN), String(h)).toBe(false);
  });
});

describe('admin token in the config', () => {
  const raw = {
    node: { name: 'a', dsn: 'postgres://pgbidi@10.0.0.1:5432/app' },
    peers: [{ name: 'b', dsn: 'postgres://pgbidi@10.0.0.2:5432/app' }],
    http: { listen: '0.0.0.0:9464' },
  };
  const issues = (f: () => unknown): string[] => {
    try {
      f();
    } catch (err) {
      if (err instanceof ConfigError) return err.issues.map((i) => `${i.path}: ${i.message}`);
      throw err;
    }
    return [];
  };

  it('comes from PGBIDI_ADMIN_TOKEN or from the file the config names, never inline', () => {
    expect(parseConfig(raw, {}).http.admin_token).toBeNull();
    expect(parseConfig(raw, { PGBIDI_ADMIN_TOKEN: TOKEN }).http.admin_token).toBe(TOKEN);
    const file = join(tempDir('pgbidi-token-'), 'token');
    writeFileSync(file, `${TOKEN}\n`);
    expect(parseConfig({ ...raw, http: { ...raw.http, admin_token_file: file } }, {}).http.admin_token).toBe(TOKEN);
    expect(issues(() => parseConfig({ ...raw, http: { ...raw.http, admin_token: TOKEN } }, {}))).toEqual([expect.stringContaining('http: Unrecognized key')]);
  });

  it('rejects a short token and an unreadable file, naming the source', () => {
    expect(issues(() => parseConfig(raw, { PGBIDI_ADMIN_TOKEN: 'short' }))).toEqual([expect.stringMatching(/^PGBIDI_ADMIN_TOKEN: .*at least 16 characters/)]);
    expect(issues(() => parseConfig({ ...raw, http: { ...raw.http, admin_token_file: '/nonexistent/token' } }, {}))).toEqual([
      'http.admin_token_file: cannot read /nonexistent/token: ENOENT',
    ]);
  });
});

describe('operator endpoints over HTTP', () => {
  let server: Server | undefined;
  afterEach(async () => {
    await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
    server = undefined;
  });

  async function start(access: AdminAccess): Promise<{ base: string; calls: string[] }> {
    const calls: string[] = [];
    const app = createHttpApp(
      {
        node: 'a',
        links: () => [],
        maxReadyLagSeconds: 30,
        admin: {
          access,
          actions: {
            resolve: (peer, action) => {
              calls.push(`resolve ${peer} ${action}`);
              return 'resolved';
            },
            retryDeadLetter: (id) => {
              calls.push(`retry ${id}`);
              return Promise.resolve({ outcome: 'applied' });
            },
          },
        },
      },
      new Registry(),
      new Registry(),
    );
    server = await listen(app, '127.0.0.1:0');
    const a = server.address();
    if (typeof a !== 'object' || a === null) throw new Error('no address');
    return { base: `http://127.0.0.1:${a.port}`, calls };
  }

  const post = (url: string, body: string | undefined, headers: Record<string, string> = {}): Promise<Response> =>
    fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, ...(body === undefined ? {} : { body }) });

  it('answers 401 and changes nothing without the right token, and acts with it', async () => {
    const { base, calls } = await start({ kind: 'token', token: TOKEN });
    const body = JSON.stringify({ action: 'skip' });
    const wrong: Record<string, string>[] = [{}, { authorization: 'Bearer wrong-token-wrong-token' }, { authorization: `Basic ${TOKEN}` }];
    for (const headers of wrong) {
      const r = await post(`${base}/links/b/resolve`, body, headers);
      expect(r.status).toBe(401);
      expect(r.headers.get('www-authenticate')).toContain('Bearer');
      expect((await post(`${base}/dead-letters/1/retry`, undefined, headers)).status).toBe(401);
    }
    expect(calls).toEqual([]);
    const auth = { authorization: `Bearer ${TOKEN}` };
    expect((await post(`${base}/links/b/resolve`, body, auth)).status).toBe(200);
    expect((await post(`${base}/dead-letters/7/retry`, undefined, auth)).status).toBe(200);
    expect(calls).toEqual(['resolve b skip', 'retry 7']);
    // Read-only endpoints need no token.
    expect((await fetch(`${base}/status`)).status).toBe(200);
    expect((await fetch(`${base}/metrics`)).status).toBe(200);
  });

  it('`pgbidi resolve` sends the token of its config, and says what is missing without it', async () => {
    const { base, calls } = await start({ kind: 'token', token: TOKEN });
    const dir = tempDir('pgbidi-admin-');
    const tokenFile = join(dir, 'token');
    writeFileSync(tokenFile, TOKEN);
    const config = (withToken: boolean): string => {
      const file = join(dir, `${String(withToken)}.yaml`);
      const http = { listen: base.slice('http://'.length), ...(withToken ? { admin_token_file: tokenFile } : {}) };
      writeFileSync(
        file,
        stringify({ node: { name: 'a', dsn: 'postgres://pgbidi@127.0.0.1:1/app' }, peers: [{ name: 'b', dsn: 'postgres://pgbidi@127.0.0.1:2/app' }], http }),
      );
      return file;
    };
    const err: string[] = [];
    const io = { out: () => undefined, err: (s: string) => void err.push(s) };
    expect(await main(['resolve', '--config', config(false), '--peer', 'b', '--skip'], io)).toBe(1);
    expect(err.join('')).toContain('PGBIDI_ADMIN_TOKEN');
    expect(calls).toEqual([]);
    expect(await main(['resolve', '--config', config(true), '--peer', 'b', '--skip'], io)).toBe(0);
    expect(calls).toEqual(['resolve b skip']);
  });

  it('is off without a token on a non-loopback listener', async () => {
    const { base, calls } = await start({ kind: 'off' });
    const r = await post(`${base}/links/b/resolve`, JSON.stringify({ action: 'retry' }), { authorization: `Bearer ${TOKEN}` });
    expect(r.status).toBe(403);
    expect(((await r.json()) as { error: string }).error).toContain('PGBIDI_ADMIN_TOKEN');
    expect(calls).toEqual([]);
  });

  it('limits request bodies and answers bad ones in JSON', async () => {
    const { base, calls } = await start({ kind: 'loopback' });
    const big = await post(`${base}/links/b/resolve`, JSON.stringify({ action: 'skip', pad: 'x'.repeat(4096) }));
    expect(big.status).toBe(413);
    expect(big.headers.get('content-type')).toContain('application/json');
    const malformed = await post(`${base}/links/b/resolve`, '{"action":');
    expect(malformed.status).toBe(400);
    expect(await malformed.text()).not.toContain(' at ');
    expect(calls).toEqual([]);
    expect((await post(`${base}/links/b/resolve`, JSON.stringify({ action: 'retry' }))).status).toBe(200);
  });
});
