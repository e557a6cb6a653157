import pg from 'pg';
import { afterAll, beforeAll } from 'vitest';
import { PostgresServer } from '../../src/pg-server/postgres-server.js';

export interface ServerFixture {
  /** The server, started before the tests of the describe block. */
  readonly server: PostgresServer;
  /** A client connected to it before the tests. */
  readonly client: pg.Client;
  /** Another client, connected now and closed with the fixture. */
  connect(): Promise<pg.Client>;
}

/**
 * One PostgreSQL server in a temporary folder and a client on it, for the tests of a describe block
 * (`setup` runs once after both are up); the clients and the server always stop afterwards, even when
 * the setup or a test failed.
 */
export function useServer(options: () => { readonly binDir: string; readonly name: string }, setup?: (f: ServerFixture) => Promise<void>): ServerFixture {
  let server: PostgresServer | undefined;
  let client: pg.Client | undefined;
  const others: pg.Client[] = [];
  const fixture: ServerFixture = {
    get server() {
      if (!server) throw new Error('server not started');
      return server;
    },
    get client() {
      if (!client) throw new Error('client not connected');
      return client;
    },
    async connect() {
      const c = new pg.Client({ connectionString: fixture.server.connectionString() });
      others.push(c);
      await c.connect();
      return c;
    },
  };
  beforeAll(async () => {
    const o = options();
    server = await PostgresServer.start({ binDir: o.binDir, name: o.name });
    client = new pg.Client({ connectionString: server.connectionString() });
    await client.connect();
    await setup?.(fixture);
  });
  afterAll(async () => {
    for (const c of [client, ...others]) await c?.end().catch(() => undefined);
    await server?.destroy();
  });
  return fixture;
}
