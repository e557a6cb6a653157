import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { main } from '../../src/cli.js';
import { parseConfig } from '../../src/config/load-config.js';
import { issuesOf } from '../support/config-issues.js';
import { redactDsn, redactedMessage, redactSecrets } from '../../src/config/redact.js';
import { tempDir } from '../support/temp-dir.js';

const valid = {
  node: { name: 'a', dsn: 'postgres://pgbidi@10.0.0.1:5432/app' },
  peers: [{ name: 'b', dsn: 'postgres://pgbidi@10.0.0.2:5432/app' }],
  replication: { tables: ['public.*'] },
  http: { listen: '127.0.0.1:9464' },
};

describe('config', () => {
  it('accepts the documented minimal config, fills defaults and freezes the result', () => {
    const c = parseConfig(valid, {});
    expect(c.replication.publication).toBe('pgbidi');
    expect(c.replication.apply_batch_size).toBe(1000);
    expect(c.replication.reconnect).toEqual({ initial_delay_ms: 500, max_delay_ms: 30_000 });
    expect(Object.isFrozen(c)).toBe(true);
    expect(Object.isFrozen(c.peers[0])).toBe(true);
  });

  it('reports every problem at once, each with its key path', () => {
    const issues = issuesOf({
      node: { name: 'A-1', dsn: 'mysql://x' },
      peers: [{ name: 'a', dsn: 'postgres://h/db' }],
      replication: { tables: ['nodot'], apply_batch_size: 0, surprise: true },
      http: { listen: 'nowhere' },
    });
    const paths = issues.map((i) => i.split(':')[0]);
    expect(paths).toEqual(
      expect.arrayContaining(['node.name', 'node.dsn', 'replication.tables.0', 'replication.apply_batch_size', 'replication', 'http.listen']),
    );
    expect(issues.length).toBeGreaterThanOrEqual(6);
  });

  it('takes table names as the catalog spells them: any case, spaces, any letter', () => {
    const c = parseConfig({ ...valid, replication: { tables: ['Sales Dept.Order Lines', 'public.café', 'app.*'], exclude_tables: ['app.tmp_?'] } }, {});
    expect(c.replication.tables).toEqual(['Sales Dept.Order Lines', 'public.café', 'app.*']);
    expect(issuesOf({ ...valid, replication: { tables: ['public.', '.t', 'a.b.c'] } }).map((i) => i.split(':')[0])).toEqual([
      'replication.tables.0',
      'replication.tables.1',
      'replication.tables.2',
    ]);
  });

  it('rejects a peer that has the node name', () => {
    expect(issuesOf({ ...valid, peers: [{ name: 'a', dsn: 'postgres://h/db' }] })).toEqual(['peers.0.name: duplicates node.name (a)']);
  });

  it('takes DSNs and passwords from the environment', () => {
    const c = parseConfig(valid, {
      PGBIDI_NODE_PASSWORD: 's3cr/t',
      PGBIDI_PEER_B_DSN: 'postgres://other@10.0.0.3/app',
      PGBIDI_PEER_B_PASSWORD: 'pw',
    });
    expect(c.node.dsn).toBe('postgres://pgbidi:s3cr%2Ft@10.0.0.1:5432/app');
    expect(c.peers[0]?.dsn).toBe('postgres://other:pw@10.0.0.3/app');
  });

  it('never shows a password', () => {
    expect(redactDsn('postgres://u:secret@h:5432/db')).toBe('postgres://u:***@h:5432/db');
    expect(redactSecrets('connect to postgres://u:secret@h/db failed; password=hunter2')).toBe('connect to postgres://u:***@h/db failed; password=***');
    // Whatever was thrown: an Error's message, or the text of anything else.
    expect(redactedMessage(new Error('no route to postgres://u:secret@h/db'))).toBe('no route to postgres://u:***@h/db');
    expect(redactedMessage('password=hunter2 rejected')).toBe('password=*** rejected');
  });

  it('exits with code 2 and lists the problems, without a stack trace', async () => {
    const dir = tempDir('pgbidi-cfg-');
    const file = join(dir, 'bad.yaml');
    writeFileSync(file, 'node: { name: "X", dsn: "postgres://u:topsecret@h/db" }\npeers: []\n');
    let err = '';
    const code = await main(['setup', '--config', file], { out: () => undefined, err: (s) => (err += s) });
    expect(code).toBe(2);
    expect(err).toContain('node.name');
    expect(err).toContain('peers');
    expect(err).not.toContain('topsecret');
    expect(err).not.toMatch(/\n\s+at /);
  });

  it('exits with code 2 on a config file that is not YAML or is missing', async () => {
    const dir = tempDir('pgbidi-cfg-');
    const file = join(dir, 'broken.yaml');
    writeFileSync(file, 'node: [unclosed\n');
    const sink = { out: () => undefined, err: () => undefined };
    expect(await main(['run', '--config', file], sink)).toBe(2);
    expect(await main(['run', '--config', join(dir, 'absent.yaml')], sink)).toBe(2);
    expect(await main(['run'], sink)).toBe(2);
  });
});
