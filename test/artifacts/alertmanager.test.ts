import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import { defaultConfig } from '../../src/artifacts/config.js';
import { alertSpecs, INHIBITOR_ALERTS } from '../../src/artifacts/rules.js';
import { findTool, REPO, run } from './support/tools.js';

const CONFIG = 'alerts/alertmanager.yml';
const amtool = findTool('amtool', 'prometheus-alertmanager');
const receivers = defaultConfig.alertmanager.receivers;

type Labels = Readonly<Record<string, string>>;

interface InhibitRule {
  source_matchers: string[];
  target_matchers: string[];
  equal: string[];
}

interface AlertmanagerConfig {
  route: { receiver: string; group_by: string[]; routes: { receiver: string; matchers: string[]; continue?: boolean }[] };
  inhibit_rules: InhibitRule[];
  receivers: { name: string }[];
}

async function config(): Promise<AlertmanagerConfig> {
  return parse(await readFile(join(REPO, CONFIG), 'utf8')) as AlertmanagerConfig;
}

/** Alertmanager's matcher syntax as this config writes it: name, operator, double-quoted value. */
function matches(matcher: string, labels: Labels): boolean {
  const m = /^([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"(.*)"$/.exec(matcher);
  if (!m) throw new Error(`cannot read matcher ${matcher}`);
  const [, name, op, value] = m as unknown as [string, string, string, string];
  const actual = labels[name] ?? '';
  switch (op) {
    case '=':
      return actual === value;
    case '!=':
      return actual !== value;
    case '=~':
      return new RegExp(`^(?:${value})$`).test(actual);
    default:
      return !new RegExp(`^(?:${value})$`).test(actual);
  }
}

/** Whether Alertmanager would suppress `target` while `source` fires (same rules as inhibit.go). */
function inhibits(rulesList: readonly InhibitRule[], source: Labels, target: Labels): boolean {
  return rulesList.some(
    (r) =>
      r.source_matchers.every((m) => matches(m, source)) &&
      r.target_matchers.every((m) => matches(m, target)) &&
      r.equal.every((l) => (source[l] ?? '') === (target[l] ?? '')) &&
      // an alert never inhibits itself
      JSON.stringify(source) !== JSON.stringify(target),
  );
}

/** Labels of each alert as it fires, taken from its promtool test cases (alertname + severity → labels). */
async function firingLabels(): Promise<Map<string, Labels>> {
  const dir = join(REPO, 'alerts/tests');
  const out = new Map<string, Labels>();
  for (const f of (await readdir(dir)).filter((x) => x.endsWith('.test.yml'))) {
    const file = parse(await readFile(join(dir, f), 'utf8')) as {
      tests: { alert_rule_test?: { alertname: string; exp_alerts: { exp_labels: Record<string, string> }[] }[] }[];
    };
    for (const c of file.tests.flatMap((t) => t.alert_rule_test ?? [])) {
      for (const a of c.exp_alerts) {
        const labels: Labels = { alertname: c.alertname, ...a.exp_labels };
        out.set(`${c.alertname}/${labels['severity'] ?? ''}`, labels);
      }
    }
  }
  return out;
}

function labelsOf(all: ReadonlyMap<string, Labels>, alert: string, severity: string): Labels {
  const l = all.get(`${alert}/${severity}`);
  if (!l) throw new Error(`no firing test case for ${alert} (${severity})`);
  return l;
}

describe('Alertmanager example', () => {
  it(`amtool check-config accepts it${amtool.note}`, { skip: amtool.skip }, () => {
    const r = run(amtool, ['check-config', CONFIG]);
    expect(r.output).toContain('SUCCESS');
    expect(r.status, r.output).toBe(0);
  });

  it(`routes every alert by severity: critical to the pager, warning to chat, info nowhere${amtool.note}`, { skip: amtool.skip, timeout: 60_000 }, () => {
    const expected: Record<string, string> = { critical: receivers.pager, warning: receivers.chat, info: receivers.none };
    const cases = alertSpecs().map((s) => [s.rule.alert, s.rule.labels.severity] as const);
    cases.push(['PgbidiSomethingInformational', 'info']);
    for (const [alert, severity] of cases) {
      const r = run(amtool, [
        'config',
        'routes',
        'test',
        `--config.file=${CONFIG}`,
        `--verify.receivers=${expected[severity] ?? '?'}`,
        `alertname=${alert}`,
        `severity=${severity}`,
        'job=pgbidi',
        'instance=node-a:9464',
        'peer=b',
      ]);
      expect(r.status, `${alert} (${severity}): ${r.output}`).toBe(0);
    }
  });

  it(`the routing test can fail: a critical alert does not go to chat${amtool.note}`, { skip: amtool.skip }, () => {
    const r = run(amtool, [
      'config',
      'routes',
      'test',
      `--config.file=${CONFIG}`,
      `--verify.receivers=${receivers.chat}`,
      'alertname=PgbidiAgentDown',
      'severity=critical',
    ]);
    expect(r.status).not.toBe(0);
    expect(r.output).toContain(receivers.pager);
  });

  it('groups notifications by peer', async () => {
    expect((await config()).route.group_by).toContain('peer');
  });

  it('an agent that is down silences the lag alerts of that agent, and only of that agent', async () => {
    const rules = (await config()).inhibit_rules;
    const labels = await firingLabels();
    const down = labelsOf(labels, 'PgbidiAgentDown', 'critical');
    for (const lag of ['PgbidiReplicationLagHigh', 'PgbidiHeartbeatStale', 'PgbidiApplyStalled']) {
      for (const severity of ['warning', 'critical']) {
        const target = labels.get(`${lag}/${severity}`);
        if (!target) continue;
        expect(target['instance']).toBe(down['instance']);
        expect(inhibits(rules, down, target), `${lag} (${severity})`).toBe(true);
        expect(inhibits(rules, { ...down, instance: 'node-z:9464' }, target), `${lag} (${severity}) on another agent`).toBe(false);
      }
    }
  });

  it('a disconnected link silences lag, stall and flapping alerts of that link only', async () => {
    const rules = (await config()).inhibit_rules;
    const labels = await firingLabels();
    const disconnected = labelsOf(labels, 'PgbidiLinkDisconnected', 'critical');
    for (const name of ['PgbidiReplicationLagHigh', 'PgbidiHeartbeatStale', 'PgbidiApplyStalled', 'PgbidiReconnectFlapping']) {
      const target = labels.get(`${name}/warning`) ?? labels.get(`${name}/critical`);
      if (!target) throw new Error(`no firing case for ${name}`);
      expect(inhibits(rules, disconnected, target), name).toBe(true);
      expect(inhibits(rules, { ...disconnected, peer: 'other' }, target), `${name} of another peer`).toBe(false);
    }
  });

  it('every inhibitedBy of the rule definitions is honoured, with labels both alerts carry', async () => {
    const rules = (await config()).inhibit_rules;
    const labels = await firingLabels();
    for (const spec of alertSpecs()) {
      const target = labelsOf(labels, spec.rule.alert, spec.rule.labels.severity);
      for (const by of spec.inhibitedBy) {
        const source = labelsOf(labels, INHIBITOR_ALERTS[by], 'critical');
        expect(inhibits(rules, { ...source, job: target['job'] ?? '', instance: target['instance'] ?? '' }, target), `${by} → ${spec.rule.alert}`).toBe(true);
      }
    }
  });

  it('critical silences the warning of the same alert on the same link, nothing else', async () => {
    const rules = (await config()).inhibit_rules;
    const labels = await firingLabels();
    const critical = labelsOf(labels, 'PgbidiReplicationLagHigh', 'critical');
    const warning = labelsOf(labels, 'PgbidiReplicationLagHigh', 'warning');
    expect(inhibits(rules, critical, warning)).toBe(true);
    expect(inhibits(rules, warning, critical)).toBe(false);
    expect(inhibits(rules, { ...critical, peer: 'c' }, warning)).toBe(false);
    expect(inhibits(rules, critical, labelsOf(labels, 'PgbidiSlotInactive', 'warning'))).toBe(false);
  });

  it('nothing silences the agent-down and agent-absent alerts', async () => {
    const rules = (await config()).inhibit_rules;
    const labels = await firingLabels();
    const targets = [labelsOf(labels, 'PgbidiAgentDown', 'critical'), labelsOf(labels, 'PgbidiAgentAbsent', 'critical')];
    for (const spec of alertSpecs()) {
      const source = labelsOf(labels, spec.rule.alert, spec.rule.labels.severity);
      for (const t of targets) expect(inhibits(rules, source, t), `${spec.rule.alert} → ${t['alertname'] ?? ''}`).toBe(false);
    }
  });
});
