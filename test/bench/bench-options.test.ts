import { describe, expect, it } from 'vitest';
import { BenchError } from '../../src/bench/bench-error.js';
import { parseOptions } from '../../src/bench/bench-options.js';
import type { BenchOptions, Environment } from '../../src/bench/bench-options.js';
import { WORKLOAD_IDS } from '../../src/bench/bench-results.js';
import { FULL_SIZES, QUICK_SIZES } from '../../src/bench/workload-specs.js';

/** PostgreSQL 15 and 18 and pgbench "installed", nothing looked up on disk. */
const env: Environment = {
  binDir: (major) => (major === 15 || major === 18 ? `/pg/${major}/bin` : undefined),
  pgbench: () => '/usr/bin/pgbench',
};

function parse(argv: string[], environment: Environment = env): BenchOptions {
  const options = parseOptions(argv, environment);
  if (options === 'help') throw new Error('unexpected help');
  return options;
}

function usageError(argv: string[], environment: Environment = env): string {
  try {
    parseOptions(argv, environment);
  } catch (err) {
    expect(err).toBeInstanceOf(BenchError);
    expect((err as BenchError).code).toBe('BENCH_USAGE');
    return (err as BenchError).message;
  }
  throw new Error(`no usage error for ${argv.join(' ')}`);
}

describe('bench options', () => {
  it('defaults to every workload, 18 and 15, 3 reps, full sizes and a 900 s timeout', () => {
    const o = parse([]);
    expect(o.workloads).toEqual([...WORKLOAD_IDS]);
    expect(o.versions.map((v) => v.major)).toEqual([18, 15]);
    expect(o.versions[0]?.binDir).toBe('/pg/18/bin');
    expect(o.reps).toBe(3);
    expect(o.quick).toBe(false);
    expect(o.timeoutMs).toBe(900_000);
    expect(o.sizes).toEqual(FULL_SIZES);
    expect(o.json).toBe(false);
    expect(o.jsonOut).toBeNull();
  });

  it('leaves 15 out of the default versions when it is not installed', () => {
    const only18: Environment = { ...env, binDir: (major) => (major === 18 ? '/pg/18/bin' : undefined) };
    expect(parse([], only18).versions.map((v) => v.major)).toEqual([18]);
  });

  it('--quick: tiny sizes, one rep, a shorter timeout; explicit options still win', () => {
    const o = parse(['--quick']);
    expect(o.quick).toBe(true);
    expect(o.sizes).toEqual(QUICK_SIZES);
    expect(o.reps).toBe(1);
    expect(o.timeoutMs).toBe(300_000);
    const p = parse(['--quick', '--reps', '2', '--seconds', '7', '--rate', '0', '--w5-txns', '10', '--timeout-s', '60']);
    expect(p.reps).toBe(2);
    expect(p.sizes.pgbenchSeconds).toBe(7);
    expect(p.sizes.pgbenchRate).toBeNull();
    expect(p.sizes.w5Transactions).toBe(10);
    expect(p.sizes.w4Rows).toBe(QUICK_SIZES.w4Rows);
    expect(p.timeoutMs).toBe(60_000);
  });

  it('--workloads picks and orders workloads, without duplicates; --observability adds obs', () => {
    expect(parse(['--workloads', 'w5, w2,w5']).workloads).toEqual(['w5', 'w2']);
    expect(parse(['--workloads', 'w1', '--observability']).workloads).toEqual(['w1', 'obs']);
    expect(parse(['--versions', '15']).versions.map((v) => v.major)).toEqual([15]);
    expect(parse(['--modes', 'streaming']).sizes.w1Modes).toEqual(['streaming']);
    expect(parse(['--json', '--json-out', '/tmp/x.json'])).toMatchObject({ json: true, jsonOut: '/tmp/x.json' });
  });

  it('reports every problem at once', () => {
    const message = usageError([
      '--workloads',
      'w9',
      '--reps',
      '0',
      '--versions',
      '14',
      '--rows',
      '10',
      '--txn-rows',
      '20',
      '--modes',
      'sideways',
      '--rate=-1',
    ]);
    expect(message).toContain("unknown workload 'w9'");
    expect(message).toContain("--reps must be a positive integer, got '0'");
    expect(message).toContain('no PostgreSQL 14 server binaries');
    expect(message).toContain('--txn-rows (20) must not exceed --rows (10)');
    expect(message).toContain("unknown mode 'sideways'");
    expect(message).toContain("--rate must be a non-negative integer, got '-1'");
  });

  it('needs pgbench only for the workloads that run it', () => {
    const noPgbench: Environment = { ...env, pgbench: () => undefined };
    expect(usageError([], noPgbench)).toContain('pgbench not found (needed by w2, w3, mesh, obs, storm)');
    expect(parse(['--workloads', 'w1,w4,w5'], noPgbench).workloads).toEqual(['w1', 'w4', 'w5']);
  });

  it('rejects unknown flags and stray arguments as usage errors, and answers --help', () => {
    expect(usageError(['--frobnicate'])).toMatch(/frobnicate/);
    expect(usageError(['w2'])).toMatch(/w2/);
    expect(usageError(['--seconds', '1.5'])).toContain("--seconds must be a positive integer, got '1.5'");
    expect(parseOptions(['--help'], env)).toBe('help');
  });
});
