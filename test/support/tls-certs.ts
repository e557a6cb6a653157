import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from './temp-dir.js';

/** A certificate authority made by the test, and a server certificate it signed. */
export interface TestPki {
  readonly dir: string;
  /** PEM file of the CA certificate, for sslrootcert. */
  readonly caFile: string;
  readonly serverCert: string;
  readonly serverKey: string;
}

function openssl(dir: string, args: string[]): void {
  const r = spawnSync('openssl', args, { cwd: dir, encoding: 'utf8', timeout: 30_000 });
  if (r.error) throw r.error;
  if (r.status !== 0) throw new Error(`openssl ${args[0] ?? ''} failed: ${r.stderr}`);
}

/** EC P-256 keys (fast to make); the server certificate names `san` (by default 127.0.0.1), which verify-full checks. */
export function makeTestPki(label: string, san = 'IP:127.0.0.1'): TestPki {
  const dir = tempDir(`pgbidi-pki-${label}-`);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl(dir, ['req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-subj', `/CN=pgbidi test CA ${label}`]);
  openssl(dir, ['req', ...ec, '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=127.0.0.1']);
  writeFileSync(join(dir, 'san.ext'), `subjectAltName=${san}\n`);
  openssl(dir, [
    'x509',
    '-req',
    '-in',
    'server.csr',
    '-CA',
    'ca.crt',
    '-CAkey',
    'ca.key',
    '-CAcreateserial',
    '-out',
    'server.crt',
    '-days',
    '2',
    '-extfile',
    'san.ext',
  ]);
  return {
    dir,
    caFile: join(dir, 'ca.crt'),
    serverCert: readFileSync(join(dir, 'server.crt'), 'utf8'),
    serverKey: readFileSync(join(dir, 'server.key'), 'utf8'),
  };
}
