import { describe, expect, it } from 'vitest';
import { formatReport } from '../../src/bench/bench-report.js';
import { RunRecorder, runFailed } from '../../src/bench/bench-results.js';
import type { Engine, RunResult, Variant, WorkloadId } from '../../src/bench/bench-results.js';
import { overheadPercent, summarize } from '../../src/bench/bench-summary.js';
import { compare, evaluateTargets, TARGETS } from '../../src/bench/bench-targets.js';
import { profileStatements } from '../../src/bench/statement-profile.js';
import { FULL_SIZES, WORKLOADS } from '../../src/bench/workload-specs.js';

function run(
  workload: WorkloadId,
  engine: Engine,
  rep: number,
  figures: Record<string, number | null>,
  extra: { variant?: Variant; major?: number; converged?: boolean; error?: string; skip?: string } = {},
): RunResult {
  const rec = new RunRecorder(
    { workload, major: extra.major ?? 18, engine, variant: extra.variant ?? 'default', rep },
    WORKLOADS[workload].figures.map((f) => f.key),
  );
  rec.version((extra.major ?? 18) * 10_000 + 4);
  for (const [k, v] of Object.entries(figures)) rec.set(k, v);
  if (extra.converged !== undefined) rec.converged(extra.converged);
  if (extra.error) rec.fail(extra.error);
  if (extra.skip) rec.skip(extra.skip);
  return rec.result();
}

describe('RunRecorder', () => {
  it('holds every figure of the spec, null until set, and refuses keys outside it', () => {
    const rec = new RunRecorder(
      { workload: 'w5', major: 15, engine: 'pgbidi', variant: 'default', rep: 1 },
      WORKLOADS.w5.figures.map((f) => f.key),
    );
    rec.set('txnPerSecond', 1234);
    rec.set('firstRowSeconds', Number.NaN);
    rec.version(150018);
    const r = rec.result();
    expect(r.figures).toEqual({ txnPerSecond: 1234, txnPerSecondFromStart: null, firstRowSeconds: null, sourceSeconds: null });
    expect(r.version).toBe('15.18');
    expect(() => rec.set('nope', 1)).toThrow(/not in the w5 spec/);
  });

  it('converges only if every check did; fails when cut short or different, not when skipped', () => {
    const rec = new RunRecorder({ workload: 'w2', major: 18, engine: 'native', variant: 'default', rep: 1 }, []);
    rec.converged(true);
    rec.converged(false);
    rec.converged(true);
    expect(rec.result().converged).toBe(false);
    expect(runFailed(rec.result())).toBe(true);
    expect(runFailed(run('w5', 'native', 1, {}, { converged: true }))).toBe(false);
    expect(runFailed(run('w5', 'native', 1, {}, { converged: true, error: 'BENCH_TIMEOUT: x' }))).toBe(true);
    expect(runFailed(run('w3', 'native', 1, {}, { skip: 'needs 16' }))).toBe(false);
  });
});

