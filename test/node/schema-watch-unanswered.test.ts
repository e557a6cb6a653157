import { connect, createServer } from 'node:net';
import type { Server, Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import { SchemaWatch } from '../../src/node/schema-watch.js';
import { createLogger } from '../../src/observability/logger.js';
import { settlesWithin } from '../../src/util/settles-within.js';
import { availableServerVersions } from '../support/pg-versions.js';
import { useServer } from '../support/server-fixture.js';

const LOOPBACK = '127.0.0.1';
/** Far more than the check may take with its 1 s query bound; reaching it means it hung. */
const STUCK_MS = 15_000;
const READY_FOR_QUERY = 0x5a; // 'Z' (protocol-message-formats: ReadyForQuery)

/**
 * A loopback proxy that lets a session start and then answers nothing: it passes the server's
 * messages up to the first ReadyForQuery and drops every byte after it, without closing anything.
 * That is a peer behind a network that drops packets: the query is sent, no reply and no reset come.
 */
async function silentAfterStartup(targetPort: number): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    const upstream = connect(targetPort, LOOPBACK);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', () => undefined);
      s.on('close', () => sockets.delete(s));
    }
    client.pipe(upstream);
    let pending = Buffer.alloc(0);
    let silent = false;
    upstream.on('data', (chunk: Buffer) => {
      if (silent) return;
      pending = Buffer.concat([pending, chunk]);
      let end = 0;
      while (pending.length - end >= 5) {
        const length = pending.readInt32BE(end + 1);
        if (pending.length - end < 1 + length) break;
        const type = pending[end];
        end += 1 + length;
        if (type === READY_FOR_QUERY) {
          silent = true;
          break;
        }
      }
      client.write(pending.subarray(0, end));
      pending = pending.subarray(end);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, LOOPBACK, resolve));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no port');
  return {
    port: address.port,
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** The schema watch against a peer that stops answering after its session started: the check ends. */
describe.each(availableServerVersions())('schema watch with an unanswering peer on $label', ({ binDir }) => {
  const db = useServer(
    () => ({ binDir, name: 'schema-watch-unanswered' }),
    async (f) => {
      await f.client.query('CREATE TABLE public.t (id int PRIMARY KEY, v text)');
    },
  );

  it('ends a check whose catalog read the peer never answers, and the next check still runs', async () => {
    const proxy = await silentAfterStartup(db.server.port);
    try {
      const watch = new SchemaWatch({
        node: 'b',
        dsn: db.server.connectionString(),
        peers: [{ name: 'a', dsn: `postgres://postgres@${LOOPBACK}:${proxy.port}/postgres` }],
        tables: ['public.*'],
        excludeTables: [],
        registries: [],
        log: createLogger('silent'),
        queryTimeoutMs: 1000,
      });
      for (let n = 0; n < 2; n++) expect(await settlesWithin(watch.check(), STUCK_MS)).toBe(true);
      // The peer could not be read: it keeps its last result, none.
      expect(watch.current()).toEqual([]);
    } finally {
      await proxy.close();
    }
  });
});
