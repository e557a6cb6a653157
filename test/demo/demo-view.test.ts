import { stripVTControlCharacters } from 'node:util';
import { describe, expect, it } from 'vitest';
import { CONFLICT_TYPES } from '../../src/conflict/conflict-types.js';
import { allConverged, renderCompactLine, renderFinalHashes, renderLiveView } from '../../src/demo/demo-view.js';
import type { DemoSnapshot, LinkView, TableView } from '../../src/demo/demo-view.js';

function link(source: string, target: string, extra: Partial<LinkView> = {}): LinkView {
  return { source, target, state: 'streaming', lagSeconds: 0.04, changesPerSecond: 25, changesApplied: 300, conflicts: {}, lastError: null, ...extra };
}

function snapshot(links: LinkView[], tables: TableView[]): DemoSnapshot {
  return {
    phase: 'running',
    elapsedSeconds: 12.3,
    durationSeconds: 30,
    links,
    tables,
    workload: { writes: 500, races: { insert_insert: 3, update_update: 2, update_delete: 1, delete_delete: 1 }, racesSkipped: 0, errors: 0, lastError: null },
    writesPerSecond: 40,
  };
}

const equalTable: TableView = {
  table: 'counters',
  nodes: [
    { node: 'n1', rows: 5, md5: 'abcdef0123456789' },
    { node: 'n2', rows: 5, md5: 'abcdef0123456789' },
  ],
};
const differentTable: TableView = {
  table: 'events',
  nodes: [
    { node: 'n1', rows: 9, md5: 'aaaa' },
    { node: 'n2', rows: 8, md5: 'bbbb' },
  ],
};

describe('demo view', () => {
  it('renders one row per link with the conflict types seen so far, and convergence per table', () => {
    const s = snapshot(
      [
        link('n2', 'n1', { conflicts: { insert_exists: 4, update_missing: 1 } }),
        link('n1', 'n2', { state: 'backoff', lastError: '57P01 terminating connection' }),
      ],
      [equalTable, differentTable],
    );
    const lines = renderLiveView(s, { color: false, width: 200 });
    expect(lines[0]).toBe('pgbidi demo: running 12s of 30s (Ctrl-C to stop early)');
    const header = lines[1] ?? '';
    expect(header).toContain('ins_exists');
    expect(header).toContain('upd_missing');
    expect(header).not.toContain('del_missing');
    expect(lines[2]).toMatch(/^n2 -> n1\s+streaming\s+0\.0s\s+25\.0\s+300\s+5\s+4\s+1\s+-$/);
    expect(lines[3]).toMatch(/^n1 -> n2\s+backoff .* 57P01 terminating connection$/);
    expect(lines).toContain('convergence counters  equal   n1: 5 rows abcdef01  n2: 5 rows abcdef01');
    expect(lines).toContain('convergence events    differ  n1: 9 rows aaaa  n2: 8 rows bbbb');
  });

  it('never draws a line wider than the terminal, with or without colour', () => {
    const s = snapshot([link('n2', 'n1', { conflicts: { insert_exists: 4, delete_missing: 2 } })], [equalTable]);
    for (const color of [false, true]) {
      for (const line of renderLiveView(s, { color, width: 30 })) {
        expect(stripVTControlCharacters(line).length).toBeLessThanOrEqual(30);
      }
    }
    expect(renderLiveView(s, { color: true, width: 200 }).join('\n')).toContain('\u001b[32mstreaming\u001b[0m');
  });

  it('prints a compact line per refresh for pipes', () => {
    const line = renderCompactLine(snapshot([link('n2', 'n1', { conflicts: { insert_exists: 2 } }), link('n1', 'n2')], [equalTable, differentTable]));
    expect(line).toBe(
      '[   12s] n2->n1 streaming lag=0.0s 25.0/s conflicts=2(ins_exists=2) | n1->n2 streaming lag=0.0s 25.0/s conflicts=0 ' +
        '| convergence counters=equal events=differ | writes/s=40.0 races=7',
    );
  });

  it('calls a table converged only when every node was read and agrees', () => {
    expect(allConverged([equalTable])).toBe(true);
    expect(allConverged([equalTable, differentTable])).toBe(false);
    expect(
      allConverged([
        {
          table: 't',
          nodes: [
            { node: 'n1', rows: undefined, md5: undefined },
            { node: 'n2', rows: undefined, md5: undefined },
          ],
        },
      ]),
    ).toBe(false);
    expect(allConverged([])).toBe(false);
    expect(renderFinalHashes([equalTable, differentTable], 2).at(-1)).toBe('converged: NO, the nodes hold different rows');
  });
});

// ---- the sizes: 3 nodes (6 links) and 5 nodes (20 links) in 120 columns ----

const LONG_ERROR = '57P01 terminating connection due to administrator command while applying transaction 123456 of peer n2 to public.counters';

