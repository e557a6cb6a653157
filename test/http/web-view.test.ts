import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chromium } from 'playwright-core';
import type { Browser, Page } from 'playwright-core';
import { Agent } from '../../src/agent.js';
import type { LinkStatus } from '../../src/link/link.js';
import { createLogger } from '../../src/observability/logger.js';
import { parseConfig } from '../../src/config/load-config.js';
import { embeddedBinDir } from '../../src/pg-server/postgres-binaries.js';
import { chromiumArgs, chromiumPath } from '../support/browser.js';
import { eventually, useCluster } from '../support/cluster-fixture.js';

const SCHEMA = ['CREATE TABLE kv (id int PRIMARY KEY, v text)'];
const PASSWORD = 'web-view-secret-8c1f';
const browserPath = chromiumPath();

/** The numbers a link row of the page shows, read from its data attributes. */
async function linkRow(page: Page, link: string): Promise<Record<string, string>> {
  const row: Record<string, string> = {};
  for (const cell of await page.locator(`tr[data-link="${link}"] td[data-field]`).all()) {
    const field = (await cell.getAttribute('data-field')) ?? '';
    row[field] = (await cell.getAttribute('data-value')) ?? (await cell.textContent()) ?? '';
  }
  return row;
}

async function updates(page: Page): Promise<number> {
  return Number((await page.getAttribute('body', 'data-updates')) ?? '0');
}

describe.skipIf(browserPath === undefined)('web view (headless chromium, PostgreSQL 18)', () => {
  const cluster = useCluster(() => ({
    binDir: embeddedBinDir(),
    nodes: ['a', 'b'],
    schema: SCHEMA,
    replication: { heartbeat_interval_ms: 300, feedback_interval_ms: 300 },
  }));
  let browser: Browser;
  let agentA: Agent;

  beforeAll(async () => {
    browser = await chromium.launch({ executablePath: browserPath, args: chromiumArgs() });
  });
  afterAll(async () => {
    await browser?.close();
  });

  it('shows the links of its node with the numbers of /status, updates, and shows no secret', async () => {
    const c = cluster.get();
    await c.setupAll();
    // The same key on both nodes before the agents run: a's agent logs insert_exists.
    await c.query('a', `INSERT INTO kv VALUES (1, 'from a')`);
    await c.query('b', `INSERT INTO kv VALUES (1, 'from b')`);
    await c.query('b', `INSERT INTO kv SELECT g, 'b' FROM generate_series(100, 149) g`);
    // Trust authentication ignores the password; it is there to be looked for in what the page shows.
    const raw = c.rawConfig('a');
    const dsn = raw.node.dsn.replace('postgresql://postgres@', `postgresql://postgres:${PASSWORD}@`);
    agentA = await Agent.start({
      config: parseConfig({ ...raw, node: { ...raw.node, dsn } }, {}, 'node a'),
      log: createLogger('silent'),
      defaultMetrics: false,
    });
    c.agents.set('a', agentA);
    await c.startAgent('b');
    await c.waitConverged('public', 'kv');

    const page = await browser.newPage();
    const problems: string[] = [];
    page.on('console', (m) => {
      if (m.type() === 'error') problems.push(m.text());
    });
    page.on('pageerror', (e) => problems.push(e.message));
    const base = `http://${agentA.httpAddress}`;
    const response = await page.goto(`${base}/`);
    expect(response?.status()).toBe(200);
    expect(response?.headers()['content-security-policy']).toContain("default-src 'none'");
    await page.waitForSelector('tr[data-link="b->a"]');

    const status = async (): Promise<LinkStatus> => {
      const body = (await (await fetch(`${base}/status`)).json()) as { links: LinkStatus[] };
      const link = body.links.find((l) => l.peer === 'b');
      if (!link) throw new Error('no link from b in /status');
      return link;
    };
    // Idle: the counters the page shows are the ones /status shows.
    await eventually('the page shows what /status shows', async () => {
      const [row, s] = [await linkRow(page, 'b->a'), await status()];
      return row['state'] === s.state && Number(row['changes-applied']) === s.changesApplied && Number(row['conflicts']) === s.conflicts;
    });
    let row = await linkRow(page, 'b->a');
    const s = await status();
    expect(row['state']).toBe('streaming');
    expect(Number(row['transactions-applied'])).toBeGreaterThan(0);
    expect(Number(row['changes-applied'])).toBeGreaterThanOrEqual(51);
    expect(Number(row['conflict-insert_exists'])).toBe(1);
    expect(Math.abs(Number(row['lag']) - s.lagSeconds)).toBeLessThan(2);
    // The lag chart has a line for the link, the slot b reads on a is listed.
    expect(await page.locator('svg polyline[data-series="b → a"]').count()).toBe(1);
    expect(await page.locator('tr[data-slot="pgbidi_a_to_b"]').count()).toBe(1);

    // It updates: new rows on b show up without a reload.
    const before = await updates(page);
    const applied = Number(row['changes-applied']);
    await c.query('b', `INSERT INTO kv SELECT g, 'more' FROM generate_series(200, 229) g`);
    await eventually('the page counts the new rows', async () => Number((await linkRow(page, 'b->a'))['changes-applied']) >= applied + 30);
    expect(await updates(page)).toBeGreaterThan(before);
    row = await linkRow(page, 'b->a');
    expect(Number(row['changes-applied'])).toBeLessThanOrEqual((await status()).changesApplied);

    // No secret, neither in the page nor in what it reads.
    const html = await page.content();
    const json = await (await fetch(`${base}/view.json`)).text();
    for (const text of [html, json]) {
      expect(text).not.toContain(PASSWORD);
      expect(text).not.toContain(dsn);
      expect(text).not.toContain('postgresql://');
    }
    expect(problems).toEqual([]);
    await page.close();
  });
});
