/**
 * What can be checked of deploy/ and the Dockerfile without Docker or a cluster: every file parses,
 * every mounted path exists, the agent configs that the deployments mount pass the agent's own
 * validation with the environment the deployments give the agent, and the objects reference each
 * other consistently (Services select their pods, the ServiceMonitor selects the Services).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfigFile, parseConfig } from '../../src/config/load-config.js';
import type { Config } from '../../src/config/config-schema.js';
import {
  REPO,
  at,
  stringAt,
  copySources,
  interpolate,
  isRecord,
  listFiles,
  parseDockerfile,
  readYaml,
  readYamlDocuments,
  repoPath,
  selects,
  yamlDocuments,
} from './support/deploy-files.js';
import type { Env } from './support/deploy-files.js';

const DEPLOY = join(REPO, 'deploy');
const COMPOSE_DIR = join(DEPLOY, 'compose');
const COMPOSE_FILE = join(COMPOSE_DIR, 'compose.yaml');
const K8S_AGENT = join(DEPLOY, 'kubernetes/agent');
const AGENT_PORT = 9464;

/** What `docker compose` would read from the shell: the two secrets the compose file requires. */
const SHELL_ENV: Env = {
  POSTGRES_PASSWORD: 'pw-from-the-environment',
  GRAFANA_ADMIN_PASSWORD: 'grafana-from-the-environment',
  PGBIDI_ADMIN_TOKEN: 'admin-token-from-the-environment',
};

function onPath(name: string): string | null {
  for (const dir of (process.env['PATH'] ?? '').split(delimiter)) {
    if (dir !== '' && existsSync(join(dir, name))) return join(dir, name);
  }
  return null;
}

// ---------------------------------------------------------------------------------------------
// Compose model

interface Mount {
  readonly source: string;
  readonly target: string;
  /** Absolute host path for bind mounts, null for named volumes. */
  readonly hostPath: string | null;
}

interface Service {
  readonly name: string;
  readonly image: string | undefined;
  readonly build: unknown;
  readonly command: readonly string[];
  readonly env: Readonly<Record<string, string>>;
  readonly mounts: readonly Mount[];
  readonly dependsOn: Readonly<Record<string, string>>;
}

/** Every string in the file interpolated, as `docker compose config` does before anything else. */
function interpolateAll(value: unknown, env: Env): unknown {
  if (typeof value === 'string') return interpolate(value, env);
  if (Array.isArray(value)) return value.map((v) => interpolateAll(v, env));
  if (isRecord(value)) return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, interpolateAll(v, env)]));
  return value;
}

function composeServices(env: Env): Map<string, Service> {
  const file = interpolateAll(readYaml(COMPOSE_FILE), env);
  const services = at(file, 'services');
  if (!isRecord(services)) throw new Error('compose.yaml has no services');
  const out = new Map<string, Service>();
  for (const [name, raw] of Object.entries(services)) {
    const environment = at(raw, 'environment');
    if (environment !== undefined && !isRecord(environment)) throw new Error(`${name}: write environment as a map`);
    const volumes = at(raw, 'volumes') ?? [];
    if (!Array.isArray(volumes)) throw new Error(`${name}: volumes must be a list`);
    const mounts = volumes.map((v: unknown): Mount => {
      if (typeof v !== 'string') throw new Error(`${name}: use the short volume syntax source:target[:mode]`);
      const [source = '', target = ''] = v.split(':');
      const bind = source.startsWith('.') || source.startsWith('/');
      return { source, target, hostPath: bind ? resolve(COMPOSE_DIR, source) : null };
    });
    const deps = at(raw, 'depends_on') ?? {};
    const dependsOn: Record<string, string> = Array.isArray(deps)
      ? Object.fromEntries(deps.map((d) => [String(d), 'service_started']))
      : Object.fromEntries(Object.entries(deps as Record<string, unknown>).map(([k, v]) => [k, stringAt(v, 'condition') ?? 'service_started']));
    const command = at(raw, 'command') ?? [];
    if (!Array.isArray(command)) throw new Error(`${name}: write command as a list (exec form)`);
    out.set(name, {
      name,
      image: at(raw, 'image') as string | undefined,
      build: at(raw, 'build'),
      command: command.map(String),
      env: Object.fromEntries(Object.entries(environment ?? {}).map(([k, v]) => [k, String(v)])),
      mounts,
      dependsOn,
    });
  }
  return out;
}

