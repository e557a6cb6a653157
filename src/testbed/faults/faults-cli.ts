import { parseArgs } from 'node:util';
import { debianBinDir, embeddedBinDir } from '../../pg-server/postgres-binaries.js';
import { stopAllServers } from '../../pg-server/postgres-server.js';
import { formatTotals, runFaultSuite } from './fault-suite.js';
import { PROFILES } from './fault-profile.js';
import { SCENARIO_NAMES } from './scenarios.js';
import type { ScenarioName } from './scenarios.js';

/**
 * `npm run faults -- --seed N [--profile full|short] [--version 18|15] [--only a,b] [--keep-logs]`:
 * the fault suite on three local nodes. Prints one line per scenario and a line of totals; exits 1
 * when any scenario failed (a divergence, or a fault the agent did not report as it should), 2 on
 * bad arguments.
 */
async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      seed: { type: 'string', default: '1' },
      profile: { type: 'string', default: 'full' },
      version: { type: 'string', default: '18' },
      only: { type: 'string' },
      'keep-logs': { type: 'boolean', default: false },
    },
  });
  const seed = Number(values.seed);
  const profile = values.profile === 'full' || values.profile === 'short' ? PROFILES[values.profile] : undefined;
  const only = values.only?.split(',').map((s) => s.trim()) ?? [];
  const unknown = only.filter((s) => !SCENARIO_NAMES.includes(s as ScenarioName));
  if (!Number.isInteger(seed) || !profile || unknown.length || (values.version !== '18' && values.version !== '15')) {
    process.stderr.write(
      `faults: usage: --seed <integer> [--profile full|short] [--version 18|15] [--only ${SCENARIO_NAMES.join(',')}] [--keep-logs]` +
        `${unknown.length ? ` (unknown scenario ${unknown.join(', ')})` : ''}\n`,
    );
    return 2;
  }
  const binDir = values.version === '15' ? debianBinDir(15) : embeddedBinDir();
  if (!binDir) {
    process.stderr.write('faults: PostgreSQL 15 binaries not found at /usr/lib/postgresql/15/bin\n');
    return 2;
  }
  process.stderr.write(`faults: 3 nodes on PostgreSQL ${values.version}, seed ${seed}, profile ${profile.name}\n`);
  const result = await runFaultSuite({
    binDir,
    seed,
    profile,
    ...(only.length ? { only: only as ScenarioName[] } : {}),
    keepLogs: values['keep-logs'] === true,
    onLine: (line) => process.stdout.write(`${line}\n`),
  });
  process.stdout.write(`${formatTotals(result)}\n`);
  if (values['keep-logs']) process.stderr.write(`faults: agent logs in ${result.logDir}\n`);
  return result.ok ? 0 : 1;
}

// Ctrl-C or a TERM: exit through process.exit, whose 'exit' hooks SIGKILL the servers and agents
// this run started (a signal's default action would leave them running).
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => process.exit(130));

main().then(
  (code) => {
    process.exitCode = code;
  },
  async (err: unknown) => {
    process.stderr.write(`faults: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    await stopAllServers();
    process.exitCode = 1;
  },
);
