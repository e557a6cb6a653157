import { stripVTControlCharacters } from 'node:util';
import { describe, expect, it } from 'vitest';
import { CONFLICT_TYPES } from '../../src/conflict/conflict-types.js';
import {
  allConverged,
  renderCompactLine,
  renderConflictTotals,
  renderDivergentRow,
  renderFinalHashes,
  renderLiveView,
  REPORT_WIDTH,
} from '../../src/demo/demo-view.js';
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

// ---- a terminal of few rows: the frame keeps to rows - 1 lines, or the redraw scrolls ----

/** A group with nothing wrong: every link streaming with little lag, no errors, every table equal. */
function quietGroup(nodes: number): DemoSnapshot {
  const { snapshot: s } = busyGroup(nodes);
  const first = (t: TableView): TableView => ({ ...t, nodes: t.nodes.map((n) => ({ ...n, rows: t.nodes[0]?.rows, md5: 'abcdef0123456789abcdef0123456789' })) });
  return {
    ...s,
    links: s.links.map((l, i) => ({ ...l, state: 'streaming', lagSeconds: 0.05 * i, lastError: null })),
    tables: s.tables.map(first),
  };
}

/** How many links the frame leaves out, from its "… N more links" (or "N links") line; 0 without one. */
function hiddenCount(lines: readonly string[]): number {
  const line = lines.find((l) => /^(… )?\d+ (more )?links?\b/.test(l));
  return line ? Number(/\d+/.exec(line)?.[0]) : 0;
}

function shownLinks(lines: readonly string[], links: readonly LinkView[]): LinkView[] {
  return links.filter((l) => lines.some((line) => line.startsWith(`${l.source} -> ${l.target} `)));
}

describe('demo view in a terminal of few rows', () => {
  for (const { nodes, rows } of [
    { nodes: 5, rows: 20 },
    { nodes: 3, rows: 12 },
  ]) {
    it(`keeps ${nodes} nodes in ${rows} rows and 120 columns, every link in error shown`, () => {
      const { snapshot: s, links } = busyGroup(nodes);
      for (const color of [true, false]) {
        const lines = renderLiveView(s, { color, width: 120, height: rows - 1 }).map((l) => stripVTControlCharacters(l));
        expect(lines.length, lines.join('\n')).toBeLessThanOrEqual(rows - 1);
        for (const line of lines) expect(line.length, line).toBeLessThanOrEqual(120);
        expect(lines[0]).toMatch(/^pgbidi demo: running 62m05s of 120m00s/);
        // The links in error are there, whole, with their error.
        const failing = links.filter((l) => l.state !== 'streaming');
        expect(failing.length).toBeGreaterThan(0);
        for (const l of failing) {
          expect(rowOf(lines, l).slice(0, expectedCells(l).head.length)).toEqual(expectedCells(l).head);
          expect(lines.some((line) => line.includes(`${l.source} -> ${l.target}`) && line.includes('57P01 terminating connection'))).toBe(true);
        }
        // Every link is shown or counted, and the frame uses the room it has.
        const shown = shownLinks(lines, links);
        expect(shown.length + hiddenCount(lines)).toBe(links.length);
        expect(hiddenCount(lines)).toBeGreaterThan(0);
        expect(lines.length).toBe(rows - 1);
        // Convergence (a table differs: one line per table) and the workload stay.
        expect(lines).toContainEqual(expect.stringMatching(/^convergence counters +equal /));
        expect(lines).toContainEqual(expect.stringMatching(/^convergence events +differ /));
        expect(lines.at(-1)).toMatch(/^workload: 1235 writes\/s, 12345678 writes/);
      }
    });
  }

  it('shows the links with the most conflicts when all is well, sums up the others, and says once that all tables are equal', () => {
    const s = quietGroup(5);
    const lines = renderLiveView(s, { color: false, width: 120, height: 19 });
    expect(lines.length).toBeLessThanOrEqual(19);
    expect(lines).toContain('convergence all tables equal on 5 nodes: counters 123456 rows, events 200000 rows');
    const shown = shownLinks(lines, s.links);
    const hidden = s.links.filter((l) => !shown.includes(l));
    expect(shown.length).toBeGreaterThan(5);
    // busyGroup gives the later links more conflicts: those are the ones shown.
    expect(shown).toEqual(s.links.slice(-shown.length));
    const maxLag = Math.max(...hidden.map((l) => l.lagSeconds)).toFixed(1);
    expect(lines).toContainEqual(expect.stringMatching(new RegExp(`^… ${hidden.length} more links: all streaming, lag ≤ ${maxLag}s, \\d+ conflicts$`)));
  });

  it('keeps a failing or lagging link before links with more conflicts', () => {
    const s = quietGroup(5);
    const [first, second] = s.links;
    const links = s.links.map((l) =>
      l === first ? { ...l, state: 'error' as const, lastError: 'XX000 apply failed' } : l === second ? { ...l, lagSeconds: 7.5 } : l,
    );
    for (const height of [19, 12, 10, 8]) {
      const lines = renderLiveView({ ...s, links }, { color: false, width: 120, height });
      expect(lines.length).toBeLessThanOrEqual(height);
      const shown = shownLinks(lines, links);
      expect(shown.slice(0, 2)).toEqual(links.slice(0, 2));
      expect(lines.some((l) => l.includes('XX000 apply failed'))).toBe(true);
    }
  });

  it('never passes the height, whatever it is, and links in error stay from 11 lines on', () => {
    for (const nodes of [3, 5]) {
      const { snapshot: s, links } = busyGroup(nodes);
      const unlimited = renderLiveView(s, { color: false, width: 120 });
      for (let height = 1; height <= 40; height++) {
        const lines = renderLiveView(s, { color: false, width: 120, height });
        expect(lines.length, `${nodes} nodes, height ${height}`).toBeLessThanOrEqual(height);
        if (height >= unlimited.length) expect(lines).toEqual(unlimited);
        if (height >= 11) for (const l of links.filter((x) => x.state !== 'streaming')) rowOf(lines, l);
      }
    }
  });
});

