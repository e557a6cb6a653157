import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import { defaultConfig } from '../../src/artifacts/config.js';
import { REPO } from './support/tools.js';

const DIR = 'deploy/kubernetes/monitoring';

async function yamlFile(path: string): Promise<unknown> {
  return parse(await readFile(join(REPO, path), 'utf8')) as unknown;
}

/** The value at a path of object keys and array indexes, or undefined. */
function at(value: unknown, ...path: (string | number)[]): unknown {
  let v = value;
  for (const k of path) v = typeof v === 'object' && v !== null ? (v as Record<string | number, unknown>)[k] : undefined;
  return v;
}

describe('Kubernetes objects for kube-prometheus-stack', () => {
  it('the PrometheusRule carries exactly the groups of alerts/pgbidi-rules.yml and the release label', async () => {
    const crd = await yamlFile(`${DIR}/prometheusrule.yaml`);
    expect(at(crd, 'apiVersion')).toBe('monitoring.coreos.com/v1');
    expect(at(crd, 'kind')).toBe('PrometheusRule');
    expect(at(crd, 'metadata', 'labels', 'release')).toBe(defaultConfig.kubernetes.releaseLabel);
    expect(at(crd, 'spec')).toEqual(await yamlFile('alerts/pgbidi-rules.yml'));
  });

  it('the ServiceMonitor scrapes the metrics port and names the job the rules select on', async () => {
    const sm = await yamlFile(`${DIR}/servicemonitor.yaml`);
    expect(at(sm, 'kind')).toBe('ServiceMonitor');
    expect(at(sm, 'metadata', 'labels', 'release')).toBe(defaultConfig.kubernetes.releaseLabel);
    expect(at(sm, 'spec', 'selector')).toEqual({ matchLabels: { 'app.kubernetes.io/name': defaultConfig.kubernetes.appName } });
    expect(at(sm, 'spec', 'endpoints')).toEqual([{ port: 'metrics', path: '/metrics', interval: '30s', scrapeTimeout: '10s' }]);
    // job = the value of this Service label, which must be what every rule selects
    expect(at(sm, 'spec', 'jobLabel')).toBe('app.kubernetes.io/name');
    expect(defaultConfig.ruleSelector).toBe(`job="${defaultConfig.kubernetes.appName}"`);
  });

  it('each dashboard ConfigMap is labelled for the Grafana sidecar and embeds the committed JSON byte for byte', async () => {
    const dashboards = (await readdir(join(REPO, 'dashboards'))).filter((f) => f.endsWith('.json')).sort();
    expect(dashboards.length).toBe(2);
    for (const file of dashboards) {
      const cm = await yamlFile(`${DIR}/grafana-dashboard-${file.replace(/\.json$/, '')}.yaml`);
      expect(at(cm, 'kind')).toBe('ConfigMap');
      expect(at(cm, 'metadata', 'labels', 'grafana_dashboard')).toBe('1');
      expect(Object.keys(at(cm, 'data') as object)).toEqual([file]);
      expect(at(cm, 'data', file)).toBe(await readFile(join(REPO, 'dashboards', file), 'utf8'));
    }
  });

  it('kustomization.yaml lists every object and sets the namespace', async () => {
    const k = await yamlFile(`${DIR}/kustomization.yaml`);
    const objects = (await readdir(join(REPO, DIR))).filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml').sort();
    expect([...(at(k, 'resources') as string[])].sort()).toEqual(objects);
    expect(at(k, 'namespace')).toBe(defaultConfig.kubernetes.namespace);
    for (const f of objects) expect(at(await yamlFile(`${DIR}/${f}`), 'metadata', 'namespace')).toBeUndefined();
  });
});

describe('Grafana provisioning', () => {
  it('a read-only file provider and a Prometheus datasource with exemplar links on trace_id', async () => {
    const dashboards = await yamlFile('dashboards/provisioning/dashboards.yaml');
    expect(at(dashboards, 'apiVersion')).toBe(1);
    expect(at(dashboards, 'providers')).toHaveLength(1);
    expect(at(dashboards, 'providers', 0)).toMatchObject({ type: 'file', allowUiUpdates: false, options: { path: defaultConfig.grafana.dashboardsPath } });
    const ds = await yamlFile('dashboards/provisioning/datasources.yaml');
    expect(at(ds, 'apiVersion')).toBe(1);
    expect(at(ds, 'datasources', 0)).toMatchObject({ type: 'prometheus', uid: defaultConfig.grafana.datasourceUid });
    expect(at(ds, 'datasources', 0, 'jsonData', 'exemplarTraceIdDestinations')).toEqual([{ name: 'trace_id', datasourceUid: 'tempo' }]);
  });
});
