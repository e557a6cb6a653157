/**
 * A loopback TCP proxy in front of one PostgreSQL server, for one direction of one link, that the
 * fault suite can cut and restore: a network partition without network namespaces.
 *
 *   open ──cut()──> cut (every socket destroyed, new connections reset at once) ──restore()──> open
 *
 * While cut, the listener stays bound (the port must not change: it is in the agent's config) and
 * accepts only to destroy, which a client sees as a connection reset, as after a firewall REJECT.
 */
import { connect, createServer } from 'node:net';
import type { Server, Socket } from 'node:net';
import { freePort } from '../../pg-server/free-port.js';

const LOOPBACK = '127.0.0.1';

export class TcpProxy {
  private readonly sockets = new Set<Socket>();
  private isCut = false;
  /** Connections accepted and passed on since the proxy started. */
  connections = 0;

  private constructor(
    private readonly server: Server,
    readonly port: number,
    readonly targetPort: number,
  ) {}

  static async start(targetPort: number): Promise<TcpProxy> {
    for (let attempt = 1; ; attempt++) {
      const port = await freePort();
      const server = createServer();
      const proxy = new TcpProxy(server, port, targetPort);
      server.on('connection', (client) => proxy.accept(client));
      try {
        await new Promise<void>((resolve, reject) => {
          server.once('error', reject);
          server.listen(port, LOOPBACK, () => {
            server.off('error', reject);
            resolve();
          });
        });
        return proxy;
      } catch (err) {
        // Someone took the port between freePort() and listen(): pick another.
        if (attempt >= 5) throw err;
      }
    }
  }

  get cut(): boolean {
    return this.isCut;
  }

  /** Destroys every open connection and resets new ones until restore(). */
  cutAll(): void {
    this.isCut = true;
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
  }

  restore(): void {
    this.isCut = false;
  }

  async close(): Promise<void> {
    this.cutAll();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(client: Socket): void {
    if (this.isCut) {
      client.resetAndDestroy();
      return;
    }
    this.connections++;
    const upstream = connect(this.targetPort, LOOPBACK);
    for (const [a, b] of [
      [client, upstream],
      [upstream, client],
    ] as const) {
      this.sockets.add(a);
      a.on('error', () => b.destroy());
      a.on('close', () => {
        this.sockets.delete(a);
        b.destroy();
      });
      a.pipe(b);
    }
  }
}
