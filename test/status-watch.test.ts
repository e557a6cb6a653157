import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stripVTControlCharacters } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { main } from '../src/cli.js';
import type { Io } from '../src/cli.js';
import { renderStatusFrame, renderStatusLine } from '../src/status-format.js';
import type { StatusBody } from '../src/status-format.js';
import { watchStatus } from '../src/status-watch.js';
import type { Terminal } from '../src/util/terminal-screen.js';
import { LONG_STATUS_ERROR, linkStatus } from './support/status-fixture.js';
import { tempDir } from './support/temp-dir.js';

const BIN = fileURLToPath(new URL('../bin/pgbidi.js', import.meta.url));
const AT = new Date('2026-12-02T09:00:01.000Z');

/** A node of a 5-node group: four links, one of them failing with a long error. */
const BODY: StatusBody = {
  node: 'n1',
  links: [
    linkStatus('n2'),
    linkStatus('n3', { state: 'backoff', lagSeconds: 12.345, conflicts: 0, lastError: LONG_STATUS_ERROR }),
    linkStatus('n4', { transactionsApplied: 1_234_567, conflicts: 98_765 }),
    linkStatus('n5', { state: 'connecting', receivedLsn: '1F/FFFFFFFF', appliedLsn: '1F/FFFFFF00', confirmedLsn: '1F/FFFF0000' }),
  ],
};

function output(): { io: Io; text: () => string } {
  let text = '';
  return { io: { out: (s) => (text += s), err: (s) => (text += s) }, text: () => text };
}

function tty(columns: number, rows = 50): Terminal {
  return { isTTY: true, columns: () => columns, rows: () => rows };
}

const PIPE: Terminal = { isTTY: false, columns: () => 80, rows: () => 24 };

describe('status --watch rendering', () => {
  for (const width of [160, 120, 100, 80, 60]) {
    it(`fits ${width} columns with every link's state, lag and counts whole`, () => {
      const lines = renderStatusFrame(BODY, { width, at: AT });
      for (const line of lines) expect(line.length, line).toBeLessThanOrEqual(width);
      expect(lines[0]).toMatch(/^node n1 {2}09:00:01 UTC/);
      for (const l of BODY.links) {
        const row = lines.find((line) => line.startsWith(`${l.peer} `))?.split(/ +/) ?? [];
        expect(row.slice(0, 2)).toEqual([l.peer, l.state]);
        expect(row).toContain(`${l.lagSeconds.toFixed(1)}s`);
        expect(row).toContain(String(l.transactionsApplied));
        expect(row).toContain(String(l.conflicts));
      }
      // The error is there from its start, beside its link or under the table.
      expect(lines.some((line) => /^n3 |^error n3: /.test(line) && line.includes('08:59:58 57P01 terminating'))).toBe(true);
    });
  }

  it('keeps every LSN when there is room, and drops them before anything else when there is not', () => {
    const wide = renderStatusFrame(BODY, { width: 160, at: AT });
    expect(wide[1]).toMatch(/^peer +state +received +applied +confirmed +lag +applied txns +conflicts +last error$/);
    expect(wide.find((l) => l.startsWith('n5 '))).toContain('1F/FFFFFFFF  1F/FFFFFF00  1F/FFFF0000');
    const narrow = renderStatusFrame(BODY, { width: 60, at: AT });
    expect(narrow[1]).not.toContain('received');
    expect(narrow.join('\n')).not.toContain('1F/FFFFFFFF');
  });

  it('keeps to the height: the links that need attention first, one line for the others', () => {
    // A node of a larger group: three failing or lagging links among healthy ones with conflicts.
    const body: StatusBody = {
      node: 'n1',
      links: [...BODY.links, ...['n6', 'n7', 'n8'].map((peer, i) => linkStatus(peer, { conflicts: 100 * (i + 1) })), linkStatus('n9', { lagSeconds: 9.5 })],
    };
    const urgent = ['n3', 'n5', 'n9'];
    for (const width of [120, 60]) {
      const unlimited = renderStatusFrame(body, { width, at: AT });
      for (let height = 1; height <= 16; height++) {
        const lines = renderStatusFrame(body, { width, height, at: AT });
        expect(lines.length, `width ${width}, height ${height}`).toBeLessThanOrEqual(height);
        for (const line of lines) expect(line.length, line).toBeLessThanOrEqual(width);
        if (height >= unlimited.length) {
          expect(lines).toEqual(unlimited);
          continue;
        }
        if (height < 2) continue;
        expect(lines[0]).toMatch(/^node n1 {2}09:00:01 UTC/);
        const shown = body.links.filter((l) => lines.some((line) => line.startsWith(`${l.peer} `)));
        const summary = lines.find((l) => /^(… )?\d+ (more )?links?/.test(l)) ?? '';
        expect(shown.length + Number(/\d+/.exec(summary)?.[0])).toBe(body.links.length);
        // What is shown is what needs attention most: first the urgent links, then the most conflicts.
        const expected = ['n3', 'n5', 'n9', 'n4', 'n8', 'n7', 'n6', 'n2'].slice(0, shown.length);
        expect(shown.map((l) => l.peer).sort()).toEqual([...expected].sort());
        if (shown.length >= urgent.length) expect(lines.some((line) => /^n3 |^error n3: /.test(line) && line.includes('57P01'))).toBe(true);
      }
      // 10 rows (a frame of 9 lines) keep every urgent link.
      const nine = renderStatusFrame(body, { width, height: 9, at: AT });
      for (const peer of urgent) expect(nine.some((line) => line.startsWith(`${peer} `))).toBe(true);
    }
  });

  it('prints one compact line per refresh for pipes', () => {
    expect(renderStatusLine({ node: 'n1', links: [linkStatus('n2'), linkStatus('n3', { state: 'backoff', lastError: LONG_STATUS_ERROR })] }, AT)).toBe(
      '2026-12-02T09:00:01.000Z node n1 | n2 streaming lag=0.0s applied=0/1A2B3C00 txns=1234 conflicts=3 | ' +
        `n3 backoff lag=0.0s applied=0/1A2B3C00 txns=1234 conflicts=3 error="57P01 ${LONG_STATUS_ERROR.message}"`,
    );
    expect(renderStatusLine({ node: 'n1', links: [] }, AT)).toBe('2026-12-02T09:00:01.000Z node n1 | no links');
  });
});

