/**
 * Typed builders for Grafana's classic dashboard JSON model (schemaVersion 39), the form that file
 * provisioning and the kube-prometheus-stack sidecar load. Only what pgbidi's dashboards use: rows
 * laid out on the 24-column grid, and timeseries, stat, state-timeline, table and heatmap panels that
 * all read the `${datasource}` variable.
 *
 * Why not @grafana/grafana-foundation-sdk: it works, but it is a 0.0.x "public preview" whose
 * defaults (legend hidden, schemaVersion, options it adds) move between releases, and every such move
 * would churn the committed JSON. These builders fix every key, in a stable order, and the linter in
 * test/artifacts checks the result against dashboard-linter's rules.
 */

export const DATASOURCE = { type: 'prometheus', uid: '${datasource}' } as const;
export type DatasourceRef = typeof DATASOURCE;

/** Grafana unit ids used here (a subset of Grafana's list; the linter checks against the same set). */
export const UNITS = ['s', 'bytes', 'Bps', 'ops', 'cps', 'percentunit', 'short', 'none'] as const;
export type Unit = (typeof UNITS)[number];

export const SCHEMA_VERSION = 39;

export interface TargetSpec {
  readonly expr: string;
  readonly legend?: string;
  /** Table panels read one instant value per series. */
  readonly instant?: boolean;
  /** Ask Prometheus for exemplars (trace ids) of the histogram this query reads. */
  readonly exemplar?: boolean;
}

export interface ValueMapping {
  readonly value: number;
  readonly text: string;
  readonly color: string;
}

export interface ThresholdStep {
  readonly value: number;
  readonly color: string;
}

interface PanelBase {
  readonly title: string;
  readonly description: string;
  readonly unit: Unit;
  readonly targets: readonly TargetSpec[];
  /** Grid width out of 24 (default 12) and height in grid rows (default 8). */
  readonly width?: number;
  readonly height?: number;
  /** Data links, e.g. to the link-detail dashboard for the series under the cursor. */
  readonly links?: readonly { readonly title: string; readonly url: string }[];
}

export interface TimeseriesSpec extends PanelBase {
  readonly kind: 'timeseries';
  readonly stack?: boolean;
  readonly min?: number;
  readonly max?: number;
  /** Drawn as dashed lines: usually the alert thresholds. */
  readonly thresholds?: readonly ThresholdStep[];
}

export interface StatSpec extends PanelBase {
  readonly kind: 'stat';
  readonly thresholds?: readonly ThresholdStep[];
  readonly mappings?: readonly ValueMapping[];
}

export interface StateTimelineSpec extends PanelBase {
  readonly kind: 'state-timeline';
  readonly mappings: readonly ValueMapping[];
}

export interface TableSpec extends PanelBase {
  readonly kind: 'table';
  /** Columns to hide (Time, Value, __name__ ...). */
  readonly hide?: readonly string[];
}

export interface HeatmapSpec extends PanelBase {
  readonly kind: 'heatmap';
}

export type PanelSpec = TimeseriesSpec | StatSpec | StateTimelineSpec | TableSpec | HeatmapSpec;

export interface RowSpec {
  readonly title: string;
  readonly panels: readonly PanelSpec[];
}

export interface QueryVariableSpec {
  readonly name: string;
  readonly label: string;
  /** label_values(...) */
  readonly query: string;
  readonly multi: boolean;
  readonly includeAll: boolean;
}

export interface DashboardSpec {
  readonly uid: string;
  readonly title: string;
  readonly description: string;
  readonly tags: readonly string[];
  readonly refresh: string;
  readonly timeFrom: string;
  readonly variables: readonly QueryVariableSpec[];
  readonly rows: readonly RowSpec[];
  /** Links in the dashboard header, by tag (Grafana lists every dashboard that has the tag). */
  readonly linkTags: readonly string[];
}

/** A JSON value as written to disk. */
export type Json = string | number | boolean | null | readonly Json[] | { readonly [k: string]: Json };
export type JsonObject = { readonly [k: string]: Json };

interface GridPos {
  h: number;
  w: number;
  x: number;
  y: number;
}

