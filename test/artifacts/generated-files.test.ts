import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { renderArtifacts } from '../../src/artifacts/artifacts.js';
import { artifactConfig } from '../../src/artifacts/config.js';
import { findDrift, writeArtifacts } from '../../src/artifacts/generate.js';
import { REPO } from './support/tools.js';

describe('generated artifacts', () => {
  it('the committed dashboards, rules, Alertmanager example and Kubernetes objects equal a fresh generation', async () => {
    const drift = await findDrift(REPO);
    expect(drift, 'stale artifacts: run `npm run build && node dist/artifacts/generate.js` and commit the result').toEqual([]);
  });

  it('writes every file, and a second run writes nothing', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'pgbidi-artifacts-'));
    try {
      const files = renderArtifacts();
      expect(await writeArtifacts(dir, files)).toEqual([...files.keys()]);
      expect(await writeArtifacts(dir, files)).toEqual([]);
      expect(await findDrift(dir, files)).toEqual([]);
      const rules = await readFile(join(dir, 'alerts/pgbidi-rules.yml'), 'utf8');
      expect(rules).toBe(files.get('alerts/pgbidi-rules.yml'));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('reports a hand-edited file and a file the generator no longer makes', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'pgbidi-artifacts-'));
    try {
      const files = renderArtifacts();
      await writeArtifacts(dir, files);
      const edited = new Map(files);
      edited.set('alerts/pgbidi-rules.yml', `${files.get('alerts/pgbidi-rules.yml') ?? ''}# edited\n`);
      edited.delete('dashboards/pgbidi-link.json');
      expect(await findDrift(dir, edited)).toEqual([
        { path: 'alerts/pgbidi-rules.yml', problem: 'differs' },
        { path: 'dashboards/pgbidi-link.json', problem: 'not generated' },
      ]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('a changed threshold in the config changes the rules, the dashboards and the CRD together', () => {
    const base = renderArtifacts();
    const tuned = renderArtifacts(artifactConfig({ alerts: { replicationLag: { warningSeconds: 45 } } }));
    const changed = [...base.keys()].filter((k) => base.get(k) !== tuned.get(k)).sort();
    expect(changed).toEqual([
      'alerts/pgbidi-rules.yml',
      'dashboards/pgbidi-link.json',
      'dashboards/pgbidi-overview.json',
      'deploy/kubernetes/monitoring/grafana-dashboard-pgbidi-link.yaml',
      'deploy/kubernetes/monitoring/grafana-dashboard-pgbidi-overview.yaml',
      'deploy/kubernetes/monitoring/prometheusrule.yaml',
    ]);
    expect(tuned.get('alerts/pgbidi-rules.yml')).toContain('pgbidi_replication_lag_seconds{job="pgbidi"} > 45');
  });
});