/** A worst case that still happens: every conflict type on every link, large counters, a long error on the links from n2. */
function busyGroup(nodes: number): { snapshot: DemoSnapshot; links: LinkView[] } {
  const names = Array.from({ length: nodes }, (_, i) => `n${i + 1}`);
  const links: LinkView[] = [];
  for (const target of names) {
    for (const source of names) {
      if (source === target) continue;
      const i = links.length;
      links.push({
        source,
        target,
        state: source === 'n2' ? 'backoff' : 'streaming',
        lagSeconds: 10 + i + 0.25,
        changesPerSecond: 100 + i,
        changesApplied: 1_000_000 + i,
        // Distinct on every link and type, so that each number can be found where it belongs.
        conflicts: Object.fromEntries(CONFLICT_TYPES.map((t, j) => [t, 1000 + 10 * i + j])),
        lastError: source === 'n2' ? LONG_ERROR : null,
      });
    }
  }
  const md5 = (node: string, differ: boolean): string => (differ ? `${node}aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa` : 'abcdef0123456789abcdef0123456789');
  const tables: TableView[] = [
    { table: 'counters', nodes: names.map((node) => ({ node, rows: 123_456, md5: md5(node, false) })) },
    { table: 'events', nodes: names.map((node, i) => ({ node, rows: 200_000 + i, md5: md5(node, true) })) },
  ];
  return {
    links,
    snapshot: {
      phase: 'running',
      elapsedSeconds: 3725,
      durationSeconds: 7200,
      links,
      tables,
      workload: {
        writes: 12_345_678,
        races: { insert_insert: 1234, update_update: 2345, update_delete: 3456, delete_delete: 4567 },
        racesSkipped: 0,
        errors: 0,
        lastError: null,
      },
      writesPerSecond: 1234.5,
      notice: 'SIGINT received: stopping (press Ctrl-C again to skip the convergence wait)',
    },
  };
}

/** The cells of a link's row as they must read whole: state, lag, rate, total, then each type. */
function expectedCells(l: LinkView): { head: string[]; conflicts: string[] } {
  const counts = CONFLICT_TYPES.map((t) => String(l.conflicts[t] ?? 0));
  const total = CONFLICT_TYPES.reduce((sum, t) => sum + (l.conflicts[t] ?? 0), 0);
  return { head: [l.source, '->', l.target, l.state, `${l.lagSeconds.toFixed(1)}s`, String(l.changesPerSecond)], conflicts: [String(total), ...counts] };
}

function rowOf(lines: readonly string[], l: LinkView): string[] {
  const row = lines.find((line) => line.startsWith(`${l.source} -> ${l.target} `));
  expect(row, `no row for ${l.source} -> ${l.target}`).toBeDefined();
  return (row ?? '').split(/ +/);
}

function containsRun(tokens: readonly string[], run: readonly string[]): boolean {
  return tokens.some((_, i) => run.every((r, j) => tokens[i + j] === r));
}

describe('demo view at 120 columns', () => {
  for (const nodes of [3, 5]) {
    it(`fits ${nodes} nodes with every conflict type and a long error, every number whole`, () => {
      const { snapshot: s, links } = busyGroup(nodes);
      expect(links).toHaveLength(nodes * (nodes - 1));
      for (const color of [true, false]) {
        const lines = renderLiveView(s, { color, width: 120 }).map((l) => stripVTControlCharacters(l));
        for (const line of lines) expect(line.length, line).toBeLessThanOrEqual(120);

        for (const l of links) {
          const tokens = rowOf(lines, l);
          const { head, conflicts } = expectedCells(l);
          expect(tokens.slice(0, head.length)).toEqual(head);
          expect(containsRun(tokens, conflicts), `${tokens.join(' ')} lacks ${conflicts.join(' ')}`).toBe(true);
          // The error is readable from its start, beside the row or under the table.
          if (l.lastError)
            expect(lines.some((line) => line.includes(`${l.source} -> ${l.target}`) && line.includes('57P01 terminating connection'))).toBe(true);
        }
        // The conflict columns are explained whatever their titles.
        const text = lines.join('\n');
        for (const t of CONFLICT_TYPES) expect(text).toMatch(new RegExp(`\\b${t.split('_')[0]}`));

        expect(lines).toContainEqual(expect.stringMatching(/^convergence counters +equal /));
        expect(lines).toContainEqual(expect.stringMatching(/^convergence events +differ /));
        // A differing table keeps every node with its row count.
        const events = lines.find((line) => line.startsWith('convergence events')) ?? '';
        s.tables[1]?.nodes.forEach((n) => expect(events).toContain(`${n.node}: ${n.rows}`));
        expect(lines).toContainEqual(expect.stringMatching(/^workload: 1235 writes\/s, 12345678 writes/));
      }
    });
  }

  it('keeps the full titles, applied count and error column when they fit', () => {
    const { snapshot: s } = busyGroup(3);
    const quiet: DemoSnapshot = {
      ...s,
      links: s.links.map((l) => ({ ...l, conflicts: { insert_exists: 3, update_missing: 1 }, lastError: l.lastError ? '57P01 terminating' : null })),
    };
    const lines = renderLiveView(quiet, { color: false, width: 120 });
    expect(lines[2]).toMatch(/^link +state +lag +changes\/s +applied +conflicts +ins_exists +upd_missing +last error$/);
    expect(lines.find((l) => l.startsWith('n2 -> n1'))).toMatch(/ 57P01 terminating$/);
  });

  it('drops whole cells, never part of a number, when even the narrowest table does not fit', () => {
    const { snapshot: s, links } = busyGroup(3);
    for (const width of [80, 60, 45]) {
      const lines = renderLiveView(s, { color: false, width });
      for (const line of lines) expect(line.length, line).toBeLessThanOrEqual(width);
      for (const l of links) {
        const { head, conflicts } = expectedCells(l);
        const tokens = rowOf(lines, l);
        const full = [...head, ...conflicts];
        // What is shown is the row's cells in order from the start, each one whole.
        expect(full.slice(0, tokens.length)).toEqual(tokens);
        expect(tokens.length).toBeGreaterThanOrEqual(head.length);
      }
    }
  });
});