/** Lays the rows out top to bottom, panels left to right, wrapping at 24 columns. */
export function buildDashboard(d: DashboardSpec): JsonObject {
  const panels: JsonObject[] = [];
  let id = 1;
  let y = 0;
  for (const row of d.rows) {
    panels.push(rowPanel(id++, row.title, y));
    y += 1;
    let x = 0;
    let lineHeight = 0;
    for (const p of row.panels) {
      const w = p.width ?? 12;
      const h = p.height ?? 8;
      if (w < 1 || w > 24) throw new RangeError(`panel "${p.title}" has width ${w}`);
      if (x + w > 24) {
        y += lineHeight;
        x = 0;
        lineHeight = 0;
      }
      panels.push(panel(id++, p, { h, w, x, y }));
      x += w;
      lineHeight = Math.max(lineHeight, h);
    }
    y += lineHeight;
  }
  return {
    annotations: {
      list: [
        {
          builtIn: 1,
          datasource: { type: 'grafana', uid: '-- Grafana --' },
          enable: true,
          hide: true,
          iconColor: 'rgba(0, 211, 255, 1)',
          name: 'Annotations & Alerts',
          type: 'dashboard',
        },
      ],
    },
    description: d.description,
    editable: false,
    fiscalYearStartMonth: 0,
    graphTooltip: 1,
    id: null,
    links: d.linkTags.map((tag) => ({
      asDropdown: false,
      icon: 'external link',
      includeVars: true,
      keepTime: true,
      tags: [tag],
      targetBlank: false,
      title: 'pgbidi dashboards',
      type: 'dashboards',
    })),
    panels,
    refresh: d.refresh,
    schemaVersion: SCHEMA_VERSION,
    tags: [...d.tags],
    templating: { list: [datasourceVariable(), ...d.variables.map(queryVariable)] },
    time: { from: d.timeFrom, to: 'now' },
    timepicker: {},
    timezone: '',
    title: d.title,
    uid: d.uid,
    version: 1,
  };
}

function rowPanel(id: number, title: string, y: number): JsonObject {
  return { collapsed: false, gridPos: { h: 1, w: 24, x: 0, y }, id, panels: [], title, type: 'row' };
}

function datasourceVariable(): JsonObject {
  return {
    current: {},
    hide: 0,
    includeAll: false,
    label: 'Data Source',
    multi: false,
    name: 'datasource',
    options: [],
    query: 'prometheus',
    refresh: 1,
    regex: '',
    skipUrlSync: false,
    type: 'datasource',
  };
}

function queryVariable(v: QueryVariableSpec): JsonObject {
  return {
    ...(v.includeAll ? { allValue: '.+' } : {}),
    current: {},
    datasource: DATASOURCE,
    definition: v.query,
    hide: 0,
    includeAll: v.includeAll,
    label: v.label,
    multi: v.multi,
    name: v.name,
    options: [],
    query: { qryType: 1, query: v.query, refId: 'PrometheusVariableQueryEditor-VariableQuery' },
    refresh: 2,
    regex: '',
    skipUrlSync: false,
    sort: 1,
    type: 'query',
  };
}

function targets(p: PanelSpec): JsonObject[] {
  return p.targets.map((t, i) => {
    const format = p.kind === 'heatmap' ? 'heatmap' : t.instant ? 'table' : 'time_series';
    return {
      datasource: DATASOURCE,
      editorMode: 'code',
      exemplar: t.exemplar ?? false,
      expr: t.expr,
      format,
      instant: t.instant ?? false,
      legendFormat: t.legend ?? '__auto',
      range: !(t.instant ?? false),
      refId: String.fromCharCode(65 + i),
    };
  });
}

function thresholds(steps: readonly ThresholdStep[] | undefined, base = 'green'): JsonObject {
  return {
    mode: 'absolute',
    steps: [{ color: base, value: null }, ...(steps ?? []).map((s) => ({ color: s.color, value: s.value }))],
  };
}

function mappings(m: readonly ValueMapping[] | undefined): Json[] {
  if (!m || m.length === 0) return [];
  const options: Record<string, Json> = {};
  m.forEach((v, index) => {
    options[String(v.value)] = { color: v.color, index, text: v.text };
  });
  return [{ options, type: 'value' }];
}

