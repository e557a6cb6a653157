/**
 * A dashboard linter for Grafana classic JSON, after grafana/dashboard-linter (the Go tool, which is
 * not installable here): the same rule names, plus pgbidi's own (metric catalogue, `$peer` filter,
 * layout). Pure: JSON in, problems out.
 *
 * Rules:
 *   template-datasource-rule        one variable `datasource`, type datasource, label "Data Source", query prometheus
 *   template-job-rule               variable `job`: query on ${datasource}, multi, include All with allValue .+
 *   template-instance-rule          the same for `instance`
 *   template-on-time-change-reload-rule  query variables refresh on time range change (2)
 *   template-label-promql-rule      label_values(...) wraps a valid selector of a catalogued metric
 *   uneditable-dashboard            editable: false (dashboards are code)
 *   dashboard-uid-rule              uid of 8-40 characters [A-Za-z0-9_-]
 *   panel-layout-rule               unique panel ids, gridPos inside 24 columns, no overlaps
 *   panel-datasource-rule           every panel and target uses ${datasource}
 *   panel-title-description-rule    every panel has a title and a description
 *   panel-units-rule                every panel has a unit from the known list
 *   panel-no-targets-rule           every panel has queries
 *   target-promql-rule              every query parses
 *   target-rate-interval-rule       rate/irate/increase read [$__rate_interval]
 *   target-job-rule                 every selector matches job=~"$job"
 *   target-instance-rule            every selector matches instance=~"$instance"
 *   target-peer-rule                every selector of a per-link metric matches peer=~"$peer"
 *   target-counter-agg-rule         counters only inside rate/irate/increase
 *   target-catalogue-rule           every series is in the metric catalogue
 *   target-label-rule               every matcher names a label the series has
 */
import { seriesRef } from '../../../src/artifacts/metric-names.js';
import { UNITS } from '../../../src/artifacts/dashboard-model.js';
import { labelValuesSelector, parsePromql } from './promql-tree.js';
import type { SelectorUse } from './promql-tree.js';
import { checkSelector, RATE_FUNCTIONS } from './series-checks.js';

export interface LintProblem {
  readonly rule: string;
  readonly dashboard: string;
  readonly panel?: string;
  readonly message: string;
}

/** Rules to skip, as a `.lint` file would list them: rule → panel titles (or '*' for all). */
export type Exclusions = Readonly<Record<string, readonly string[]>>;

type Obj = Record<string, unknown>;

const DATASOURCE_UID = '${datasource}';
const UNIT_PANELS = new Set(['timeseries', 'stat', 'table', 'gauge', 'state-timeline', 'bargauge', 'graph', 'singlestat']);

function obj(v: unknown): Obj | undefined {
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Obj) : undefined;
}

function arr(v: unknown): unknown[] {
  return Array.isArray(v) ? v : [];
}

function str(v: unknown): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

/** Every (panel, target) pair with its expression, including panels nested in collapsed rows. */
export function panelsOf(dashboard: Obj): Obj[] {
  const out: Obj[] = [];
  for (const p of arr(dashboard['panels'])) {
    const panel = obj(p);
    if (!panel) continue;
    out.push(panel);
    for (const nested of arr(panel['panels'])) {
      const n = obj(nested);
      if (n) out.push(n);
    }
  }
  return out;
}

