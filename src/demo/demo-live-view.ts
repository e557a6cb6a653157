/**
 * The live view's I/O: collects a snapshot from the agents, the workload and the row hashes once a
 * second, and shows it (redrawn in place on a terminal, one compact line elsewhere). The drawing
 * itself is pure and lives in demo-view.ts.
 */
import type { Agent } from '../agent.js';
import type { Io } from '../cli.js';
import { CONFLICT_TYPES } from '../conflict/conflict-types.js';
import type { ConflictType } from '../conflict/conflict-types.js';
import { frameRoom, InPlaceScreen } from '../util/terminal-screen.js';
import type { Terminal } from '../util/terminal-screen.js';
import { readHashes } from './demo-convergence.js';
import type { DemoGroup } from './demo-group.js';
import { renderCompactLine, renderLiveView, REPORT_WIDTH } from './demo-view.js';
import type { DemoPhase, DemoSnapshot, LinkView, TableView } from './demo-view.js';
import type { DemoWorkload } from './demo-workload.js';

/** How often the view refreshes. */
export const VIEW_INTERVAL_MS = 1_000;

/** Narrower than this the view wraps rather than lose its link names and states. */
const MIN_VIEW_WIDTH = 40;

/** Redraws the view in place on a terminal, or prints one compact line per refresh elsewhere. */
export class LiveView {
  private readonly screen: InPlaceScreen;
  private lastApplied = new Map<string, { at: number; count: number }>();
  private lastWrites: { at: number; count: number } | undefined;
  private noticeShown: string | undefined;
  /** Shown above the links from now on (and printed once in compact mode). */
  notice: string | undefined;

  constructor(
    private readonly group: DemoGroup,
    private readonly workload: DemoWorkload,
    private readonly io: Io,
    /** Injected so that tests and pipes get the compact form. */
    private readonly terminal: Terminal,
    private readonly durationSeconds: number | undefined,
  ) {
    this.screen = new InPlaceScreen((text) => io.out(text));
  }

  /** Collects a snapshot (reusing `tables` when given) and shows it; returns it. */
  async draw(phase: DemoPhase, startedAt: number, stoppedAt?: number, tables?: readonly TableView[]): Promise<DemoSnapshot> {
    const snapshot = await this.collect(phase, startedAt, stoppedAt, tables);
    if (this.terminal.isTTY) {
      this.screen.draw(renderLiveView(snapshot, { color: true, ...frameRoom(this.terminal, MIN_VIEW_WIDTH) }));
    } else {
      if (this.notice !== this.noticeShown && this.notice) this.io.out(`${this.notice}\n`);
      this.io.out(`${renderCompactLine(snapshot)}\n`);
    }
    this.noticeShown = this.notice;
    return snapshot;
  }

  /**
   * Leaves the last view on screen, every link of it: on a terminal the last frame is drawn once
   * more without the height limit (nothing is drawn over it, so it may scroll); elsewhere it is
   * printed once, in the report's width. Restores the cursor.
   */
  finish(last: DemoSnapshot | undefined): void {
    if (last && this.terminal.isTTY) this.screen.draw(renderLiveView(last, { color: true, width: this.reportWidth() }));
    this.screen.restore();
    if (last && !this.terminal.isTTY) {
      this.io.out('\n');
      for (const line of renderLiveView(last, { color: false, width: REPORT_WIDTH })) this.io.out(`${line}\n`);
    }
  }

  /** Columns for what the demo prints once at the end: the terminal's, else REPORT_WIDTH. */
  reportWidth(): number {
    return this.terminal.isTTY ? frameRoom(this.terminal, MIN_VIEW_WIDTH).width : REPORT_WIDTH;
  }

  private async collect(phase: DemoPhase, startedAt: number, stoppedAt: number | undefined, tables: readonly TableView[] | undefined): Promise<DemoSnapshot> {
    const now = Date.now();
    const links: LinkView[] = [];
    for (const [target, agent] of this.group.agents) {
      const conflicts = await conflictsByPeer(agent);
      for (const l of agent.status()) {
        const key = `${l.peer}>${target}`;
        const prev = this.lastApplied.get(key);
        const rate = prev && now > prev.at ? ((l.changesApplied - prev.count) * 1000) / (now - prev.at) : 0;
        this.lastApplied.set(key, { at: now, count: l.changesApplied });
        links.push({
          source: l.peer,
          target,
          state: l.state,
          lagSeconds: l.lagSeconds,
          changesPerSecond: Math.max(0, rate),
          changesApplied: l.changesApplied,
          conflicts: conflicts.get(l.peer) ?? {},
          lastError: l.lastError ? `${l.lastError.code ?? ''} ${l.lastError.message}`.trim() : null,
        });
      }
    }
    const stats = this.workload.stats();
    const prevWrites = this.lastWrites;
    const writesPerSecond = prevWrites && now > prevWrites.at ? ((stats.writes - prevWrites.count) * 1000) / (now - prevWrites.at) : 0;
    this.lastWrites = { at: now, count: stats.writes };
    return {
      phase,
      elapsedSeconds: ((stoppedAt ?? now) - startedAt) / 1000,
      durationSeconds: this.durationSeconds,
      links,
      tables: tables ?? (await readHashes(this.group)),
      workload: stats,
      writesPerSecond: Math.max(0, writesPerSecond),
      ...(this.notice ? { notice: this.notice } : {}),
    };
  }
}

/** pgbidi_conflicts_total of one agent, summed over table and resolution, per peer and type. */
async function conflictsByPeer(agent: Agent): Promise<Map<string, Partial<Record<ConflictType, number>>>> {
  const out = new Map<string, Partial<Record<ConflictType, number>>>();
  const metric = await agent.metrics.conflicts.get();
  for (const v of metric.values) {
    const peer = v.labels.peer;
    const type = v.labels.type;
    if (typeof peer !== 'string' || !isConflictType(type) || v.value === 0) continue;
    const byType = out.get(peer) ?? {};
    byType[type] = (byType[type] ?? 0) + v.value;
    out.set(peer, byType);
  }
  return out;
}

function isConflictType(value: unknown): value is ConflictType {
  return typeof value === 'string' && (CONFLICT_TYPES as readonly string[]).includes(value);
}
