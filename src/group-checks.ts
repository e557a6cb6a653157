import type { Config } from './config/config-schema.js';
import { redactedMessage } from './config/redact.js';
import { checkMesh, formatMesh } from './node/mesh-check.js';
import type { MeshProblem } from './node/mesh-check.js';
import { alignSequences, nodeOffset, sequenceWarnings } from './node/sequences.js';

/**
 * What `setup` and `status` add about the group as a whole: the mesh check (node/mesh-check.ts) and
 * keys that would collide between nodes (node/sequences.ts). Both read other nodes, so they are
 * reports, never reasons for setup to stop.
 */
export interface GroupChecks {
  readonly mesh: readonly MeshProblem[];
  readonly sequences: readonly string[];
}

export async function groupChecks(config: Config): Promise<GroupChecks> {
  const [mesh, sequences] = await Promise.all([checkMesh(config), sequenceWarnings(config).catch((err: unknown) => [`not checked: ${redactedMessage(err)}`])]);
  return { mesh, sequences };
}

export function formatGroupChecks(checks: GroupChecks): string {
  return formatMesh(checks.mesh) + checks.sequences.map((w) => `sequences: ${w}\n`).join('');
}

/** `setup`'s part after the node itself is ready: sequences aligned (when configured), then the checks. */
export async function setupGroup(config: Config): Promise<string> {
  const lines: string[] = [];
  const aligned = await alignSequences(config);
  if (config.sequences.mode === 'node-offset') {
    lines.push(`  sequences: node-offset ${nodeOffset(config)} of ${config.sequences.group_size}`);
    for (const a of aligned) {
      lines.push(
        `    ${a.sequence} (${a.columns.join(', ')}): ${a.status === 'aligned' ? `restarts at ${a.restartAt} in steps of ${config.sequences.group_size}` : 'already node-unique'}`,
      );
    }
  }
  const checks = await groupChecks(config);
  return `${lines.map((l) => `${l}\n`).join('')}${formatGroupChecks(checks)
    .split('\n')
    .filter((l) => l.length > 0)
    .map((l) => `  ${l}\n`)
    .join('')}`;
}