function service(services: Map<string, Service>, name: string): Service {
  const s = services.get(name);
  if (s === undefined) throw new Error(`compose.yaml has no service ${name}`);
  return s;
}

/** The host path mounted at (or above) a container path in a service, or null. */
function hostPathOf(s: Service, containerPath: string): string | null {
  for (const m of s.mounts) {
    if (m.hostPath === null) continue;
    if (m.target === containerPath) return m.hostPath;
    if (containerPath.startsWith(`${m.target}/`)) return join(m.hostPath, containerPath.slice(m.target.length + 1));
  }
  return null;
}

function isPgbidi(s: Service): boolean {
  return s.build !== undefined;
}

/** The agent config a pgbidi service mounts, loaded and validated with the service's environment. */
function composeAgentConfig(s: Service): Config {
  const configPath = s.env['PGBIDI_CONFIG'];
  expect(configPath, `${s.name} sets PGBIDI_CONFIG`).toBeDefined();
  const host = hostPathOf(s, configPath ?? '');
  expect(host, `${s.name} mounts a file at ${configPath ?? ''}`).not.toBeNull();
  return loadConfigFile(host ?? '', s.env);
}

describe('deploy/: every file parses', () => {
  const files = listFiles(DEPLOY);

  it('finds the compose and Kubernetes files', () => {
    const names = files.map(repoPath);
    expect(names).toEqual(
      expect.arrayContaining([
        'deploy/README.md',
        'deploy/compose/compose.yaml',
        'deploy/compose/pgbidi/node-a.yaml',
        'deploy/compose/pgbidi/node-b.yaml',
        'deploy/compose/prometheus/prometheus.yml',
        'deploy/kubernetes/agent/kustomization.yaml',
        'deploy/kubernetes/monitoring/kustomization.yaml',
      ]),
    );
  });

  it.each(files.filter((f) => /\.(ya?ml|json)$/.test(f)).map((f) => [repoPath(f), f] as const))('%s', (_name, file) => {
    const docs = file.endsWith('.json') ? [JSON.parse(readFileSync(file, 'utf8')) as unknown] : readYamlDocuments(file);
    expect(docs.length).toBeGreaterThan(0);
    for (const doc of docs) expect(isRecord(doc), 'each document is a mapping').toBe(true);
  });
});

