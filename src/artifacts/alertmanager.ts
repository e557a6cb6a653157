/**
 * An example Alertmanager configuration for pgbidi's alerts: critical pages, warning goes to chat,
 * info and none go nowhere; notifications are grouped per peer; and inhibition keeps the noise down:
 *   - a critical alert silences the warning of the same alert on the same link;
 *   - PgbidiAgentDown silences the lag, stall and link alerts of that agent (it explains them);
 *   - PgbidiLinkDisconnected silences lag, heartbeat, stall and flapping alerts of that link.
 * The inhibition lists come from the rules' `inhibitedBy`, so a new lag alert is covered by adding it
 * there. Receivers are webhooks to replace with your pager and chat integrations.
 */
import { defaultConfig } from './config.js';
import type { ArtifactConfig } from './config.js';
import { alertSpecs, INHIBITOR_ALERTS } from './rules.js';
import type { Inhibitor } from './rules.js';

export interface InhibitRule {
  readonly source_matchers: readonly string[];
  readonly target_matchers: readonly string[];
  readonly equal: readonly string[];
}

/** Alert names each inhibitor silences, from the rule definitions. */
export function inhibitedAlerts(inhibitor: Inhibitor, config: ArtifactConfig = defaultConfig): string[] {
  return [
    ...new Set(
      alertSpecs({ config })
        .filter((s) => s.inhibitedBy.includes(inhibitor))
        .map((s) => s.rule.alert),
    ),
  ];
}

export function alertmanagerConfig(config: ArtifactConfig = defaultConfig): object {
  const am = config.alertmanager;
  const r = am.receivers;
  const agent = config.agentLabels;
  const webhook = (name: string): object => ({
    name,
    webhook_configs: [{ url: `${am.webhookBaseUrl}/${name}`, send_resolved: true }],
  });
  const inhibit: InhibitRule[] = [
    {
      source_matchers: ['severity="critical"'],
      target_matchers: ['severity=~"warning|info"'],
      equal: ['alertname', ...agent, 'peer', 'slot'],
    },
    {
      source_matchers: [`alertname="${INHIBITOR_ALERTS['agent-down']}"`],
      target_matchers: [`alertname=~"${inhibitedAlerts('agent-down', config).join('|')}"`],
      equal: [...agent],
    },
    {
      source_matchers: [`alertname="${INHIBITOR_ALERTS['link-disconnected']}"`],
      target_matchers: [`alertname=~"${inhibitedAlerts('link-disconnected', config).join('|')}"`],
      equal: [...agent, 'peer'],
    },
  ];
  return {
    route: {
      receiver: r.chat,
      group_by: [...am.groupBy],
      group_wait: am.groupWait,
      group_interval: am.groupInterval,
      repeat_interval: am.repeatInterval,
      routes: [
        { receiver: r.pager, matchers: ['severity="critical"'] },
        { receiver: r.chat, matchers: ['severity="warning"'] },
        { receiver: r.none, matchers: ['severity=~"info|none"'] },
      ],
    },
    inhibit_rules: inhibit,
    receivers: [webhook(r.pager), webhook(r.chat), { name: r.none }],
  };
}
