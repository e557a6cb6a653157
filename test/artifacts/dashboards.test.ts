import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { describe, expect, it } from 'vitest';
import { dashboards } from '../../src/artifacts/dashboards.js';
import { seriesRef } from '../../src/artifacts/metric-names.js';
import { lintDashboard, panelsOf } from './support/dashboard-lint.js';
import { parsePromql } from './support/promql-tree.js';
import { findTool, REPO, run } from './support/tools.js';

type Obj = Record<string, unknown>;

async function committedDashboards(): Promise<{ file: string; json: Obj }[]> {
  const dir = join(REPO, 'dashboards');
  const files = (await readdir(dir)).filter((f) => f.endsWith('.json')).sort();
  return Promise.all(files.map(async (file) => ({ file, json: JSON.parse(await readFile(join(dir, file), 'utf8')) as Obj })));
}

function targetsOf(d: Obj): { panel: Obj; target: Obj; expr: string }[] {
  return panelsOf(d).flatMap((panel) => ((panel['targets'] as Obj[] | undefined) ?? []).map((target) => ({ panel, target, expr: String(target['expr']) })));
}

function metricsOf(d: Obj): Set<string> {
  return new Set(targetsOf(d).flatMap((t) => parsePromql(t.expr).selectors.map((s) => seriesRef(s.metric)?.spec.name ?? s.metric)));
}

/** A deep copy of the generated overview to break in one place. */
function overview(): Obj {
  const d = dashboards().find((x) => x.name === 'pgbidi-overview');
  if (!d) throw new Error('no overview dashboard');
  return structuredClone(d.json);
}

function firstTimeseries(d: Obj): Obj {
  const p = panelsOf(d).find((x) => x['type'] === 'timeseries' && String(JSON.stringify(x['targets'])).includes('rate('));
  if (!p) throw new Error('no rate panel');
  return p;
}

function setExpr(panel: Obj, expr: string): void {
  const t = (panel['targets'] as Obj[])[0];
  if (!t) throw new Error('panel without target');
  t['expr'] = expr;
}

const promtool = findTool('promtool', 'prometheus');

