/**
 * `npm run bench -- --quick` end to end on PostgreSQL 18: every workload, both sides, real servers
 * and a real agent process (bin/pgbidi.js, so dist/ must be built, as for the other process tests).
 * It proves that the bench measures every figure it reports, that every run converges, and that the
 * report carries the statement profile; the sizes are too small for the numbers to mean anything.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { main } from '../../src/bench/bench-cli.js';
import type { BenchOutcome } from '../../src/bench/bench-cli.js';
import { WORKLOAD_IDS } from '../../src/bench/bench-results.js';
import { figureApplies, WORKLOADS } from '../../src/bench/workload-specs.js';

const dir = mkdtempSync(join(tmpdir(), 'pgbidi-bench-quick-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('bench --quick on PostgreSQL 18', () => {
  it(
    'measures every figure of every workload for both sides, converges, and prints the statement profile',
    async () => {
      const jsonFile = join(dir, 'bench.json');
      let out = '';
      let err = '';
      // A short wait limit: a broken applier fails this test in minutes instead of hanging it.
      const code = await main(['--quick', '--versions', '18', '--timeout-s', '120', '--json-out', jsonFile], {
        out: (s) => (out += s),
        err: (s) => (err += s),
      });
      const outcome = JSON.parse(readFileSync(jsonFile, 'utf8')) as BenchOutcome;

      expect(outcome.meta.complete).toBe(true);
      expect(outcome.meta.workloads).toEqual([...WORKLOAD_IDS]);
      expect(outcome.targets).toBeNull();
      for (const workload of WORKLOAD_IDS) {
        const spec = WORKLOADS[workload];
        for (const side of [spec.baseline, spec.subject]) {
          const runs = outcome.runs.filter((r) => r.workload === workload && r.engine === side.engine && r.variant === side.variant);
          const where = `${workload} ${side.engine}/${side.variant}`;
          expect(runs, where).toHaveLength(1);
          const run = runs[0];
          if (!run) continue;
          expect(run.error, `${where}: ${run.error}`).toBeNull();
          expect(run.skipped, where).toBeNull();
          expect(run.converged, where).toBe(true);
          expect(run.version, where).toMatch(/^18\.\d+$/);
          for (const figure of spec.figures) {
            const value = run.figures[figure.key];
            if (!figureApplies(figure, side.engine)) continue;
            expect(value, `${where} ${figure.key}`).toBeTypeOf('number');
            // A live interval (the source's commit ack to the first poll that sees the row on the target,
            // live-lag.ts) is clamped at 0: that poll's answer can be handled before the writer's ack when
            // replication is quicker than the event loop (seen: native W3 catch-up 0 s). Every other figure is positive.
            if (/^(live|ab|ba|b|c)\.(catchUpSeconds|lagP50|lagP99|lagMax)$/.test(figure.key)) expect(value, `${where} ${figure.key}`).toBeGreaterThanOrEqual(0);
            // The storm's rows were written on B after the group began: conflicts; its baseline's before: none.
            else if (/\.conflict/.test(figure.key) && side.variant === 'conflict-free') expect(value, `${where} ${figure.key}`).toBe(0);
            else expect(value, `${where} ${figure.key}`).toBeGreaterThan(0);
          }
        }
      }
      // pgbidi's statements on the applying node: a profile with statements, per transaction.
      for (const run of outcome.runs.filter((r) => WORKLOADS[r.workload].profile)) {
        expect(run.profile, `${run.workload} ${run.engine}`).not.toBeNull();
        if (run.engine === 'pgbidi') expect(run.profile?.top.length, run.workload).toBeGreaterThan(0);
      }
      expect(code, err).toBe(0);

      expect(out).toContain('== W2 OLTP:');
      expect(out).toMatch(
        /pgbidi \(rep 1\): \d[\d,]* transactions applied; per applied transaction: \d+\.\d+ statements, \d+\.\d+ calls, \d+\.\d+ plans, [\d.]+ server µs/,
      );
      expect(out).toMatch(/top \d+ of \d+ statements by time:/);
      expect(out).toContain('native shows only what is visible');
      expect(out).toMatch(/obs on \(rep 1\): \d[\d,]* transactions applied; per applied transaction:/);
      expect(out).toContain('== Conflict storm:');
      expect(out).toMatch(/storm \(rep 1\): \d[\d,]* transactions applied; per applied transaction:/);
      expect(out).not.toContain('targets:');
    },
    20 * 60_000,
  );
});
