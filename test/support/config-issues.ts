import { ConfigError, parseConfig } from '../../src/config/load-config.js';

/** The config's problems as "path: message" lines, [] when it is valid. */
export function issuesOf(raw: unknown, env: Record<string, string> = {}): string[] {
  try {
    parseConfig(raw, env);
  } catch (err) {
    if (err instanceof ConfigError) return err.issues.map((i) => `${i.path}: ${i.message}`);
    throw err;
  }
  return [];
}
