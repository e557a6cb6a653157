/**
 * promtool and amtool come from Debian's `prometheus` and `prometheus-alertmanager` packages
 * (.ci/run installs them). Without them a developer's run skips those assertions and says so; with
 * CI=true a missing tool fails the test instead.
 */
import { spawnSync } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';

export const REPO = new URL('../../../', import.meta.url).pathname;
export const IN_CI = process.env['CI'] === 'true';

export interface Tool {
  readonly name: string;
  readonly path: string | null;
  /** Title suffix for tests that need the tool. */
  readonly note: string;
  /** Skip the test (tool missing outside CI). */
  readonly skip: boolean;
}

export function findTool(name: string, debianPackage: string): Tool {
  let path: string | null = null;
  for (const dir of (process.env['PATH'] ?? '').split(delimiter)) {
    if (!dir) continue;
    try {
      accessSync(join(dir, name), constants.X_OK);
      path = join(dir, name);
      break;
    } catch {
      // not in this directory
    }
  }
  const skip = path === null && !IN_CI;
  const note = path !== null ? '' : skip ? ` [SKIPPED: ${name} not on PATH; apt-get install ${debianPackage}]` : '';
  if (skip) console.warn(`test/artifacts: ${name} is not on PATH, skipping its checks (apt-get install ${debianPackage}; with CI=true they fail instead)`);
  return { name, path, note, skip };
}

export interface RunResult {
  readonly status: number | null;
  readonly output: string;
}

/** Runs the tool from the repository root; throws when the tool is missing (only reached in CI). */
export function run(tool: Tool, args: readonly string[], cwd: string = REPO): RunResult {
  if (tool.path === null) throw new Error(`${tool.name} is required when CI=true (install it in .ci/run)`);
  const r = spawnSync(tool.path, [...args], { cwd, encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, output: `${r.stdout ?? ''}${r.stderr ?? ''}` };
}
