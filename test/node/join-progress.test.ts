import { describe, expect, it } from 'vitest';
import { JoinProgress, serveJoinMetrics } from '../../src/node/join-progress.js';

describe('JoinProgress', () => {
  it('counts rows and tables, computes rows/s from the injected clock, and exports the same numbers', async () => {
    let now = 1_000;
    const p = new JoinProgress(() => now);
    p.begin(['public.a', 'public.b']);
    p.tableStarted('public.a');
    p.rows('public.a', 3000);
    now += 2_000;
    p.rows('public.a', 1000);
    p.tableDone('public.a');
    p.tableStarted('public.b');
    expect(p.rowsTotal).toBe(4000);
    expect(p.rowsPerSecond()).toBe(2000);
    expect(p.line()).toBe('copied 4000 rows in 2.0 s (2000 rows/s); tables: 1 done, 1 copying, 0 pending');

    const stop = await serveJoinMetrics('127.0.0.1:0', p.registry);
    await stop();
    const text = await p.registry.metrics();
    expect(text).toContain('pgbidi_join_rows_copied_total{table="public.a"} 4000');
    expect(text).toContain('pgbidi_join_rows_copied_total{table="public.b"} 0');
    expect(text).toContain('pgbidi_join_rows_per_second 2000');
    expect(text).toContain('pgbidi_join_tables{state="done"} 1');
    expect(text).toContain('pgbidi_join_tables{state="copying"} 1');
  });

  it('serves /metrics over HTTP while the join runs', async () => {
    const p = new JoinProgress(() => 0);
    p.begin(['public.t']);
    const { freePort } = await import('../../src/pg-server/free-port.js');
    const port = await freePort();
    const stop = await serveJoinMetrics(`127.0.0.1:${port}`, p.registry);
    try {
      const res = await fetch(`http://127.0.0.1:${port}/metrics`);
      expect(res.status).toBe(200);
      expect(await res.text()).toContain('pgbidi_join_tables{state="pending"} 1');
      expect((await fetch(`http://127.0.0.1:${port}/other`)).status).toBe(404);
    } finally {
      await stop();
    }
  });
});
