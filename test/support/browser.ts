import { existsSync } from 'node:fs';

/**
 * The headless browser of the web view tests: Debian's `chromium` (or PGBIDI_CHROMIUM). Absent, the
 * tests are skipped on a developer machine and fail in CI, which installs it (.ci/run).
 */
export function chromiumPath(): string | undefined {
  const candidates = [process.env['PGBIDI_CHROMIUM'], '/usr/bin/chromium', '/usr/bin/chromium-browser'].filter((p): p is string => !!p);
  const found = candidates.find((p) => existsSync(p));
  if (found === undefined && process.env['CI'] === 'true') throw new Error('CI=true but chromium is not installed (Debian package chromium)');
  return found;
}

/** Chromium refuses to run as root with its sandbox; the tests only ever load pages from 127.0.0.1. */
export function chromiumArgs(): string[] {
  return process.getuid?.() === 0 ? ['--no-sandbox'] : [];
}