// ---- the loop, against a stand-in for the agent's HTTP API (GET /status), no PostgreSQL ----

describe('status --watch loop', () => {
  let server: Server | undefined;
  let requests = 0;
  afterEach(async () => {
    await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
    server = undefined;
    requests = 0;
  });

  /** Serves BODY at /status on 127.0.0.1 and a free port; returns the URL. */
  async function fakeAgent(body: unknown = BODY): Promise<string> {
    const s = createServer((req, res) => {
      requests += 1;
      if (req.url !== '/status') {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    });
    server = s;
    await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(s.address() as AddressInfo).port}/status`;
  }

  it('prints one line per refresh when not a terminal and ends after --count', async () => {
    const url = await fakeAgent();
    const out = output();
    const started = Date.now();
    const code = await watchStatus({ url, io: out.io, terminal: PIPE, stop: new AbortController().signal, count: 3, intervalMs: 50 });
    expect(code).toBe(0);
    const lines = out.text().trimEnd().split('\n');
    expect(lines).toHaveLength(3);
    for (const line of lines) expect(line).toMatch(/^\d{4}-\d\d-\d\dT[\d:.]+Z node n1 \| n2 streaming lag=0\.0s .* \| n3 backoff lag=12\.3s .*error="57P01 /);
    expect(out.text()).not.toContain('\u001b');
    expect(requests).toBe(3);
    // Refreshes are paced by the interval, not back to back.
    expect(Date.now() - started).toBeGreaterThanOrEqual(2 * 50 - 5);
  });

  it('redraws the table in place on a terminal, within its width, and shows the cursor again at the end', async () => {
    const url = await fakeAgent();
    const out = output();
    const code = await watchStatus({ url, io: out.io, terminal: tty(80), stop: new AbortController().signal, count: 2, intervalMs: 10 });
    expect(code).toBe(0);
    const text = out.text();
    expect(text.startsWith('\u001b[?25l')).toBe(true);
    expect(text.endsWith('\u001b[?25h')).toBe(true);
    const body = text.slice('\u001b[?25l'.length, -'\u001b[?25h'.length);
    const firstFrame = body.slice(0, body.indexOf('\u001b['));
    // Then: back over exactly the lines of the first frame (CSI n F), clear (CSI J), the second frame.
    const redraw = /^.\[(\d+)F.\[J([^]*)$/.exec(body.slice(firstFrame.length));
    const first = firstFrame.trimEnd().split('\n');
    expect(Number(redraw?.[1])).toBe(first.length);
    expect(redraw?.[2]).toBe(firstFrame);
    for (const line of first) expect(stripVTControlCharacters(line).length, line).toBeLessThanOrEqual(79);
    expect(first[1]).toMatch(/^peer +state /);
  });

  it('keeps every frame within the rows of the terminal, less one for the cursor', async () => {
    const url = await fakeAgent();
    const out = output();
    expect(await watchStatus({ url, io: out.io, terminal: tty(80, 6), stop: new AbortController().signal, count: 2, intervalMs: 10 })).toBe(0);
    // ESC is matched by '.': the frames are split where the redraw goes back (CSI n F) and clears (CSI J).
    const text = out.text().replace('\u001b[?25l', '').replace('\u001b[?25h', '');
    const frames = text.split(/.\[\d+F.\[J/);
    expect(frames).toHaveLength(2);
    for (const frame of frames) {
      const lines = frame.trimEnd().split('\n');
      expect(lines.length, frame).toBeLessThanOrEqual(5);
      // The link in backoff is among the links shown.
      expect(lines.some((line) => line.startsWith('n3 '))).toBe(true);
    }
    // The redraw goes back over as many lines as the frame had.
    expect(/.\[(\d+)F/.exec(text)?.[1]).toBe(String(frames[0]?.trimEnd().split('\n').length));
  });

  it('stops on the stop signal (SIGINT, SIGTERM) with exit code 0 and the cursor restored', async () => {
    const url = await fakeAgent();
    const out = output();
    const stop = new AbortController();
    const watching = watchStatus({ url, io: out.io, terminal: tty(100), stop: stop.signal, intervalMs: 60_000 });
    await new Promise((resolve) => setTimeout(resolve, 200));
    stop.abort();
    expect(await watching).toBe(0);
    expect(out.text().endsWith('\u001b[?25h')).toBe(true);
    expect(requests).toBe(1);
  });

  it('keeps watching when the agent does not answer, and says so; exit 1 if the last refresh found none', async () => {
    const url = await fakeAgent();
    await new Promise<void>((resolve) => server?.close(() => resolve()));
    server = undefined;
    const out = output();
    const code = await watchStatus({ url, io: out.io, terminal: PIPE, stop: new AbortController().signal, count: 2, intervalMs: 10 });
    expect(code).toBe(1);
    const lines = out.text().trimEnd().split('\n');
    expect(lines).toHaveLength(2);
    for (const line of lines) expect(line).toContain(`no agent answers at ${url}`);
  });

  it('reports an answer that is not a status', async () => {
    const url = await fakeAgent({ hello: 'world' });
    const out = output();
    expect(await watchStatus({ url, io: out.io, terminal: PIPE, stop: new AbortController().signal, count: 1 })).toBe(1);
    expect(out.text()).toContain('answered HTTP 200 without a status');
  });

  /** A config for node n1 whose agent listens where `url` points (the DSNs are never used by status). */
  function configFor(url: string): string {
    const file = join(tempDir('pgbidi-watch-'), 'n1.yaml');
    writeFileSync(
      file,
      `node: { name: n1, dsn: "postgres://pgbidi@127.0.0.1:1/app" }\npeers: [{ name: n2, dsn: "postgres://pgbidi@127.0.0.1:2/app" }]\nhttp: { listen: "${new URL(url).host}" }\n`,
    );
    return file;
  }

  it('is wired to `pgbidi status --watch --count N`, and refuses --count alone and --json with --watch', async () => {
    const url = await fakeAgent();
    const file = configFor(url);
    const out = output();
    expect(await main(['status', '--config', file, '--watch', '--count', '2'], out.io)).toBe(0);
    expect(out.text().trimEnd().split('\n')).toHaveLength(2);
    expect(out.text()).toMatch(/ node n1 \| n2 streaming /);

    const refused = output();
    expect(await main(['status', '--config', file, '--count', '2'], refused.io)).toBe(2);
    expect(await main(['status', '--config', file, '--watch', '--json'], refused.io)).toBe(2);
    expect(await main(['status', '--config', file, '--watch', '--count', '0'], refused.io)).toBe(2);
    expect(refused.text()).toContain('--count needs --watch');
  });

  it('ends with exit code 0 on a real SIGINT (bin/pgbidi.js, built dist/)', async () => {
    const file = configFor(await fakeAgent());
    const child = spawn(process.execPath, [BIN, 'status', '--config', file, '--watch'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString('utf8')));
    child.stderr.on('data', (chunk: Buffer) => (out += chunk.toString('utf8')));
    const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
    const deadline = Date.now() + 10_000;
    while (!out.includes('\n') && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
    child.kill('SIGINT');
    expect(await exited, out).toBe(0);
    expect(out).toMatch(/ node n1 \| n2 streaming /);
  }, 20_000);
});