describe('summarize', () => {
  const runs = [
    run('w5', 'native', 1, { txnPerSecond: 40_000 }, { converged: true }),
    run('w5', 'pgbidi', 1, { txnPerSecond: 10_000 }, { converged: true }),
    run('w5', 'pgbidi', 2, { txnPerSecond: 30_000 }, { converged: true }),
    run('w5', 'native', 2, { txnPerSecond: 20_000 }, { converged: true }),
    run('w5', 'native', 3, { txnPerSecond: 30_000 }, { converged: true }),
    run('w5', 'pgbidi', 3, { txnPerSecond: null }, { error: 'BENCH_TIMEOUT: late' }),
  ];

  it('takes medians per side and the median of per-repetition ratios over reps with both', () => {
    const [s] = summarize(runs);
    const f = s?.figures.find((x) => x.spec.key === 'txnPerSecond');
    expect(f?.baseline.median).toBe(30_000);
    expect(f?.baseline.runs).toEqual([40_000, 20_000, 30_000]);
    expect(f?.subject.median).toBe(20_000);
    expect(f?.subject.runs).toEqual([10_000, 30_000, null]);
    // rep 1: 0.25, rep 2: 1.5, rep 3: no pgbidi figure.
    expect(f?.ratio).toBe(0.875);
    expect(s?.version).toBe('18.4');
    expect(s?.subject).toMatchObject({ converged: 2, checked: 2, failed: 1 });
  });

  it('keeps figures of one engine only out of the other side', () => {
    const [s] = summarize([run('w4', 'native', 1, { peakRssMiB: 12 }), run('w4', 'pgbidi', 1, { peakRssMiB: 80 })]);
    const rss = s?.figures.find((x) => x.spec.key === 'peakRssMiB');
    expect(rss?.baseline).toEqual({ median: null, runs: [null], applies: false });
    expect(rss?.subject.median).toBe(80);
    expect(rss?.ratio).toBeNull();
  });

  it('summarizes per workload and version', () => {
    const all = summarize([...runs, run('w5', 'native', 1, { txnPerSecond: 5 }, { major: 15 })]);
    expect(all.map((s) => `${s.workload}/${s.major}`)).toEqual(['w5/18', 'w5/15']);
  });

  it('overhead is how much worse: time ratio - 1, rate 1 - ratio', () => {
    const time = WORKLOADS.obs.figures.find((f) => f.key === 'backlog.catchUpSeconds');
    const rate = WORKLOADS.obs.figures.find((f) => f.key === 'backlog.txnPerSecond');
    const count = WORKLOADS.obs.figures.find((f) => f.key === 'backlog.transactions');
    if (!time || !rate || !count) throw new Error('spec changed');
    expect(overheadPercent(time, 1.05)).toBeCloseTo(5);
    expect(overheadPercent(rate, 0.9)).toBeCloseTo(10);
    expect(overheadPercent(count, 2)).toBeNull();
    expect(overheadPercent(time, null)).toBeNull();
  });
});

describe('targets', () => {
  it('compares with the target operator', () => {
    expect(compare(1, '<=', 1)).toBe(true);
    expect(compare(1, '<', 1)).toBe(false);
    expect(compare(0.9, '>=', 0.9)).toBe(true);
    expect(compare(0.89, '>=', 0.9)).toBe(false);
  });

  it('names figures that exist in its workload spec, and every target of the brief is there', () => {
    for (const t of TARGETS) expect(WORKLOADS[t.workload].figures.map((f) => f.key)).toContain(t.figure);
    expect(TARGETS.map((t) => t.id)).toEqual([
      'w2-backlog-catch-up',
      'w2-live-lag-p99',
      'w2-live-source-tps',
      'w1-backlog-rate',
      'w1-streaming-rate',
      'w5-rate',
      'w2-server-us',
      'w2-agent-cpu',
      'w4-peak-rss',
      'w4-apply-time',
      'obs-overhead',
    ]);
  });

  it('evaluates ratios, pgbidi values and overheads per version; a version without data misses', () => {
    const summaries = summarize([
      run('w2', 'native', 1, { 'backlog.catchUpSeconds': 3, 'live.sourceTps': 2000, 'live.lagP99': 0.02 }),
      run('w2', 'pgbidi', 1, {
        'backlog.catchUpSeconds': 2.5,
        'live.sourceTps': 1700,
        'live.lagP99': 1.5,
        'profile.serverUsPerTxn': 120,
        'backlog.agentCpuUsPerTxn': 101,
      }),
      run('obs', 'pgbidi', 1, { 'backlog.txnPerSecond': 1000 }, { variant: 'observability-off' }),
      run('obs', 'pgbidi', 1, { 'backlog.txnPerSecond': 960 }, { variant: 'observability-on' }),
    ]);
    const results = evaluateTargets(summaries, ['w2', 'obs'], [18, 15]);
    const at = (id: string, major: number) => results.find((r) => r.target.id === id && r.major === major);
    expect(results.every((r) => r.target.workload === 'w2' || r.target.workload === 'obs')).toBe(true);
    expect(at('w2-backlog-catch-up', 18)).toMatchObject({ value: 2.5 / 3, met: true, version: '18.4' });
    expect(at('w2-live-source-tps', 18)).toMatchObject({ value: 0.85, met: false });
    expect(at('w2-live-lag-p99', 18)).toMatchObject({ value: 1.5, met: false });
    expect(at('w2-server-us', 18)).toMatchObject({ value: 120, met: true });
    expect(at('w2-agent-cpu', 18)).toMatchObject({ value: 101, met: false });
    expect(at('obs-overhead', 18)?.value).toBeCloseTo(4);
    expect(at('obs-overhead', 18)?.met).toBe(true);
    expect(at('w2-backlog-catch-up', 15)).toMatchObject({ value: null, met: false, version: '15' });
  });
});

