import { describe, expect, it } from 'vitest';
import { buildNodeView } from '../../src/http/node-view.js';
import type { Sample } from '../../src/http/node-view.js';
import { LinkHistory } from '../../src/observability/link-history.js';
import { webViewPage } from '../../src/http/web-view-page.js';
import { linkStatus as link } from '../support/status-fixture.js';

describe('link history', () => {
  it('keeps the window and derives changes/s from the last two samples', () => {
    const h = new LinkHistory(10_000);
    h.sample(0, [{ peer: 'b', lagSeconds: 1, changesApplied: 0 }]);
    expect(h.changesPerSecond('b')).toBe(0);
    h.sample(2_000, [{ peer: 'b', lagSeconds: 0.5, changesApplied: 100 }]);
    expect(h.changesPerSecond('b')).toBe(50);
    h.sample(12_500, [{ peer: 'b', lagSeconds: 0, changesApplied: 100 }]);
    expect(h.all().map((p) => p.at)).toEqual([12_500]);
    expect(h.changesPerSecond('b')).toBe(0);
    // An agent restart counts from zero: never a negative rate.
    h.sample(14_500, [{ peer: 'b', lagSeconds: 0, changesApplied: 10 }]);
    h.sample(16_500, [{ peer: 'b', lagSeconds: 0, changesApplied: 4 }]);
    expect(h.changesPerSecond('b')).toBe(0);
    expect(h.changesPerSecond('c')).toBe(0);
  });
});

describe('node view', () => {
  it('joins the links with conflicts by type, dead letters and local slots from the metrics', async () => {
    const metrics: Record<string, Sample[]> = {
      pgbidi_conflicts_total: [
        { labels: { peer: 'b', table: 'public.kv', type: 'insert_exists', resolution: 'apply_remote' }, value: 2 },
        { labels: { peer: 'b', table: 'public.other', type: 'insert_exists', resolution: 'keep_local' }, value: 1 },
        { labels: { peer: 'c', table: 'public.kv', type: 'delete_missing', resolution: 'skip' }, value: 0 },
        { labels: { peer: 'c', table: 'public.kv', type: 'no_such_type', resolution: 'skip' }, value: 9 },
      ],
      pgbidi_dead_letters_pending: [{ labels: {}, value: 4 }],
      pgbidi_local_slot_active: [
        { labels: { peer: 'b', slot: 'pgbidi_a_to_b' }, value: 1 },
        { labels: { peer: 'c', slot: 'pgbidi_a_to_c' }, value: 0 },
      ],
      pgbidi_local_slot_retained_wal_bytes: [{ labels: { peer: 'c', slot: 'pgbidi_a_to_c' }, value: 123456 }],
      pgbidi_local_slot_wal_status: [
        { labels: { peer: 'c', slot: 'pgbidi_a_to_c', wal_status: 'reserved' }, value: 0 },
        { labels: { peer: 'c', slot: 'pgbidi_a_to_c', wal_status: 'extended' }, value: 1 },
      ],
    };
    const view = await buildNodeView({
      node: 'a',
      at: 1000,
      links: [link('b'), link('c', { state: 'backoff', lastError: { message: 'connection refused', code: '08006', at: 'x' } })],
      history: [],
      changesPerSecond: (peer) => (peer === 'b' ? 12.5 : 0),
      metric: (name) => Promise.resolve(metrics[name] ?? []),
    });
    expect(view.links).toEqual([
      expect.objectContaining({ peer: 'b', state: 'streaming', changesPerSecond: 12.5, conflictsByType: { insert_exists: 3 }, lastError: null }),
      expect.objectContaining({ peer: 'c', state: 'backoff', conflictsByType: {}, lastError: '08006 connection refused' }),
    ]);
    expect(view.deadLettersPending).toBe(4);
    expect(view.localSlots).toEqual([
      { peer: 'b', slot: 'pgbidi_a_to_b', active: true, retainedWalBytes: 0, walStatus: null },
      { peer: 'c', slot: 'pgbidi_a_to_c', active: false, retainedWalBytes: 123456, walStatus: 'extended' },
    ]);
  });
});

describe('web view page', () => {
  it('is one self-contained page whose inline script and style are allowed by hash only', () => {
    const page = webViewPage('pgbidi · node <a>');
    expect(page.html).toContain('<title>pgbidi · node &#60;a&#62;</title>');
    expect(page.html).not.toMatch(/<(script|link|img)[^>]+(src|href)=/);
    expect(page.contentSecurityPolicy).toMatch(/script-src 'sha256-[A-Za-z0-9+/]+=*'/);
    expect(page.contentSecurityPolicy).not.toContain('unsafe-inline');
    expect(page.contentSecurityPolicy).toContain("connect-src 'self'");
  });
});
