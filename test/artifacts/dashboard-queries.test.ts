/**
 * Every panel query of the committed dashboards, run against a real Prometheus (Debian's) that holds
 * 20 minutes of the agent's own series: backfilled with promtool from a synthetic history (see
 * support/synthetic-scrape.ts), no PostgreSQL needed. A query that errors, returns nothing although
 * it reads only exported metrics, or whose legend names a label its result does not have, fails.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { seriesRef } from '../../src/artifacts/metric-names.js';
import { panelsOf } from './support/dashboard-lint.js';
import { parsePromql } from './support/promql-tree.js';
import { syntheticHistory } from './support/synthetic-scrape.js';
import { findTool, REPO, run } from './support/tools.js';

type Obj = Record<string, unknown>;

const promtool = findTool('promtool', 'prometheus');
const prometheus = findTool('prometheus', 'prometheus');
const skip = promtool.skip || prometheus.skip;
const note = promtool.note || prometheus.note;

/** Panels that are legitimately empty in a short, calm history, and why. */
const EMPTY_AT_REST: Readonly<Record<string, string>> = {
  'Garbage collection time': 'nodejs_gc_duration_seconds has no sample until the first GC after the registry was created',
};

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const address = s.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      s.close(() => resolve(port));
    });
  });
}

describe(`dashboard queries against a live Prometheus${note}`, { skip }, () => {
  let dir = '';
  let child: ChildProcess | null = null;
  let base = '';
  let end = 0;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'pgbidi-dashboard-live-'));
    const history = await syntheticHistory({ end: Math.floor(Date.now() / 1000) - 300, minutes: 20, step: 15 });
    end = history.end;
    await writeFile(join(dir, 'history.om'), history.openMetrics);
    const backfill = run(promtool, ['tsdb', 'create-blocks-from', 'openmetrics', join(dir, 'history.om'), join(dir, 'tsdb')]);
    expect(backfill.status, backfill.output).toBe(0);
    await writeFile(join(dir, 'prometheus.yml'), 'global:\n  scrape_interval: 15s\n');
    const port = await freePort();
    base = `http://127.0.0.1:${port}`;
    if (prometheus.path === null) throw new Error('prometheus is required when CI=true');
    child = spawn(
      prometheus.path,
      [
        `--config.file=${join(dir, 'prometheus.yml')}`,
        `--storage.tsdb.path=${join(dir, 'tsdb')}`,
        `--web.listen-address=127.0.0.1:${port}`,
        '--storage.tsdb.retention.time=30d',
      ],
      { stdio: 'ignore' },
    );
    const deadline = Date.now() + 30_000;
    for (;;) {
      const ready = await fetch(`${base}/-/ready`).then(
        (r) => r.ok,
        () => false,
      );
      if (ready) break;
      if (Date.now() > deadline) throw new Error('prometheus did not become ready within 30 s');
      await new Promise((r) => setTimeout(r, 200));
    }
  }, 60_000);

  afterAll(async () => {
    const c = child;
    if (c && c.exitCode === null) {
      const exited = new Promise((r) => c.once('exit', r));
      c.kill('SIGTERM');
      await exited;
    }
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('every target of both dashboards returns series, with the labels its legend names', async () => {
    const files = (await readdir(join(REPO, 'dashboards'))).filter((f) => f.endsWith('.json')).sort();
    const problems: string[] = [];
    let checked = 0;
    for (const file of files) {
      const dashboard = JSON.parse(await readFile(join(REPO, 'dashboards', file), 'utf8')) as Obj;
      const single = file === 'pgbidi-link.json';
      for (const panel of panelsOf(dashboard)) {
        for (const target of (panel['targets'] as Obj[] | undefined) ?? []) {
          const expr = String(target['expr']);
          const query = expr
            .replaceAll('$__rate_interval', '1m')
            .replaceAll('$job', '.+')
            .replaceAll('$instance', '.+')
            .replaceAll('$peer', single ? 'b' : '.+');
          const where = `${file} "${String(panel['title'])}" ${String(target['refId'])}`;
          const res = (await (await fetch(`${base}/api/v1/query?time=${end}&query=${encodeURIComponent(query)}`)).json()) as {
            status: string;
            error?: string;
            data?: { result: { metric: Record<string, string> }[] };
          };
          checked++;
          if (res.status !== 'success') {
            problems.push(`${where}: ${res.error ?? 'error'}`);
            continue;
          }
          const result = res.data?.result ?? [];
          const awaited = parsePromql(expr).selectors.some((s) => seriesRef(s.metric)?.spec.status !== 'exported');
          if (result.length === 0) {
            if (!awaited && EMPTY_AT_REST[String(panel['title'])] === undefined) problems.push(`${where}: no series`);
            continue;
          }
          const legend = typeof target['legendFormat'] === 'string' ? target['legendFormat'] : '';
          for (const [, label] of legend.matchAll(/\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}/g)) {
            if (label && !result.some((r) => label in r.metric)) problems.push(`${where}: legend {{${label}}} but the result has no "${label}" label`);
          }
        }
      }
    }
    expect(checked).toBeGreaterThan(40);
    expect(problems).toEqual([]);
  }, 60_000);
});