describe('dashboards', () => {
  it('both dashboards are committed and pass every lint rule', async () => {
    const committed = await committedDashboards();
    expect(committed.map((c) => c.file)).toEqual(['pgbidi-link.json', 'pgbidi-overview.json']);
    for (const { json } of committed) expect(lintDashboard(json)).toEqual([]);
  });

  it('uids are stable, unique and distinct from titles; variables are datasource, job, instance, peer', async () => {
    const committed = await committedDashboards();
    expect(committed.map((c) => c.json['uid'])).toEqual(['pgbidi-link', 'pgbidi-overview']);
    for (const { json } of committed) {
      const names = ((json['templating'] as Obj)['list'] as Obj[]).map((v) => v['name']);
      expect(names).toEqual(['datasource', 'job', 'instance', 'peer']);
      expect(json['id']).toBeNull();
      expect(json['schemaVersion']).toBe(39);
    }
  });

  it('the overview shows links, lag three ways, throughput, conflicts by type and resolution, errors, dead letters, slots and agent health', async () => {
    const d = (await committedDashboards()).find((c) => c.file === 'pgbidi-overview.json')?.json ?? {};
    const metrics = metricsOf(d);
    for (const m of [
      'up',
      'pgbidi_link_state',
      'pgbidi_link_connected',
      'pgbidi_replication_lag_seconds',
      'pgbidi_heartbeat_timestamp_seconds',
      'pgbidi_apply_lag_bytes',
      'pgbidi_changes_applied_total',
      'pgbidi_transactions_applied_total',
      'pgbidi_conflicts_total',
      'pgbidi_conflicts_unresolved',
      'pgbidi_apply_errors_total',
      'pgbidi_dead_letters_total',
      'pgbidi_dead_letters_pending',
      'pgbidi_slot_retained_wal_bytes',
      'pgbidi_slot_safe_wal_size_bytes',
      'pgbidi_slot_wal_status',
      'process_resident_memory_bytes',
      'pgbidi_build_info',
    ]) {
      expect(metrics, m).toContain(m);
    }
    const exprs = targetsOf(d).map((t) => t.expr);
    expect(exprs.some((e) => /sum by \(type\) \(rate\(pgbidi_conflicts_total/.test(e))).toBe(true);
    expect(exprs.some((e) => /sum by \(resolution\) \(rate\(pgbidi_conflicts_total/.test(e))).toBe(true);
  });

  it('the link dashboard has delay and apply-duration heatmaps with exemplars, backpressure, reconnects and per-table conflicts', async () => {
    const d = (await committedDashboards()).find((c) => c.file === 'pgbidi-link.json')?.json ?? {};
    const heatmaps = panelsOf(d).filter((p) => p['type'] === 'heatmap');
    const heatmapTargets = heatmaps.flatMap((p) => p['targets'] as Obj[]);
    expect(heatmapTargets.map((t) => [parsePromql(String(t['expr'])).selectors[0]?.metric, t['format'], t['exemplar']])).toEqual([
      ['pgbidi_transaction_replication_delay_seconds_bucket', 'heatmap', true],
      ['pgbidi_transaction_apply_duration_seconds_bucket', 'heatmap', true],
    ]);
    const metrics = metricsOf(d);
    for (const m of ['pgbidi_queue_changes', 'pgbidi_queue_capacity_changes', 'pgbidi_link_reconnects_total', 'pgbidi_dead_letters_total']) {
      expect(metrics, m).toContain(m);
    }
    expect(targetsOf(d).some((t) => t.expr.includes('sum by (table) (rate(pgbidi_conflicts_total'))).toBe(true);
    const peer = ((d['templating'] as Obj)['list'] as Obj[]).find((v) => v['name'] === 'peer');
    expect(peer?.['multi']).toBe(false);
  });

  describe('the linter catches each broken rule', () => {
    const cases: [string, (d: Obj) => void, string][] = [
      [
        'a hard-coded rate range',
        (d) => setExpr(firstTimeseries(d), 'sum(rate(pgbidi_received_bytes_total{job=~"$job",instance=~"$instance",peer=~"$peer"}[5m]))'),
        'target-rate-interval-rule',
      ],
      [
        'a raw counter',
        (d) => setExpr(firstTimeseries(d), 'pgbidi_conflicts_total{job=~"$job",instance=~"$instance",peer=~"$peer"}'),
        'target-counter-agg-rule',
      ],
      [
        'a histogram bucket outside rate',
        (d) => setExpr(firstTimeseries(d), 'histogram_quantile(0.9, pgbidi_transaction_changes_bucket{job=~"$job",instance=~"$instance",peer=~"$peer"})'),
        'target-counter-agg-rule',
      ],
      [
        'a metric the agent does not export',
        (d) => setExpr(firstTimeseries(d), 'pgbidi_replication_lag_ms{job=~"$job",instance=~"$instance",peer=~"$peer"}'),
        'target-catalogue-rule',
      ],
      [
        'a label the metric does not have',
        (d) =>
          setExpr(firstTimeseries(d), 'sum(rate(pgbidi_conflicts_total{job=~"$job",instance=~"$instance",peer=~"$peer",conflict_type="x"}[$__rate_interval]))'),
        'target-label-rule',
      ],
      ['a query without the job matcher', (d) => setExpr(firstTimeseries(d), 'pgbidi_queue_changes{instance=~"$instance",peer=~"$peer"}'), 'target-job-rule'],
      ['a query without the instance matcher', (d) => setExpr(firstTimeseries(d), 'pgbidi_queue_changes{job=~"$job",peer=~"$peer"}'), 'target-instance-rule'],
      [
        'a per-link query that ignores $peer',
        (d) => setExpr(firstTimeseries(d), 'pgbidi_queue_changes{job=~"$job",instance=~"$instance"}'),
        'target-peer-rule',
      ],
      [
        'a query that does not parse',
        (d) => setExpr(firstTimeseries(d), 'sum(rate(pgbidi_received_bytes_total{job=~"$job",instance=~"$instance",peer=~"$peer"}[$__rate_interval])'),
        'target-promql-rule',
      ],
      ['a panel without description', (d) => delete firstTimeseries(d)['description'], 'panel-title-description-rule'],
      ['a panel without unit', (d) => delete ((firstTimeseries(d)['fieldConfig'] as Obj)['defaults'] as Obj)['unit'], 'panel-units-rule'],
      ['a made-up unit', (d) => (((firstTimeseries(d)['fieldConfig'] as Obj)['defaults'] as Obj)['unit'] = 'changes'), 'panel-units-rule'],
      ['a panel on a fixed datasource', (d) => (firstTimeseries(d)['datasource'] = { type: 'prometheus', uid: 'prom1' }), 'panel-datasource-rule'],
      ['a panel without queries', (d) => (firstTimeseries(d)['targets'] = []), 'panel-no-targets-rule'],
      ['overlapping panels', (d) => ((firstTimeseries(d)['gridPos'] as Obj)['y'] = 0), 'panel-layout-rule'],
      ['an editable dashboard', (d) => (d['editable'] = true), 'uneditable-dashboard'],
      ['a short uid', (d) => (d['uid'] = 'pgb'), 'dashboard-uid-rule'],
      [
        'no datasource variable',
        (d) => ((d['templating'] as Obj)['list'] = ((d['templating'] as Obj)['list'] as Obj[]).filter((v) => v['type'] !== 'datasource')),
        'template-datasource-rule',
      ],
      [
        'a single-select job variable',
        (d) => ((((d['templating'] as Obj)['list'] as Obj[]).find((v) => v['name'] === 'job') ?? {})['multi'] = false),
        'template-job-rule',
      ],
      [
        'an instance variable that never refreshes',
        (d) => ((((d['templating'] as Obj)['list'] as Obj[]).find((v) => v['name'] === 'instance') ?? {})['refresh'] = 0),
        'template-on-time-change-reload-rule',
      ],
    ];
    for (const [what, breakIt, rule] of cases) {
      it(`${what} → ${rule}`, () => {
        const d = overview();
        expect(lintDashboard(d)).toEqual([]);
        breakIt(d);
        expect(lintDashboard(d).map((p) => p.rule)).toContain(rule);
      });
    }

    it('exclusions silence a rule for the listed panels only', () => {
      const d = overview();
      const panel = firstTimeseries(d);
      delete panel['description'];
      expect(lintDashboard(d, { 'panel-title-description-rule': [String(panel['title'])] })).toEqual([]);
      expect(lintDashboard(d, { 'panel-title-description-rule': ['another panel'] })).toHaveLength(1);
    });
  });

  it(`every panel query is valid PromQL for the Prometheus release CI uses (promtool check rules)${promtool.note}`, { skip: promtool.skip }, async () => {
    const exprs = (await committedDashboards()).flatMap(({ json }) => targetsOf(json).map((t) => t.expr));
    expect(exprs.length).toBeGreaterThan(40);
    const asRules = {
      groups: [
        {
          name: 'dashboard-queries',
          rules: exprs.map((e, i) => ({
            record: `dashboard:check:${i}`,
            expr: e.replaceAll('$__rate_interval', '1m').replaceAll('$__range', '1h').replaceAll('$__interval', '1m'),
          })),
        },
      ],
    };
    const dir = await mkdtemp(join(tmpdir(), 'pgbidi-dashboard-queries-'));
    try {
      const file = join(dir, 'queries.yml');
      await writeFile(file, stringify(asRules, { lineWidth: 0 }));
      const r = run(promtool, ['check', 'rules', file]);
      expect(r.output).toContain(`SUCCESS: ${exprs.length} rules found`);
      expect(r.status).toBe(0);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
