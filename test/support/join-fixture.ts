import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { Agent } from '../../src/agent.js';
import type { RawConfig } from '../../src/config/config-schema.js';
import { parseConfig } from '../../src/config/load-config.js';
import { main } from '../../src/cli.js';
import { createLogger } from '../../src/observability/logger.js';
import type { LocalCluster } from '../../src/testbed/local-cluster.js';
import { eventually, sleep } from './cluster-fixture.js';

/**
 * A group that grows by `pgbidi join`: configs per node with an explicit member list, agents started
 * and restarted with the members of the moment, and writers that keep every node busy meanwhile.
 */
export class GrowingGroup {
  readonly agents = new Map<string, Agent>();
  private readonly dir = mkdtempSync(join(tmpdir(), 'pgbidi-join-'));

  constructor(readonly cluster: LocalCluster) {}

  rawConfig(node: string, members: readonly string[]): RawConfig {
    return {
      node: { name: node, dsn: this.cluster.dsn(node) },
      peers: members.filter((n) => n !== node).map((n) => ({ name: n, dsn: this.cluster.dsn(n) })),
      http: { listen: '127.0.0.1:0' },
      log: { level: 'warn' },
    };
  }

  configFile(node: string, members: readonly string[]): string {
    const path = join(this.dir, `${node}.yaml`);
    writeFileSync(path, JSON.stringify(this.rawConfig(node, members)));
    return path;
  }

  /** Starts (or restarts) the agent of `node` with `members` as the group. */
  async startAgent(node: string, members: readonly string[]): Promise<void> {
    await this.agents.get(node)?.stop();
    const config = parseConfig(this.rawConfig(node, members), {}, `node ${node}`);
    this.agents.set(node, await Agent.start({ config, log: createLogger('silent') }));
    await eventually(`${node}'s links streaming`, () => (this.agents.get(node)?.status() ?? []).every((l) => l.state === 'streaming'), 60_000);
  }

  /** `pgbidi join` through the CLI entry point; returns its exit code and output. */
  async join(node: string, members: readonly string[], donor: string): Promise<{ code: number; out: string; err: string }> {
    let out = '';
    let err = '';
    const code = await main(['join', '--config', this.configFile(node, members), '--from', donor], {
      out: (s) => {
        out += s;
      },
      err: (s) => {
        err += s;
      },
    });
    return { code, out, err };
  }

  async stop(): Promise<void> {
    await Promise.all([...this.agents.values()].map((a) => a.stop().catch(() => undefined)));
    this.agents.clear();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * Keeps writing on one node until stopped: updates and deletes of pre-existing rows of its own
 * residue (id % modulus = residue) and inserts of new ids of that residue, so that no two nodes
 * write the same row and every conflict logged is a fault.
 */
export class Writer {
  private stopped = false;
  private readonly done: Promise<void>;
  operations = 0;
  errors: string[] = [];

  constructor(dsn: string, residue: number, modulus: number, preExisting: number, newIdBase: number) {
    this.done = this.loop(dsn, residue, modulus, preExisting, newIdBase);
  }

  private async loop(dsn: string, residue: number, modulus: number, preExisting: number, newIdBase: number): Promise<void> {
    const client = new pg.Client({ connectionString: dsn, application_name: 'test_writer' });
    await client.connect();
    let next = 0;
    let seed = residue + 1;
    const random = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return seed % n;
    };
    try {
      while (!this.stopped) {
        const old = random(Math.max(1, Math.floor(preExisting / modulus))) * modulus + residue;
        const op = preExisting === 0 ? 9 : random(10);
        try {
          if (op < 6) await client.query('UPDATE items SET v = v + 1, note = $2 WHERE id = $1', [old, `w${residue}`]);
          else if (op < 7) await client.query('DELETE FROM items WHERE id = $1', [old]);
          else await client.query('INSERT INTO items (id, v, note) VALUES ($1, 0, $2)', [newIdBase + next++ * modulus + residue, `w${residue}`]);
          this.operations++;
        } catch (err) {
          this.errors.push((err as Error).message);
        }
        await sleep(2);
      }
    } finally {
      await client.end();
    }
  }

  async stop(): Promise<number> {
    this.stopped = true;
    await this.done;
    return this.operations;
  }
}
