import { createServer } from 'node:net';

const LOOPBACK = '127.0.0.1';

/** The kernel gave no TCP address for a listening socket (not expected on a sane host). */
export class FreePortError extends Error {
  readonly code = 'PG_FREE_PORT_FAILED';
  override readonly name = 'FreePortError';
}

/** Asks the kernel for an unused TCP port on the loopback interface. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, LOOPBACK, () => {
      const address = server.address();
      // listen() on a TCP host always yields an AddressInfo; the string form is for pipes only.
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => (port > 0 ? resolve(port) : reject(new FreePortError('listen(0) yielded no TCP port'))));
    });
  });
}

/**
 * True when 127.0.0.1:<port> can be bound right now. Used after a failed start to tell "someone else
 * took the port we picked" apart from other failures without parsing localized server messages.
 */
export async function isPortFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.unref();
    server.once('error', () => resolve(false));
    server.listen(port, LOOPBACK, () => server.close(() => resolve(true)));
  });
}