describe('text report', () => {
  it('shows medians, ratios, per-rep values, failures, n/a runs, the statement profile and the targets', () => {
    const profile = profileStatements([{ query: 'CALL pg_temp.apply($1)', toplevel: true, calls: 5, plans: 0, execMs: 2, planMs: 0 }], 100);
    const withProfile = (r: RunResult): RunResult => ({ ...r, profile });
    const runs = [
      withProfile(run('w2', 'native', 1, { 'backlog.catchUpSeconds': 3, 'live.lagP99': 0.02 }, { converged: true })),
      withProfile(run('w2', 'pgbidi', 1, { 'backlog.catchUpSeconds': 6, 'live.lagP99': 0.04, 'profile.serverUsPerTxn': 20 }, { converged: true })),
      run('w2', 'pgbidi', 2, {}, { error: 'BENCH_TIMEOUT: mark 1 of node 0 not on b after 900 s' }),
      run('w2', 'native', 2, { 'backlog.catchUpSeconds': 4, 'live.lagP99': 0.03 }, { converged: true }),
      run('w3', 'native', 1, {}, { major: 15, skip: 'native replication in both directions needs origin = none' }),
      run('w3', 'pgbidi', 1, { 'ab.lagP99': 0.5 }, { major: 15, converged: true }),
    ];
    const summaries = summarize(runs);
    const text = formatReport({ reps: 2, quick: false, cpus: 2, loadavg: [1, 2, 3], sizes: FULL_SIZES }, summaries, evaluateTargets(summaries, ['w2'], [18]));
    expect(text).toContain('== W2 OLTP: pgbench -n -N -c 4 -j 2 -T 30, scale 10 on A');
    expect(text).toMatch(/backlog catch-up: start -> fence on B\s+s\s+3\.500\s+6\.000\s+2\.00\s+3\.000, 4\.000\s+6\.000, x/);
    expect(text).toContain('pgbidi rep 2 FAILED: BENCH_TIMEOUT: mark 1 of node 0 not on b after 900 s');
    expect(text).toContain('native: converged 2/2; pgbidi: converged 1/2, 1 failed');
    expect(text).toContain('per applied transaction: 0.05 statements, 0.05 calls, 0.000 plans, 20.0 server µs (exec+plan)');
    expect(text).toContain('native shows only what is visible');
    expect(text).toContain('CALL pg_temp.apply($1)');
    expect(text).toContain('native: n/a (native replication in both directions needs origin = none)');
    expect(text).toMatch(/W2 backlog catch-up time, pgbidi\/native\s+18\.4\s+2\.00x\s+<= 1\.00x\s+MISSED/);
    expect(text).toMatch(/W2 server exec\+plan µs per transaction, pgbidi\s+18\.4\s+20\.0 µs\s+<= 150\.0 µs\s+met/);
    expect(text).toContain('targets: 2 of 5 met');
    expect(text).toMatch(/W2 live heartbeat lag p99, pgbidi\s+18\.4\s+0\.040 s\s+< 1\.000 s\s+met/);
  });

  it('warns when the two backlogs differ in size by more than 10 %', () => {
    const report = (nativeTxns: number, pgbidiTxns: number): string =>
      formatReport(
        { reps: 1, quick: false, cpus: 2, loadavg: [0, 0, 0], sizes: FULL_SIZES },
        summarize([run('w2', 'native', 1, { 'backlog.transactions': nativeTxns }), run('w2', 'pgbidi', 1, { 'backlog.transactions': pgbidiTxns })]),
        null,
      );
    expect(report(46_051, 21_044)).toContain('note: the backlogs differ in size (native 46,051, pgbidi 21,044 transactions');
    expect(report(46_051, 44_000)).not.toContain('the backlogs differ');
  });

  it('has no targets table with --quick', () => {
    const summaries = summarize([run('w5', 'native', 1, { txnPerSecond: 1 }), run('w5', 'pgbidi', 1, { txnPerSecond: 1 })]);
    const text = formatReport({ reps: 1, quick: true, cpus: 2, loadavg: [0, 0, 0], sizes: FULL_SIZES }, summaries, null);
    expect(text).toContain('--quick');
    expect(text).not.toContain('targets:');
  });
});