// ---- the closing report: 3 nodes in 120 columns, 5 and 6 nodes one line per node ----

describe('demo closing report', () => {
  it('prints each node of each table on a line of its own, with the full hash, as test/demo.test.ts reads it', () => {
    const lines = renderFinalHashes(
      [
        { table: 'counters', nodes: ['n1', 'n2'].map((node) => ({ node, rows: 16, md5: '0123456789abcdef0123456789abcdef' })) },
        { table: 'events', nodes: ['n1', 'n2'].map((node) => ({ node, rows: 321, md5: 'fedcba9876543210fedcba9876543210' })) },
      ],
      1.25,
    );
    expect(lines).toEqual([
      'final row hashes (after 1.3 s of convergence wait):',
      '  counters  equal  n1   16 rows  md5 0123456789abcdef0123456789abcdef',
      '                   n2   16 rows  md5 0123456789abcdef0123456789abcdef',
      '  events    equal  n1  321 rows  md5 fedcba9876543210fedcba9876543210',
      '                   n2  321 rows  md5 fedcba9876543210fedcba9876543210',
      'converged: yes, every node holds the same rows',
    ]);
    // The same patterns as test/demo.test.ts.
    const out = lines.join('\n');
    expect(out).toMatch(/^ {2}counters +equal +n1 +\d+ rows +md5 ([0-9a-f]{32})\n +n2 +\d+ rows +md5 \1$/m);
    expect(out).toMatch(/^ {2}events +equal +n1 +\d+ rows +md5 ([0-9a-f]{32})\n +n2 +\d+ rows +md5 \1$/m);
  });

  for (const nodes of [3, 5, 6]) {
    it(`fits ${REPORT_WIDTH} columns at ${nodes} nodes, every hash whole, an unreadable node said so`, () => {
      const { snapshot: s } = busyGroup(nodes);
      const tables: TableView[] = [
        ...s.tables,
        { table: 'other', nodes: s.tables[0]?.nodes.map((n, i) => (i === 1 ? { node: n.node, rows: undefined, md5: undefined } : n)) ?? [] },
      ];
      const lines = renderFinalHashes(tables, 20);
      for (const line of lines) expect(line.length, line).toBeLessThanOrEqual(REPORT_WIDTH);
      expect(lines).toHaveLength(1 + tables.length * nodes + 1);
      for (const t of tables) {
        const first = lines.findIndex((l) => l.startsWith(`  ${t.table} `));
        expect(lines[first]).toMatch(new RegExp(`^  ${t.table} +(equal|DIFFER) +n1 `));
        t.nodes.forEach((n, i) => {
          const line = lines[first + i] ?? '';
          expect(line).toMatch(n.md5 ? new RegExp(` ${n.node} +${n.rows} rows +md5 ${n.md5}$`) : new RegExp(` ${n.node} +unreadable$`));
        });
      }
      expect(lines.at(-1)).toBe('converged: NO, the nodes hold different rows');
    });
  }

  it('wraps the conflict totals within the width, every type with its count', () => {
    const { links } = busyGroup(5);
    const lines = renderConflictTotals(links, REPORT_WIDTH);
    expect(lines[0]).toMatch(/^conflicts over the run: insert_exists \d+,/);
    for (const line of lines) expect(line.length, line).toBeLessThanOrEqual(REPORT_WIDTH);
    const text = lines.join(' ');
    for (const t of CONFLICT_TYPES) expect(text).toContain(`${t} ${links.reduce((sum, l) => sum + (l.conflicts[t] ?? 0), 0)}`);
    expect(renderConflictTotals([], REPORT_WIDTH)).toEqual(['conflicts over the run: none']);
  });

  it('lists a differing row on one line when it fits, else one line per node', () => {
    const versions = ['n1', 'n2', 'n3'].map((node, i) => ({ node, row: `(7,${i},${node},"2026-12-02 09:00:0${i}.123456+00")` }));
    expect(renderDivergentRow('id=7', versions.slice(0, 2), REPORT_WIDTH)).toEqual([
      '  id=7: n1 (7,0,n1,"2026-12-02 09:00:00.123456+00")  n2 (7,1,n2,"2026-12-02 09:00:01.123456+00")',
    ]);
    expect(renderDivergentRow('id=7', [...versions, { node: 'n4', row: '(missing)' }], REPORT_WIDTH)).toEqual([
      '  id=7:',
      '    n1 (7,0,n1,"2026-12-02 09:00:00.123456+00")',
      '    n2 (7,1,n2,"2026-12-02 09:00:01.123456+00")',
      '    n3 (7,2,n3,"2026-12-02 09:00:02.123456+00")',
      '    n4 (missing)',
    ]);
  });
});
