import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { main } from '../../src/cli.js';
import { issuesOf } from '../support/config-issues.js';
import { tempDir } from '../support/temp-dir.js';

/** Config mistakes (README "Bad input"): each names its key and the fix, all at once, exit code 2. */

const valid = {
  node: { name: 'a', dsn: 'postgres://pgbidi@10.0.0.1:5432/app' },
  peers: [{ name: 'b', dsn: 'postgres://pgbidi@10.0.0.2:5432/app' }],
};

describe('bad config', () => {
  it('names wrong types and unknown keys, at every level', () => {
    const issues = issuesOf({
      ...valid,
      replication: { apply_batch_size: 'ten', reconnect: { initial_delay_ms: -1 } },
      conflicts: { default_policy: 'newest' },
      http: { listen: '127.0.0.1:9464', token: 'x' },
      logging: { level: 'info' },
    });
    expect(issues).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^replication\.apply_batch_size: .*number/),
        expect.stringMatching(/^replication\.reconnect\.initial_delay_ms: /),
        expect.stringMatching(/^conflicts\.default_policy: .*last_update_wins/),
        expect.stringMatching(/^http: .*token/),
        expect.stringMatching(/^\(root\): .*logging/),
      ]),
    );
    expect(issues).toHaveLength(5);
  });

  it('refuses contradictions: a node that is its own peer, one peer twice, a backoff upside down, a port out of range', () => {
    expect(issuesOf({ ...valid, peers: [{ name: 'b', dsn: 'postgresql://other@10.0.0.1/app' }] })).toEqual([
      'peers.0.dsn: names the same database (10.0.0.1:5432/app) as node.dsn: every node needs its own database',
    ]);
    expect(
      issuesOf({
        ...valid,
        peers: [
          { name: 'b', dsn: 'postgres://pgbidi@10.0.0.2:5432/app' },
          { name: 'c', dsn: 'postgres://pgbidi@10.0.0.2/app?sslmode=require' },
        ],
      }),
    ).toEqual(['peers.1.dsn: names the same database (10.0.0.2:5432/app) as peers.0.dsn: every node needs its own database']);
    expect(issuesOf({ ...valid, replication: { reconnect: { initial_delay_ms: 5000, max_delay_ms: 1000 } } })).toEqual([
      'replication.reconnect.max_delay_ms: must not be smaller than initial_delay_ms',
    ]);
    expect(issuesOf({ ...valid, http: { listen: '127.0.0.1:99999' } })).toEqual(['http.listen: the port must be at most 65535 (0 picks a free one)']);
    // Another database on the same server is another node.
    expect(issuesOf({ ...valid, peers: [{ name: 'b', dsn: 'postgres://pgbidi@10.0.0.1:5432/app2' }] })).toEqual([]);
  });

  it('refuses a per-peer environment variable that names no peer (a typo would go unnoticed)', () => {
    expect(issuesOf(valid, { PGBIDI_PEER_C_PASSWORD: 'x', PGBIDI_PEER_B_DSN: 'postgres://pgbidi@10.0.0.3/app' })).toEqual([
      'PGBIDI_PEER_C_PASSWORD: names no peer of this config (peers: b); rename or unset it',
    ]);
  });

  it('exits 2 from the command line for each, without a stack trace', async () => {
    const dir = tempDir('pgbidi-badcfg-');
    const file = join(dir, 'self.yaml');
    writeFileSync(
      file,
      'node: { name: a, dsn: "postgres://u:topsecret@h/db" }\npeers: [{ name: b, dsn: "postgres://u:topsecret@h:5432/db" }]\nreplication: { reconnect: { initial_delay_ms: 9000, max_delay_ms: 10 } }\n',
    );
    let err = '';
    const code = await main(['setup', '--config', file], { out: () => undefined, err: (s) => (err += s) });
    expect(code).toBe(2);
    expect(err).toContain('peers.0.dsn: names the same database (h:5432/db) as node.dsn');
    expect(err).toContain('replication.reconnect.max_delay_ms: must not be smaller than initial_delay_ms');
    expect(err).not.toContain('topsecret');
    expect(err).not.toMatch(/\n\s+at /);
  });
});