function links(p: PanelSpec): Json[] {
  return (p.links ?? []).map((l) => ({ targetBlank: false, title: l.title, url: l.url }));
}

function panel(id: number, p: PanelSpec, gridPos: GridPos): JsonObject {
  const common = { datasource: DATASOURCE, description: p.description, gridPos: { ...gridPos }, id };
  switch (p.kind) {
    case 'timeseries':
      return {
        ...common,
        fieldConfig: {
          defaults: {
            color: { mode: 'palette-classic' },
            custom: {
              axisSoftMin: 0,
              drawStyle: 'line',
              fillOpacity: p.stack ? 40 : 10,
              lineWidth: 1,
              showPoints: 'never',
              spanNulls: false,
              stacking: { group: 'A', mode: p.stack ? 'normal' : 'none' },
              thresholdsStyle: { mode: p.thresholds ? 'dashed' : 'off' },
            },
            links: links(p),
            ...(p.max !== undefined ? { max: p.max } : {}),
            ...(p.min !== undefined ? { min: p.min } : {}),
            thresholds: thresholds(p.thresholds, 'transparent'),
            unit: p.unit,
          },
          overrides: [],
        },
        options: {
          legend: { calcs: ['lastNotNull', 'max'], displayMode: 'table', placement: 'bottom', showLegend: true },
          tooltip: { mode: 'multi', sort: 'desc' },
        },
        targets: targets(p),
        title: p.title,
        type: 'timeseries',
      };
    case 'stat':
      return {
        ...common,
        fieldConfig: {
          defaults: { color: { mode: 'thresholds' }, links: links(p), mappings: mappings(p.mappings), thresholds: thresholds(p.thresholds), unit: p.unit },
          overrides: [],
        },
        options: {
          colorMode: 'value',
          graphMode: 'area',
          justifyMode: 'auto',
          orientation: 'auto',
          reduceOptions: { calcs: ['lastNotNull'], fields: '', values: false },
          textMode: 'auto',
        },
        targets: targets(p),
        title: p.title,
        type: 'stat',
      };
    case 'state-timeline':
      return {
        ...common,
        fieldConfig: {
          defaults: {
            color: { mode: 'thresholds' },
            custom: { fillOpacity: 70, lineWidth: 0 },
            links: links(p),
            mappings: mappings(p.mappings),
            thresholds: thresholds(undefined, 'text'),
            unit: p.unit,
          },
          overrides: [],
        },
        options: {
          alignValue: 'left',
          legend: { displayMode: 'list', placement: 'bottom', showLegend: false },
          mergeValues: true,
          rowHeight: 0.9,
          showValue: 'auto',
          tooltip: { mode: 'single', sort: 'none' },
        },
        targets: targets(p),
        title: p.title,
        type: 'state-timeline',
      };
    case 'table':
      return {
        ...common,
        fieldConfig: {
          defaults: { custom: { align: 'auto', cellOptions: { type: 'auto' } }, links: links(p), unit: p.unit },
          overrides: [],
        },
        options: { cellHeight: 'sm', showHeader: true },
        targets: targets(p),
        title: p.title,
        transformations: [
          { id: 'merge', options: {} },
          { id: 'organize', options: { excludeByName: Object.fromEntries((p.hide ?? []).map((c) => [c, true])) } },
        ],
        type: 'table',
      };
    case 'heatmap':
      return {
        ...common,
        fieldConfig: { defaults: { custom: { scaleDistribution: { type: 'linear' } }, links: links(p) }, overrides: [] },
        options: {
          calculate: false,
          cellGap: 1,
          cellValues: { unit: 'ops' },
          color: { exponent: 0.5, fill: 'dark-orange', mode: 'scheme', reverse: false, scale: 'exponential', scheme: 'Oranges', steps: 64 },
          exemplars: { color: 'rgba(255,0,255,0.7)' },
          filterValues: { le: 1e-9 },
          legend: { show: true },
          rowsFrame: { layout: 'auto' },
          showValue: 'never',
          tooltip: { mode: 'single', showColorScale: false, yHistogram: true },
          yAxis: { axisPlacement: 'left', reverse: false, unit: p.unit },
        },
        targets: targets(p),
        title: p.title,
        type: 'heatmap',
      };
  }
}