describe('deploy/compose', () => {
  const services = composeServices(SHELL_ENV);
  const pgbidi = [...services.values()].filter(isPgbidi);
  const agents = pgbidi.filter((s) => s.command.includes('run'));
  const setups = pgbidi.filter((s) => s.command.includes('setup'));

  it('has the two nodes, their setup and agent services, Prometheus, Alertmanager and Grafana', () => {
    expect([...services.keys()].sort()).toEqual(['agent-a', 'agent-b', 'alertmanager', 'grafana', 'pg-a', 'pg-b', 'prometheus', 'setup-a', 'setup-b']);
    expect(agents.map((s) => s.name).sort()).toEqual(['agent-a', 'agent-b']);
    expect(setups.map((s) => s.name).sort()).toEqual(['setup-a', 'setup-b']);
    for (const s of pgbidi) expect(s.command.slice(0, 2), s.name).toEqual(['node', 'bin/pgbidi.js']);
  });

  it('refuses to start without the secrets instead of using a default password', () => {
    expect(() => composeServices({})).toThrow(/required variable POSTGRES_PASSWORD/);
    expect(() => composeServices({ POSTGRES_PASSWORD: 'x', PGBIDI_ADMIN_TOKEN: 'y' })).toThrow(/required variable GRAFANA_ADMIN_PASSWORD/);
    expect(() => composeServices({ POSTGRES_PASSWORD: 'x', GRAFANA_ADMIN_PASSWORD: 'y' })).toThrow(/required variable PGBIDI_ADMIN_TOKEN/);
  });

  it('every bind-mounted host path exists relative to the compose file, and the build context has the Dockerfile', () => {
    const mounts = [...services.values()].flatMap((s) => s.mounts.filter((m) => m.hostPath !== null).map((m) => ({ s: s.name, m })));
    expect(mounts.length).toBeGreaterThanOrEqual(10);
    for (const { s, m } of mounts) expect(existsSync(m.hostPath ?? ''), `${s}: ${m.source}`).toBe(true);
    for (const s of pgbidi) {
      const context = resolve(COMPOSE_DIR, String(at(s.build, 'context')));
      expect(existsSync(join(context, stringAt(s.build, 'dockerfile') ?? 'Dockerfile')), s.name).toBe(true);
      expect(context).toBe(resolve(REPO));
    }
  });

  it('every mounted agent config passes loadConfigFile with the environment compose gives the service', () => {
    for (const s of pgbidi) {
      const config = composeAgentConfig(s);
      expect(config.http.listen, s.name).toBe(`0.0.0.0:${AGENT_PORT}`);
      // Listening on every interface: the operator endpoints must be behind the token.
      if (agents.includes(s)) expect(config.http.admin_token, s.name).toBe(SHELL_ENV['PGBIDI_ADMIN_TOKEN']);
      // every DSN got its password from the environment, so the files need none
      for (const dsn of [config.node.dsn, ...config.peers.map((p) => p.dsn)]) {
        expect(new URL(dsn).password, `${s.name}: ${dsn.replace(/:[^:@/]*@/, ':***@')}`).toBe(SHELL_ENV['POSTGRES_PASSWORD']);
      }
    }
  });

  it('the agent config files themselves hold no password', () => {
    for (const file of listFiles(join(COMPOSE_DIR, 'pgbidi'))) {
      const raw = readYaml(file);
      for (const dsn of [at(raw, 'node', 'dsn'), ...((at(raw, 'peers') as unknown[]) ?? []).map((p) => at(p, 'dsn'))]) {
        expect(new URL(String(dsn)).password, repoPath(file)).toBe('');
      }
    }
  });

  it('the agents form a full mesh over the PostgreSQL services, which run with the settings pgbidi needs', () => {
    const configs = agents.map((s) => ({ s, c: composeAgentConfig(s) }));
    const nodeNames = configs.map(({ c }) => c.node.name).sort();
    expect(nodeNames).toEqual(['a', 'b']);
    for (const { s, c } of configs) {
      expect(c.peers.map((p) => p.name).sort(), s.name).toEqual(nodeNames.filter((n) => n !== c.node.name));
      // setup for the same node mounts the same config
      const setup = setups.find((x) => composeAgentConfig(x).node.name === c.node.name);
      expect(setup, `a setup service for node ${c.node.name}`).toBeDefined();
      expect(hostPathOf(setup as Service, '/etc/pgbidi/pgbidi.yaml')).toBe(hostPathOf(s, '/etc/pgbidi/pgbidi.yaml'));
      for (const dsn of [c.node.dsn, ...c.peers.map((p) => p.dsn)]) {
        const pg = service(services, new URL(dsn).hostname);
        expect(pg.image, pg.name).toMatch(/^postgres:18/);
        expect(pg.command.join(' '), pg.name).toContain('wal_level=logical');
        expect(pg.command.join(' '), pg.name).toContain('track_commit_timestamp=on');
        const slots = /max_replication_slots=(\d+)/.exec(pg.command.join(' '));
        expect(Number(slots?.[1] ?? 10), pg.name).toBeGreaterThanOrEqual(c.peers.length);
        expect(pg.env['POSTGRES_DB'], pg.name).toBe(new URL(dsn).pathname.slice(1));
      }
    }
  });

  it('every agent waits for the setup of every node; every setup waits for healthy databases', () => {
    for (const a of agents) {
      for (const s of setups) expect(a.dependsOn[s.name], `${a.name} -> ${s.name}`).toBe('service_completed_successfully');
      expect(a.env['PGBIDI_HTTP_LISTEN']).toBe(`0.0.0.0:${AGENT_PORT}`);
    }
    for (const s of setups) {
      for (const pg of ['pg-a', 'pg-b']) expect(s.dependsOn[pg], `${s.name} -> ${pg}`).toBe('service_healthy');
    }
  });

  it('each node gets the init SQL, whose tables all have primary keys', () => {
    for (const name of ['pg-a', 'pg-b']) {
      const pg = service(services, name);
      const init = pg.mounts.filter((m) => m.target.startsWith('/docker-entrypoint-initdb.d/') && m.hostPath !== null);
      expect(init.length, name).toBeGreaterThan(0);
      for (const m of init) {
        const sql = readFileSync(m.hostPath ?? '', 'utf8');
        const tables = sql.split(/(?=CREATE TABLE)/i).filter((t) => /^CREATE TABLE/i.test(t));
        expect(tables.length).toBeGreaterThan(0);
        for (const t of tables) expect(t, t.split('\n')[0]).toMatch(/PRIMARY KEY/i);
      }
    }
  });

  it('Prometheus scrapes every agent as job "pgbidi", loads the shipped rules and alerts the Alertmanager service', () => {
    const prom = service(services, 'prometheus');
    const configFlag = prom.command.find((c) => c.startsWith('--config.file='))?.slice('--config.file='.length) ?? '/etc/prometheus/prometheus.yml';
    const configHost = hostPathOf(prom, configFlag);
    expect(configHost).not.toBeNull();
    const config = readYaml(configHost ?? '');
    const jobs = at(config, 'scrape_configs') as unknown[];
    const job = jobs.find((j) => at(j, 'job_name') === 'pgbidi');
    const targets = ((at(job, 'static_configs') as unknown[]) ?? []).flatMap((c) => at(c, 'targets') as string[]);
    expect(targets.sort()).toEqual(agents.map((a) => `${a.name}:${AGENT_PORT}`).sort());
    const rules = at(config, 'rule_files') as string[];
    expect(rules.map((r) => hostPathOf(prom, r))).toEqual([join(REPO, 'alerts/pgbidi-rules.yml')]);
    const am = (at(config, 'alerting', 'alertmanagers') as unknown[]).flatMap((a) =>
      ((at(a, 'static_configs') as unknown[]) ?? []).flatMap((c) => at(c, 'targets') as string[]),
    );
    expect(am).toEqual(['alertmanager:9093']);
    expect(services.has('alertmanager')).toBe(true);
  });

  it('promtool accepts the Prometheus config as the container sees it (rules included)', (ctx) => {
    const promtool = onPath('promtool');
    if (promtool === null) {
      ctx.skip();
      return;
    }
    // Rebuild the container's view of /etc/prometheus from the mounts, in a temporary folder.
    const prom = service(services, 'prometheus');
    const root = mkdtempSync(join(tmpdir(), 'pgbidi-prom-'));
    try {
      const configHost = hostPathOf(prom, '/etc/prometheus/prometheus.yml') ?? '';
      const config = readYaml(configHost);
      const rules = (at(config, 'rule_files') as string[]).map((r) => {
        const copy = join(root, r);
        mkdirSync(dirname(copy), { recursive: true });
        writeFileSync(copy, readFileSync(hostPathOf(prom, r) ?? '', 'utf8'));
        return copy;
      });
      const rewritten = readFileSync(configHost, 'utf8').replace(
        /^(\s*-\s*)(\/etc\/prometheus\/\S+)$/gm,
        (_l, dash: string, p: string) => `${dash}${join(root, p)}`,
      );
      writeFileSync(join(root, 'prometheus.yml'), rewritten);
      expect(rules.length).toBe(1);
      const r = spawnSync(promtool, ['check', 'config', join(root, 'prometheus.yml')], { encoding: 'utf8', timeout: 60_000 });
      expect(`${r.stdout}${r.stderr}`).toMatch(/SUCCESS/);
      expect(r.status, `${r.stdout}${r.stderr}`).toBe(0);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  it('Alertmanager gets the shipped alerts/alertmanager.yml at the path of --config.file', () => {
    const am = service(services, 'alertmanager');
    const path = am.command.find((c) => c.startsWith('--config.file='))?.slice('--config.file='.length) ?? '';
    expect(hostPathOf(am, path)).toBe(join(REPO, 'alerts/alertmanager.yml'));
  });

  it('Grafana gets the shipped dashboards where the provider reads them, and a datasource on the prometheus service', () => {
    const g = service(services, 'grafana');
    const providers = g.mounts.filter((m) => m.target.startsWith('/etc/grafana/provisioning/dashboards/'));
    expect(providers.map((m) => m.hostPath)).toEqual([join(REPO, 'dashboards/provisioning/dashboards.yaml')]);
    const dashboardsPath = String(at(readYaml(providers[0]?.hostPath ?? ''), 'providers', 0, 'options', 'path'));
    const dir = hostPathOf(g, dashboardsPath);
    expect(dir).toBe(join(REPO, 'dashboards'));
    const shipped = listFiles(join(REPO, 'dashboards')).filter((f) => f.endsWith('.json') && dirname(f) === join(REPO, 'dashboards'));
    expect(shipped.length).toBeGreaterThan(0);
    for (const f of shipped) expect(existsSync(join(dir ?? '', f.slice(join(REPO, 'dashboards').length + 1)))).toBe(true);

    const datasources = g.mounts.filter((m) => m.target.startsWith('/etc/grafana/provisioning/datasources/'));
    expect(datasources.length).toBe(1);
    const ds = at(readYaml(datasources[0]?.hostPath ?? ''), 'datasources', 0);
    expect(at(ds, 'type')).toBe('prometheus');
    // the uid the shipped provisioning uses, so both setups name the same datasource
    expect(at(ds, 'uid')).toBe(at(readYaml(join(REPO, 'dashboards/provisioning/datasources.yaml')), 'datasources', 0, 'uid'));
    const url = new URL(String(at(ds, 'url')));
    expect(services.has(url.hostname), url.hostname).toBe(true);
    expect(url.hostname).toBe('prometheus');
    expect(g.env['GF_SECURITY_ADMIN_PASSWORD']).toBe(SHELL_ENV['GRAFANA_ADMIN_PASSWORD']);
  });
});

// ---------------------------------------------------------------------------------------------
// Kubernetes

interface K8sObject {
  readonly kind: string;
  readonly name: string;
  readonly file: string;
  readonly doc: unknown;
}

function k8sObjects(files: readonly string[]): K8sObject[] {
  return files.flatMap((file) => toObjects(readYamlDocuments(file), repoPath(file)));
}

function toObjects(docs: readonly unknown[], file: string): K8sObject[] {
  return docs.filter((doc) => doc !== null).map((doc) => ({ kind: String(at(doc, 'kind')), name: String(at(doc, 'metadata', 'name')), file, doc }));
}

describe('deploy/kubernetes/agent', () => {
  const kustomization = readYaml(join(K8S_AGENT, 'kustomization.yaml'));
  const resources = at(kustomization, 'resources') as string[];
  const agentFiles = resources.filter((r) => !r.startsWith('..')).map((r) => join(K8S_AGENT, r));
  const objects = k8sObjects(agentFiles);
  const monitoring = k8sObjects(
    (at(readYaml(join(DEPLOY, 'kubernetes/monitoring/kustomization.yaml')), 'resources') as string[]).map((r) => join(DEPLOY, 'kubernetes/monitoring', r)),
  );
  const secrets = k8sObjects([join(K8S_AGENT, 'secret.example.yaml')]);
  const ofKind = (kind: string): K8sObject[] => objects.filter((o) => o.kind === kind);
  const deployments = ofKind('Deployment');

  it('the kustomization includes ../monitoring and files that exist, not the secret example, and sets one namespace', () => {
    expect(resources).toContain('../monitoring');
    for (const r of resources) expect(existsSync(join(K8S_AGENT, r)), r).toBe(true);
    expect(resources).not.toContain('secret.example.yaml');
    expect(at(kustomization, 'namespace')).toEqual(expect.any(String));
    for (const o of [...objects, ...secrets]) expect(at(o.doc, 'metadata', 'namespace'), `${o.kind}/${o.name}`).toBeUndefined();
    const image = (at(kustomization, 'images') as unknown[]).find((i) => at(i, 'name') === 'pgbidi');
    const pkg = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string };
    expect(at(image, 'newTag')).toBe(pkg.version);
  });

  it('one Deployment per node, one replica, Recreate, setup in an initContainer before run', () => {
    expect(deployments.length).toBeGreaterThanOrEqual(2);
    for (const d of deployments) {
      expect(at(d.doc, 'spec', 'replicas'), d.name).toBe(1);
      expect(at(d.doc, 'spec', 'strategy', 'type'), d.name).toBe('Recreate');
      const init = at(d.doc, 'spec', 'template', 'spec', 'initContainers') as unknown[];
      const containers = at(d.doc, 'spec', 'template', 'spec', 'containers') as unknown[];
      expect(init.map((c) => at(c, 'command'))).toEqual([['node', 'bin/pgbidi.js', 'setup']]);
      expect(containers.map((c) => at(c, 'command'))).toEqual([['node', 'bin/pgbidi.js', 'run']]);
    }
  });

  it('the pods run as non-root with probes on /healthz and /readyz, a locked-down container and resources', () => {
    for (const d of deployments) {
      const pod = at(d.doc, 'spec', 'template', 'spec');
      expect(at(pod, 'securityContext', 'runAsNonRoot'), d.name).toBe(true);
      // the image's USER is a name ("node"), which runAsNonRoot can only verify with a numeric uid
      expect(at(pod, 'securityContext', 'runAsUser'), d.name).toBeGreaterThan(0);
      const all = [...(at(pod, 'initContainers') as unknown[]), ...(at(pod, 'containers') as unknown[])];
      for (const c of all) {
        expect(at(c, 'securityContext', 'allowPrivilegeEscalation'), d.name).toBe(false);
        expect(at(c, 'securityContext', 'capabilities', 'drop'), d.name).toEqual(['ALL']);
        expect(at(c, 'resources', 'requests', 'memory'), d.name).toBeDefined();
        expect(at(c, 'resources', 'limits', 'memory'), d.name).toBeDefined();
      }
      const agent = at(pod, 'containers', 0);
      expect(at(agent, 'ports')).toEqual([{ name: 'metrics', containerPort: AGENT_PORT }]);
      expect(at(agent, 'livenessProbe', 'httpGet')).toEqual({ path: '/healthz', port: 'metrics' });
      expect(at(agent, 'readinessProbe', 'httpGet')).toEqual({ path: '/readyz', port: 'metrics' });
    }
  });

  it("each pod's mounted ConfigMap passes parseConfig with the pod's environment and the example Secret", () => {
    const names: string[] = [];
    for (const d of deployments) {
      const pod = at(d.doc, 'spec', 'template', 'spec');
      for (const c of [...(at(pod, 'initContainers') as unknown[]), ...(at(pod, 'containers') as unknown[])]) {
        const env: Record<string, string> = {};
        for (const ref of (at(c, 'envFrom') as unknown[]) ?? []) {
          const secretName = String(at(ref, 'secretRef', 'name'));
          const secret = secrets.find((s) => s.name === secretName);
          expect(secret, `${d.name}: secret.example.yaml documents Secret ${secretName}`).toBeDefined();
          Object.assign(env, at(secret?.doc, 'stringData'));
        }
        for (const e of (at(c, 'env') as unknown[]) ?? []) env[String(at(e, 'name'))] = String(at(e, 'value'));
        const configPath = env['PGBIDI_CONFIG'] ?? '/etc/pgbidi/pgbidi.yaml';
        const mount = ((at(c, 'volumeMounts') as unknown[]) ?? []).find((m) => configPath.startsWith(`${String(at(m, 'mountPath'))}/`));
        expect(mount, `${d.name}: a volume mounted above ${configPath}`).toBeDefined();
        const volume = (at(pod, 'volumes') as unknown[]).find((v) => at(v, 'name') === at(mount, 'name'));
        const cmName = at(volume, 'configMap', 'name');
        const cm = ofKind('ConfigMap').find((o) => o.name === cmName);
        expect(cm, `${d.name}: ConfigMap ${String(cmName)}`).toBeDefined();
        const key = configPath.slice(String(at(mount, 'mountPath')).length + 1);
        const text = at(cm?.doc, 'data', key);
        expect(typeof text, `${String(cmName)} has key ${key}`).toBe('string');
        const raw = yamlDocuments(String(text), `${String(cmName)}/${key}`)[0];
        const config = parseConfig(raw, env, `${String(cmName)}/${key}`);
        expect(config.http.listen).toBe(`0.0.0.0:${AGENT_PORT}`);
        expect(config.http.admin_token, `${d.name}: the operator endpoints are behind a token`).not.toBeNull();
        for (const dsn of [at(raw, 'node', 'dsn'), ...(at(raw, 'peers') as unknown[]).map((p) => at(p, 'dsn'))]) {
          expect(new URL(String(dsn)).password, `${String(cmName)}: no password in the ConfigMap`).toBe('');
        }
        for (const dsn of [config.node.dsn, ...config.peers.map((p) => p.dsn)]) expect(new URL(dsn).password).not.toBe('');
        names.push(config.node.name);
      }
    }
    // full mesh: every agent lists every other node as a peer
    const nodes = [...new Set(names)].sort();
    expect(nodes.length).toBe(deployments.length);
  });

  it("each Service selects exactly its Deployment's pods and exposes the port named metrics", () => {
    const services = ofKind('Service');
    expect(services.length).toBe(deployments.length);
    for (const s of services) {
      expect(at(s.doc, 'metadata', 'labels', 'app.kubernetes.io/name'), s.name).toBe('pgbidi');
      const selected = deployments.filter((d) => selects(at(s.doc, 'spec', 'selector'), at(d.doc, 'spec', 'template', 'metadata', 'labels')));
      expect(
        selected.map((d) => d.name),
        s.name,
      ).toEqual([s.name]);
      expect(at(s.doc, 'spec', 'ports')).toEqual([{ name: 'metrics', port: AGENT_PORT, targetPort: 'metrics' }]);
    }
    for (const d of deployments) {
      expect(selects(at(d.doc, 'spec', 'selector', 'matchLabels'), at(d.doc, 'spec', 'template', 'metadata', 'labels')), d.name).toBe(true);
    }
  });

  it('the ServiceMonitor of ../monitoring selects every agent Service and scrapes a port it names', () => {
    const sm = monitoring.find((o) => o.kind === 'ServiceMonitor');
    expect(sm).toBeDefined();
    const ports = (at(sm?.doc, 'spec', 'endpoints') as unknown[]).map((e) => at(e, 'port'));
    for (const s of ofKind('Service')) {
      expect(selects(at(sm?.doc, 'spec', 'selector', 'matchLabels'), at(s.doc, 'metadata', 'labels')), s.name).toBe(true);
      const names = (at(s.doc, 'spec', 'ports') as unknown[]).map((p) => at(p, 'name'));
      for (const p of ports) expect(names, s.name).toContain(p);
    }
  });

  it('the full mesh: every ConfigMap lists every other node as a peer', () => {
    const configs = ofKind('ConfigMap').map((cm) => yamlDocuments(String(at(cm.doc, 'data', 'pgbidi.yaml')), cm.name)[0]);
    const nodes = configs.map((c) => String(at(c, 'node', 'name'))).sort();
    for (const c of configs) {
      const peers = (at(c, 'peers') as unknown[]).map((p) => String(at(p, 'name'))).sort();
      expect(peers).toEqual(nodes.filter((n) => n !== at(c, 'node', 'name')));
    }
  });

  it('kubectl kustomize renders it (when kubectl is installed)', (ctx) => {
    const kubectl = onPath('kubectl');
    if (kubectl === null) {
      ctx.skip();
      return;
    }
    const r = spawnSync(kubectl, ['kustomize', K8S_AGENT], { encoding: 'utf8', timeout: 60_000 });
    expect(r.status, r.stderr).toBe(0);
    const rendered = toObjects(yamlDocuments(r.stdout, 'kubectl kustomize'), 'kubectl kustomize');
    const ns = at(kustomization, 'namespace');
    expect(rendered.map((o) => `${o.kind}/${o.name}`).sort()).toEqual([...objects, ...monitoring].map((o) => `${o.kind}/${o.name}`).sort());
    for (const o of rendered) expect(at(o.doc, 'metadata', 'namespace'), `${o.kind}/${o.name}`).toBe(ns);
  });
});

// ---------------------------------------------------------------------------------------------
// Dockerfile

describe('Dockerfile', () => {
  const instructions = parseDockerfile(readFileSync(join(REPO, 'Dockerfile'), 'utf8'));
  const last = Math.max(...instructions.map((i) => i.stage));
  const final = instructions.filter((i) => i.stage === last);
  const runOf = (list: typeof instructions): string[] => list.filter((i) => i.keyword === 'RUN').map((i) => i.args);

  it('is multi-stage, installs with npm ci before copying the sources, and ships production dependencies only', () => {
    expect(last).toBeGreaterThanOrEqual(1);
    const npmCi = instructions.findIndex((i) => i.keyword === 'RUN' && /\bnpm ci\b/.test(i.args));
    const copySrc = instructions.findIndex((i) => i.keyword === 'COPY' && copySources(i.args).sources.some((s) => /^(\.\/)?src\/?$/.test(s)));
    expect(npmCi).toBeGreaterThanOrEqual(0);
    expect(copySrc).toBeGreaterThan(npmCi);
    const finalCi = runOf(final).filter((r) => /\bnpm ci\b/.test(r));
    expect(finalCi.length).toBe(1);
    expect(finalCi[0]).toMatch(/--omit=dev/);
    // the final stage never compiles: it copies dist from the build stage
    expect(final.some((i) => i.keyword === 'COPY' && copySources(i.args).from !== null && copySources(i.args).sources.some((s) => s.includes('dist')))).toBe(
      true,
    );
    expect(runOf(final).some((r) => /\btsc\b/.test(r))).toBe(false);
  });

  it('runs as a non-root user, with CMD in exec form on node and a HEALTHCHECK on /healthz', () => {
    const user = final.filter((i) => i.keyword === 'USER').at(-1);
    expect(user).toBeDefined();
    expect(user?.args.split(':')[0]).not.toMatch(/^(root|0)$/);
    const cmd = final.filter((i) => i.keyword === 'CMD').at(-1);
    expect(cmd?.args).toMatch(/^\["node",/);
    const parsed = JSON.parse(cmd?.args ?? '[]') as string[];
    expect(existsSync(join(REPO, parsed[1] ?? ''))).toBe(true);
    expect(final.some((i) => i.keyword === 'ENTRYPOINT')).toBe(false);
    const health = final.filter((i) => i.keyword === 'HEALTHCHECK').at(-1);
    expect(health?.args).toMatch(/\/healthz/);
    expect(health?.args).toContain(`:${AGENT_PORT}/`);
    expect(final.some((i) => i.keyword === 'EXPOSE' && i.args.split(/\s+/).includes(String(AGENT_PORT)))).toBe(true);
  });

  it('every COPY source from the build context exists in the repository', () => {
    const copies = instructions
      .filter((i) => i.keyword === 'COPY' || i.keyword === 'ADD')
      .map((i) => copySources(i.args))
      .filter((c) => c.from === null);
    expect(copies.length).toBeGreaterThan(3);
    for (const c of copies) for (const s of c.sources) expect(existsSync(join(REPO, s)), s).toBe(true);
    for (const s of copies.flatMap((c) => c.sources).filter((x) => x.endsWith('.json'))) {
      expect(() => JSON.parse(readFileSync(join(REPO, s), 'utf8')) as unknown, s).not.toThrow();
    }
  });

  it("the config path it defaults to is where compose and Kubernetes mount the agent's config", () => {
    const env = final
      .filter((i) => i.keyword === 'ENV')
      .map((i) => i.args)
      .join(' ');
    const path = /PGBIDI_CONFIG=(\S+)/.exec(env)?.[1];
    expect(path).toBe('/etc/pgbidi/pgbidi.yaml');
    for (const s of [...composeServices(SHELL_ENV).values()].filter(isPgbidi)) {
      expect(statSync(hostPathOf(s, path ?? '') ?? '').isFile(), s.name).toBe(true);
    }
    const deployments = k8sObjects(listFiles(K8S_AGENT).filter((f) => /node-.*\.yaml$/.test(f))).filter((o) => o.kind === 'Deployment');
    expect(deployments.length).toBeGreaterThan(0);
    for (const d of deployments) {
      for (const c of at(d.doc, 'spec', 'template', 'spec', 'containers') as unknown[]) {
        const value = ((at(c, 'env') as unknown[]) ?? []).find((e) => at(e, 'name') === 'PGBIDI_CONFIG');
        expect(at(value, 'value'), d.name).toBe(path);
      }
    }
  });
});
