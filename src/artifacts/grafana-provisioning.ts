/**
 * Grafana file provisioning: a dashboard provider that loads dashboards/*.json from one folder, and a
 * Prometheus datasource whose exemplars (label trace_id, as the agent emits them) open the trace
 * datasource. Copy both into /etc/grafana/provisioning/{dashboards,datasources}/.
 */
import { defaultConfig } from './config.js';
import type { ArtifactConfig } from './config.js';

export function dashboardProvider(config: ArtifactConfig = defaultConfig): object {
  const g = config.grafana;
  return {
    apiVersion: 1,
    providers: [
      {
        name: 'pgbidi',
        orgId: 1,
        folder: g.folder,
        folderUid: g.folderUid,
        type: 'file',
        disableDeletion: false,
        updateIntervalSeconds: 30,
        allowUiUpdates: false,
        options: { path: g.dashboardsPath, foldersFromFilesStructure: false },
      },
    ],
  };
}

export function prometheusDatasource(config: ArtifactConfig = defaultConfig): object {
  const g = config.grafana;
  return {
    apiVersion: 1,
    datasources: [
      {
        name: g.datasourceName,
        uid: g.datasourceUid,
        type: 'prometheus',
        access: 'proxy',
        url: g.prometheusUrl,
        isDefault: true,
        editable: false,
        jsonData: {
          httpMethod: 'POST',
          timeInterval: config.kubernetes.scrapeInterval,
          ...(g.traceDatasourceUid ? { exemplarTraceIdDestinations: [{ name: 'trace_id', datasourceUid: g.traceDatasourceUid }] } : {}),
        },
      },
    ],
  };
}