export function lintDashboard(input: unknown, exclusions: Exclusions = {}): LintProblem[] {
  const dashboard = obj(input) ?? {};
  const name = str(dashboard['uid']) ?? str(dashboard['title']) ?? '(no uid)';
  const problems: LintProblem[] = [];
  const report = (rule: string, message: string, panel?: string): void => {
    const excluded = exclusions[rule];
    if (excluded && (excluded.includes('*') || (panel !== undefined && excluded.includes(panel)))) return;
    problems.push(panel === undefined ? { rule, dashboard: name, message } : { rule, dashboard: name, panel, message });
  };

  // Dashboard
  if (dashboard['editable'] !== false) report('uneditable-dashboard', 'editable must be false for a provisioned dashboard');
  const uid = str(dashboard['uid']) ?? '';
  if (!/^[A-Za-z0-9_-]{8,40}$/.test(uid)) report('dashboard-uid-rule', `uid "${uid}" must be 8-40 characters of [A-Za-z0-9_-]`);

  // Templating
  const variables = arr(obj(dashboard['templating'])?.['list'])
    .map(obj)
    .filter((v): v is Obj => v !== undefined);
  const datasources = variables.filter((v) => v['type'] === 'datasource');
  const ds = datasources[0];
  if (datasources.length !== 1 || !ds || ds['name'] !== 'datasource') {
    report('template-datasource-rule', 'needs exactly one datasource variable, named "datasource"');
  } else {
    if (ds['label'] !== 'Data Source') report('template-datasource-rule', 'the datasource variable must be labelled "Data Source"');
    if (ds['query'] !== 'prometheus') report('template-datasource-rule', 'the datasource variable must select prometheus datasources');
  }
  for (const required of ['job', 'instance'] as const) {
    const v = variables.find((x) => x['name'] === required);
    const rule = `template-${required}-rule`;
    if (!v) {
      report(rule, `missing variable "${required}"`);
      continue;
    }
    if (v['type'] !== 'query') report(rule, `variable "${required}" must be a query variable`);
    if (obj(v['datasource'])?.['uid'] !== DATASOURCE_UID) report(rule, `variable "${required}" must query ${DATASOURCE_UID}`);
    if (v['multi'] !== true) report(rule, `variable "${required}" must be multi-select`);
    if (v['includeAll'] !== true || v['allValue'] !== '.+') report(rule, `variable "${required}" must include All with allValue ".+"`);
  }
  for (const v of variables.filter((x) => x['type'] === 'query')) {
    const vname = str(v['name']) ?? '?';
    if (v['refresh'] !== 2) report('template-on-time-change-reload-rule', `variable "${vname}" must refresh on time range change (refresh: 2)`);
    const query = str(obj(v['query'])?.['query']) ?? str(v['query']) ?? '';
    const selector = labelValuesSelector(query);
    if (selector === null) {
      report('template-label-promql-rule', `variable "${vname}" query "${query}" is not label_values(<selector>, <label>)`);
      continue;
    }
    const parsed = parsePromql(selector);
    for (const e of parsed.errors) report('template-label-promql-rule', `variable "${vname}": ${e}`);
    for (const s of parsed.selectors) {
      for (const p of checkSelector(s)) report('template-label-promql-rule', `variable "${vname}": ${p.message}`);
    }
  }

  // Panels
  const ids = new Set<unknown>();
  const cells = new Map<string, string>();
  for (const panel of panelsOf(dashboard)) {
    const type = str(panel['type']) ?? '';
    const title = str(panel['title']) ?? '';
    const label = title || `id ${String(panel['id'])}`;
    if (ids.has(panel['id'])) report('panel-layout-rule', `duplicate panel id ${String(panel['id'])}`, label);
    ids.add(panel['id']);
    const g = obj(panel['gridPos']);
    const [x, y, w, h] = [g?.['x'], g?.['y'], g?.['w'], g?.['h']].map((n) => (typeof n === 'number' ? n : NaN)) as [number, number, number, number];
    if (![x, y, w, h].every(Number.isInteger) || x < 0 || w < 1 || x + w > 24 || h < 1) {
      report('panel-layout-rule', `gridPos ${JSON.stringify(g)} is outside the 24-column grid`, label);
    } else {
      for (let cx = x; cx < x + w; cx++) {
        for (let cy = y; cy < y + h; cy++) {
          const other = cells.get(`${cx},${cy}`);
          if (other !== undefined) {
            report('panel-layout-rule', `overlaps panel "${other}" at column ${cx}, row ${cy}`, label);
            cy = y + h;
            cx = x + w;
          } else {
            cells.set(`${cx},${cy}`, label);
          }
        }
      }
    }
    if (type === 'row') continue;

    if (!title.trim()) report('panel-title-description-rule', 'panel has no title', label);
    if (!str(panel['description'])?.trim()) report('panel-title-description-rule', 'panel has no description', label);
    if (obj(panel['datasource'])?.['uid'] !== DATASOURCE_UID) report('panel-datasource-rule', `panel datasource must be ${DATASOURCE_UID}`, label);

    const defaults = obj(obj(panel['fieldConfig'])?.['defaults']);
    const unit = type === 'heatmap' ? str(obj(obj(panel['options'])?.['yAxis'])?.['unit']) : str(defaults?.['unit']);
    if (UNIT_PANELS.has(type) || type === 'heatmap') {
      if (!unit) report('panel-units-rule', 'panel has no unit', label);
      else if (!(UNITS as readonly string[]).includes(unit)) report('panel-units-rule', `unknown unit "${unit}"`, label);
    }

    const targets = arr(panel['targets'])
      .map(obj)
      .filter((t): t is Obj => t !== undefined);
    if (targets.length === 0) report('panel-no-targets-rule', 'panel has no queries', label);
    const refIds = new Set<unknown>();
    for (const t of targets) {
      if (refIds.has(t['refId'])) report('panel-layout-rule', `duplicate refId ${String(t['refId'])}`, label);
      refIds.add(t['refId']);
      if (obj(t['datasource'])?.['uid'] !== DATASOURCE_UID)
        report('panel-datasource-rule', `target ${String(t['refId'])} datasource must be ${DATASOURCE_UID}`, label);
      const expr = str(t['expr']) ?? '';
      if (!expr.trim()) {
        report('target-promql-rule', `target ${String(t['refId'])} has no expression`, label);
        continue;
      }
      for (const p of lintExpression(expr)) report(p.rule, p.message, label);
    }
  }
  return problems;
}

/** The target-* rules for one expression. */
export function lintExpression(expr: string): { rule: string; message: string }[] {
  const out: { rule: string; message: string }[] = [];
  const parsed = parsePromql(expr);
  for (const e of parsed.errors) out.push({ rule: 'target-promql-rule', message: `does not parse ${e}` });
  if (parsed.selectors.length === 0) out.push({ rule: 'target-promql-rule', message: `selects no series: ${expr}` });
  for (const s of parsed.selectors) {
    if (s.func !== null && RATE_FUNCTIONS.has(s.func) && s.range !== '$__rate_interval') {
      out.push({ rule: 'target-rate-interval-rule', message: `${s.func}() over [${s.range ?? ''}] must use [$__rate_interval]: ${s.text}` });
    }
    if (!hasVariableMatcher(s, 'job')) out.push({ rule: 'target-job-rule', message: `no job=~"$job" matcher: ${s.text}` });
    if (!hasVariableMatcher(s, 'instance')) out.push({ rule: 'target-instance-rule', message: `no instance=~"$instance" matcher: ${s.text}` });
    const ref = seriesRef(s.metric);
    if (ref?.spec.labels.includes('peer') && !hasVariableMatcher(s, 'peer')) {
      out.push({ rule: 'target-peer-rule', message: `per-link metric without peer=~"$peer": ${s.text}` });
    }
    for (const p of checkSelector(s)) out.push(p);
  }
  return out;
}

function hasVariableMatcher(s: SelectorUse, label: string): boolean {
  return s.matchers.some((m) => m.label === label && m.op === '=~' && m.value.includes(`$${label}`));
}
