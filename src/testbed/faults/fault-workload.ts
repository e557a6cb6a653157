import pg from 'pg';
import { setTimeout as sleep } from 'node:timers/promises';
import { seededRandom } from '../convergence-workload.js';

/**
 * The fault suite's workload: on every node at once, each operation is one transaction that writes a
 * row of a small shared key space (`items`: upserts, updates, counter increments and deletes on the
 * same keys everywhere, so that conflicts happen all the time) and appends one row to the insert-only
 * `ledger` (node, seq). The ledger has no key at all: a change applied twice shows as a second row, a
 * change lost as a missing one. `bulk` takes the large transactions of the mid-transaction scenarios.
 *
 * Writers keep going while their node is down or cut off: a failed operation is counted as an error,
 * the connection is opened again, and the next operation takes a new seq (whether an operation whose
 * COMMIT answer was lost did commit is read from the node itself at the end, never assumed).
 */
export const FAULT_SCHEMA = [
  `CREATE TABLE items (id int PRIMARY KEY, v text NOT NULL, n bigint NOT NULL DEFAULT 0, written_by text NOT NULL)`,
  `CREATE TABLE ledger (node text NOT NULL, seq bigint NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())`,
  `ALTER TABLE ledger REPLICA IDENTITY FULL`,
  `CREATE TABLE bulk (node text NOT NULL, batch int NOT NULL, seq bigint NOT NULL, payload text NOT NULL)`,
  `ALTER TABLE bulk REPLICA IDENTITY FULL`,
];

export interface FaultWorkloadOptions {
  readonly seed: number;
  readonly keys: number;
  /** Pause between operations per node: leaves CPU to the agents and servers of a small machine. */
  readonly pauseMs: number;
}

export interface WorkloadTotals {
  /** Operations that committed (their COMMIT was answered). */
  readonly operations: number;
  /** Operations that failed (node down, cut off, disk full...). */
  readonly errors: number;
}

/** The statement of one operation: an items change and a ledger row, in one transaction. */
function operation(random: () => number, node: string, seq: number, keys: number): { text: string; values: unknown[] } {
  const id = 1 + Math.floor(random() * keys);
  const r = random();
  const ledger = `WITH l AS (INSERT INTO ledger (node, seq) VALUES ($1, $2))`;
  if (r < 0.3) {
    return {
      text: `${ledger} INSERT INTO items (id, v, written_by) VALUES ($3, $1 || ':' || $2, $1)
             ON CONFLICT (id) DO UPDATE SET v = EXCLUDED.v, written_by = EXCLUDED.written_by`,
      values: [node, seq, id],
    };
  }
  if (r < 0.55) return { text: `${ledger} UPDATE items SET v = $1 || ':' || $2, written_by = $1 WHERE id = $3`, values: [node, seq, id] };
  if (r < 0.8) return { text: `${ledger} UPDATE items SET n = n + 1, written_by = $1 WHERE id = $3`, values: [node, seq, id] };
  return { text: `${ledger} DELETE FROM items WHERE id = $3`, values: [node, seq, id] };
}

class Writer {
  operations = 0;
  errors = 0;
  private seq: number;
  private client: pg.Client | null = null;

  constructor(
    readonly node: string,
    private readonly dsn: () => string,
    private readonly random: () => number,
    startSeq: number,
    private readonly options: FaultWorkloadOptions,
  ) {
    this.seq = startSeq;
  }

  get nextSeq(): number {
    return this.seq;
  }

  async run(stopped: () => boolean): Promise<void> {
    while (!stopped()) {
      const op = operation(this.random, this.node, this.seq++, this.options.keys);
      try {
        const client = await this.connection();
        await client.query(op.text, op.values);
        this.operations++;
      } catch {
        this.errors++;
        await this.drop();
        await sleep(200);
      }
      if (this.options.pauseMs > 0) await sleep(this.options.pauseMs);
    }
    await this.drop();
  }

  private async connection(): Promise<pg.Client> {
    if (this.client) return this.client;
    const client = new pg.Client({ connectionString: this.dsn(), application_name: `faults_${this.node}`, connectionTimeoutMillis: 3000 });
    client.on('error', () => undefined); // a dying server fails the query in flight; that is enough
    try {
      await client.connect();
      await client.query(`SET statement_timeout = '20s'`);
    } catch (err) {
      await client.end().catch(() => undefined);
      throw err;
    }
    this.client = client;
    return client;
  }

  private async drop(): Promise<void> {
    const client = this.client;
    this.client = null;
    await client?.end().catch(() => undefined);
  }
}

/**
 * A workload that runs until stop(): one writer per node. Sequence numbers go on across the
 * workloads of one suite run (`startSeq`), so that every ledger row of a run is unique per node.
 */
export class FaultWorkload {
  private readonly writers: Writer[];
  private done = false;
  private readonly running: Promise<void>;

  constructor(nodes: readonly { name: string; dsn: () => string }[], options: FaultWorkloadOptions, startSeq: ReadonlyMap<string, number>) {
    this.writers = nodes.map((n, i) => new Writer(n.name, n.dsn, seededRandom(options.seed * 1009 + i), startSeq.get(n.name) ?? 1, options));
    this.running = Promise.all(this.writers.map((w) => w.run(() => this.done))).then(() => undefined);
  }

  get totals(): WorkloadTotals {
    return {
      operations: this.writers.reduce((s, w) => s + w.operations, 0),
      errors: this.writers.reduce((s, w) => s + w.errors, 0),
    };
  }

  /** Stops every writer after its operation in flight; returns the totals and where each seq ended. */
  async stop(): Promise<{ totals: WorkloadTotals; nextSeq: Map<string, number> }> {
    this.done = true;
    await this.running;
    return { totals: this.totals, nextSeq: new Map(this.writers.map((w) => [w.node, w.nextSeq])) };
  }
}

/** One large transaction on a node: `rows` rows into bulk, committed at once (it reaches the peers whole). */
export async function largeTransaction(dsn: string, node: string, batch: number, rows: number): Promise<void> {
  const client = new pg.Client({ connectionString: dsn, application_name: `faults_bulk_${node}` });
  client.on('error', () => undefined);
  await client.connect();
  try {
    await client.query(`INSERT INTO bulk (node, batch, seq, payload) SELECT $1, $2, g, md5(g::text) FROM generate_series(1, $3::int) g`, [node, batch, rows]);
  } finally {
    await client.end().catch(() => undefined);
  }
}
