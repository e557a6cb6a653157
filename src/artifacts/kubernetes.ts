/**
 * Objects for kube-prometheus-stack (prometheus-operator and the Grafana dashboard sidecar):
 *   PrometheusRule   the same groups as alerts/pgbidi-rules.yml, labelled `release: <helm release>`
 *                    so that the stack's default ruleSelector picks it up
 *   ServiceMonitor   scrapes the agent's Service (port `metrics`, /metrics); `job` = the Service's
 *                    app.kubernetes.io/name label, which is what the rules select on
 *   ConfigMaps       one per dashboard, labelled grafana_dashboard: "1" for the sidecar
 * No object names a namespace: kustomization.yaml sets it, so `kubectl apply -k` puts them next to
 * the agent.
 */
import { defaultConfig } from './config.js';
import type { ArtifactConfig } from './config.js';
import type { NamedDashboard } from './dashboards.js';
import { renderJson } from './render-format.js';
import type { RuleFile } from './rules.js';

function commonLabels(config: ArtifactConfig): Record<string, string> {
  return {
    'app.kubernetes.io/name': config.kubernetes.appName,
    'app.kubernetes.io/component': 'monitoring',
    'app.kubernetes.io/part-of': 'pgbidi',
  };
}

export function prometheusRule(ruleFile: RuleFile, config: ArtifactConfig = defaultConfig): object {
  return {
    apiVersion: 'monitoring.coreos.com/v1',
    kind: 'PrometheusRule',
    metadata: {
      name: 'pgbidi',
      labels: { ...commonLabels(config), release: config.kubernetes.releaseLabel },
    },
    spec: ruleFile,
  };
}

export function serviceMonitor(config: ArtifactConfig = defaultConfig): object {
  const k = config.kubernetes;
  return {
    apiVersion: 'monitoring.coreos.com/v1',
    kind: 'ServiceMonitor',
    metadata: {
      name: 'pgbidi',
      labels: { ...commonLabels(config), release: k.releaseLabel },
    },
    spec: {
      jobLabel: 'app.kubernetes.io/name',
      selector: { matchLabels: { 'app.kubernetes.io/name': k.appName } },
      endpoints: [
        {
          port: k.metricsPortName,
          path: '/metrics',
          interval: k.scrapeInterval,
          scrapeTimeout: k.scrapeTimeout,
        },
      ],
    },
  };
}

export function dashboardConfigMap(d: NamedDashboard, config: ArtifactConfig = defaultConfig): object {
  return {
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: {
      name: `grafana-dashboard-${d.name}`,
      labels: { ...commonLabels(config), grafana_dashboard: '1' },
      annotations: { grafana_folder: config.grafana.folder },
    },
    data: { [`${d.name}.json`]: renderJson(d.json) },
  };
}

export function kustomization(files: readonly string[], config: ArtifactConfig = defaultConfig): object {
  return {
    apiVersion: 'kustomize.config.k8s.io/v1beta1',
    kind: 'Kustomization',
    namespace: config.kubernetes.namespace,
    resources: [...files],
  };
}
