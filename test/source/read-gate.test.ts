import { createServer, Socket } from 'node:net';
import type { AddressInfo, Server } from 'node:net';
import type { Duplex } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { ReadGate } from '../../src/source/read-gate.js';
import { replicationSocket } from '../../src/source/replication-connection.js';

describe('ReadGate', () => {
  it('reads on only when every reason has let go, in either order', () => {
    const calls: string[] = [];
    const gate = new ReadGate({ pause: () => calls.push('pause'), resume: () => calls.push('resume') });
    gate.hold('backpressure');
    gate.hold('gathering');
    gate.release('backpressure');
    expect(gate.held).toBe(true);
    expect(calls).toEqual(['pause', 'pause']);
    gate.release('gathering');
    expect(gate.held).toBe(false);
    expect(calls).toEqual(['pause', 'pause', 'resume']);
    gate.hold('gathering');
    gate.hold('backpressure');
    gate.release('gathering');
    expect(calls.at(-1)).toBe('pause');
    gate.release('backpressure');
    expect(calls.at(-1)).toBe('resume');
  });

  it('resumes on a release of a reason that did not hold, as resume() always did', () => {
    const calls: string[] = [];
    const gate = new ReadGate({ pause: () => calls.push('pause'), resume: () => calls.push('resume') });
    gate.release('backpressure');
    expect(calls).toEqual(['resume']);
  });
});

const CHUNK = 200;
const CHUNKS = 20;

/**
 * A server that sends CHUNKS segments of CHUNK bytes, 3 ms apart (as a walsender sends transactions
 * one by one), after the client paused; returns how many bytes the client had read from the kernel
 * (bytesRead) when the last one was sent, and all it received once resumed.
 */
async function readWhilePaused(socket: Duplex & Socket, servers: Server[]): Promise<{ whilePaused: number; total: number }> {
  let sendAll: () => Promise<void> = () => Promise.reject(new Error('no connection yet'));
  const server = createServer((peer) => {
    peer.setNoDelay(true);
    sendAll = async () => {
      for (let i = 0; i < CHUNKS; i++) {
        peer.write(Buffer.alloc(CHUNK, i));
        await new Promise((resolve) => setTimeout(resolve, 3));
      }
      await new Promise((resolve) => setTimeout(resolve, 30));
    };
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  let received = 0;
  socket.on('data', (d: Buffer) => (received += d.length));
  await new Promise<void>((resolve) => socket.connect((server.address() as AddressInfo).port, '127.0.0.1', resolve));
  await new Promise((resolve) => setTimeout(resolve, 20));
  socket.pause();
  await sendAll();
  const whilePaused = socket.bytesRead;
  socket.resume();
  for (let i = 0; i < 100 && received < CHUNK * CHUNKS; i++) await new Promise((resolve) => setTimeout(resolve, 10));
  socket.destroy();
  return { whilePaused, total: received };
}

describe('replicationSocket', () => {
  const servers: Server[] = [];
  afterEach(async () => {
    for (const s of servers.splice(0)) await new Promise((resolve) => s.close(resolve));
  });

  it('stops reading from the kernel once paused, where a default socket reads on, and delivers everything when resumed', async () => {
    const gated = await readWhilePaused(replicationSocket() as Duplex & Socket, servers);
    const plain = await readWhilePaused(new Socket(), servers);
    // A default socket keeps reading into its 16 KiB buffer: every segment left the kernel.
    expect(plain.whilePaused).toBe(CHUNK * CHUNKS);
    // The replication socket read what had arrived when it stopped (a segment or two), no more.
    expect(gated.whilePaused).toBeLessThanOrEqual(2 * CHUNK);
    expect(gated.total).toBe(CHUNK * CHUNKS);
    expect(plain.total).toBe(CHUNK * CHUNKS);
  });
});
