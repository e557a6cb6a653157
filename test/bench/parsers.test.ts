import { describe, expect, it } from 'vitest';
import { BenchError } from '../../src/bench/bench-error.js';
import { heartbeatLags, markBase } from '../../src/bench/mark-probes.js';
import { parsePgbenchSummary } from '../../src/bench/pgbench.js';
import { parseSchedstatCpuNanos, parseStatCpuTicks, parseVmHwmBytes } from '../../src/bench/proc-stats.js';
import { profileStatements, serverUsMatching } from '../../src/bench/statement-profile.js';
import type { StatementRow } from '../../src/bench/statement-profile.js';

describe('pgbench summary', () => {
  const output = `pgbench (15.18 (Debian 15.18-0+deb12u1), server 18.4)
transaction type: <builtin: simple update>
scaling factor: 10
number of clients: 4
duration: 3 s
number of transactions actually processed: 1819
number of failed transactions: 0 (0.000%)
latency average = 6.565 ms
initial connection time = 25.199 ms
tps = 609.314506 (without initial connection time)
`;

  it('reads TPS, processed and failed transactions', () => {
    expect(parsePgbenchSummary(output)).toEqual({ tps: 609.314506, transactions: 1819, failed: 0 });
    expect(parsePgbenchSummary(output.replace('failed transactions: 0', 'failed transactions: 3'))).toMatchObject({ failed: 3 });
  });

  it('fails with a typed error when there is no summary', () => {
    expect(() => parsePgbenchSummary('pgbench: error: connection refused\n')).toThrow(BenchError);
    expect(() => parsePgbenchSummary(output.replace(/^tps = .*$/m, ''))).toThrow(/no summary/);
  });
});

describe('/proc parsers', () => {
  it('adds utime and stime (fields 14 and 15), also when the command name has spaces and parentheses', () => {
    const line = '4242 (node (bench) x) S 1 4242 4242 0 -1 4194560 900 0 0 0 1234 567 0 0 20 0 11 0 145703 3133440 380';
    expect(parseStatCpuTicks(line)).toBe(1234 + 567);
    expect(() => parseStatCpuTicks('4242 (x) S 1')).toThrow(RangeError);
  });

  it('reads run time in nanoseconds from schedstat', () => {
    expect(parseSchedstatCpuNanos('68276512 59971 2\n')).toBe(68276512);
    expect(() => parseSchedstatCpuNanos('')).toThrow(RangeError);
  });

  it('reads VmHWM in bytes', () => {
    expect(parseVmHwmBytes('Name:\tnode\nVmPeak:\t 1000 kB\nVmHWM:\t  204800 kB\nVmRSS:\t 100 kB\n')).toBe(204800 * 1024);
    expect(parseVmHwmBytes('Name:\tkthreadd\n')).toBeNull();
  });
});

describe('statement profile', () => {
  const rows: StatementRow[] = [
    { query: 'CALL   apply($1)', toplevel: true, calls: 10, plans: 0, execMs: 5, planMs: 0 },
    { query: 'UPDATE t SET v = $1', toplevel: false, calls: 100, plans: 2, execMs: 3, planMs: 0.5 },
    { query: 'SELECT 1', toplevel: true, calls: 30, plans: 30, execMs: 0.2, planMs: 0.1 },
  ];

  it('sums top-level time only (nested time is inside its caller) and counts every call and plan', () => {
    const p = profileStatements(rows, 10);
    expect(p.total).toEqual({ statements: 40, calls: 140, plans: 32, serverUs: 5300, topLevelUs: 5300, nestedUs: 3500 });
    expect(p.perTransaction).toEqual({ statements: 4, calls: 14, plans: 3.2, serverUs: 530 });
    expect(p.distinct).toBe(3);
  });

  it('lists statements by time, most first, with whitespace collapsed', () => {
    const p = profileStatements(rows, 10);
    expect(p.top.map((l) => l.query)).toEqual(['CALL apply($1)', 'UPDATE t SET v = $1', 'SELECT 1']);
    expect(p.top[1]).toEqual({ query: 'UPDATE t SET v = $1', toplevel: false, calls: 100, plans: 2, serverUs: 3500 });
    const many = Array.from({ length: 15 }, (_, i): StatementRow => ({ query: `q${i}`, toplevel: true, calls: 1, plans: 1, execMs: i, planMs: 0 }));
    expect(profileStatements(many, 1).top.map((l) => l.query)).toEqual(['q14', 'q13', 'q12', 'q11', 'q10', 'q9', 'q8', 'q7', 'q6', 'q5']);
  });

  it('sums the exec and plan time of the statements that match, top-level or nested', () => {
    expect(serverUsMatching(rows, /^UPDATE t\b/)).toBe(3500);
    expect(serverUsMatching(rows, /^(CALL|SELECT)\b/)).toBeCloseTo(5300, 6);
    expect(serverUsMatching(rows, /^INSERT\b/)).toBe(0);
  });

  it('counts the nested time when top-level statements that ran it are missing (they ended in an error)', () => {
    const missingCaller: StatementRow[] = [
      { query: 'CALL apply($1)', toplevel: true, calls: 2, plans: 0, execMs: 1, planMs: 0 },
      { query: 'UPDATE t SET v = $1', toplevel: false, calls: 100, plans: 1, execMs: 4, planMs: 0 },
    ];
    const p = profileStatements(missingCaller, 100);
    expect(p.total).toMatchObject({ serverUs: 4000, topLevelUs: 1000, nestedUs: 4000 });
    expect(p.perTransaction.serverUs).toBe(40);
  });

  it('shows nothing visible as zeros, and per-transaction figures need transactions', () => {
    expect(profileStatements([], 500).perTransaction).toEqual({ statements: 0, calls: 0, plans: 0, serverUs: 0 });
    expect(profileStatements(rows, 0).perTransaction.serverUs).toBeNaN();
  });
});

describe('heartbeat lags', () => {
  it('is ack -> first sighting in seconds, for the heartbeats seen, never negative', () => {
    const base = markBase(0);
    const beats = [
      { id: base + 1, ackAt: 1000 },
      { id: base + 2, ackAt: 1100 },
      { id: base + 3, ackAt: 1200 },
    ];
    const seen = new Map([
      [base + 1, 1020],
      [base + 2, 1095], // a poll that returned before the writer saw its ack
    ]);
    expect(heartbeatLags(beats, (id) => seen.get(id))).toEqual([0.02, 0]);
  });

  it('gives every node its own id range', () => {
    expect(markBase(1) - markBase(0)).toBe(1_000_000_000);
    expect(markBase(2)).toBeGreaterThan(markBase(1));
  });
});
