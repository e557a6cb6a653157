import { CONFLICT_TYPES } from '../conflict/conflict-types.js';
import type { ConflictType } from '../conflict/conflict-types.js';
import type { LinkStatus } from '../link/link.js';
import type { LinkState } from '../observability/metrics.js';
import type { HistoryPoint } from '../observability/link-history.js';

/**
 * What the web view shows of one node, assembled from the same sources as /status (the links'
 * status) and /metrics (conflicts by type, dead letters, the slots peers read here). Pure.
 */
export interface NodeView {
  readonly node: string;
  /** Unix ms when assembled. */
  readonly at: number;
  readonly links: readonly LinkView[];
  readonly deadLettersPending: number;
  readonly localSlots: readonly LocalSlotView[];
  readonly history: readonly HistoryPoint[];
}

export interface LinkView {
  /** The node the changes come from; the target is the view's node. */
  readonly peer: string;
  readonly state: LinkState;
  readonly lagSeconds: number;
  readonly changesPerSecond: number;
  readonly changesApplied: number;
  readonly transactionsApplied: number;
  readonly conflicts: number;
  readonly conflictsByType: Readonly<Partial<Record<ConflictType, number>>>;
  readonly lastError: string | null;
}

/** A slot on this node that a peer reads: how much WAL it holds back here. */
export interface LocalSlotView {
  readonly peer: string;
  readonly slot: string;
  readonly active: boolean;
  readonly retainedWalBytes: number;
  readonly walStatus: string | null;
}

/** One sample of a metric family, as prom-client returns them. */
export interface Sample {
  readonly labels: Readonly<Record<string, string | number | undefined>>;
  readonly value: number;
}

export interface NodeViewSources {
  readonly node: string;
  readonly at: number;
  readonly links: readonly LinkStatus[];
  readonly history: readonly HistoryPoint[];
  readonly changesPerSecond: (peer: string) => number;
  /** The samples of one metric family by name (empty when it is not registered). */
  readonly metric: (name: string) => Promise<readonly Sample[]>;
}

export async function buildNodeView(s: NodeViewSources): Promise<NodeView> {
  const [conflicts, deadLetters, slotActive, slotRetained, slotStatus] = await Promise.all([
    s.metric('pgbidi_conflicts_total'),
    s.metric('pgbidi_dead_letters_pending'),
    s.metric('pgbidi_local_slot_active'),
    s.metric('pgbidi_local_slot_retained_wal_bytes'),
    s.metric('pgbidi_local_slot_wal_status'),
  ]);
  const byPeer = new Map<string, Partial<Record<ConflictType, number>>>();
  for (const c of conflicts) {
    const peer = String(c.labels['peer']);
    const type = CONFLICT_TYPES.find((t) => t === c.labels['type']);
    if (type === undefined || c.value === 0) continue;
    const counts = byPeer.get(peer) ?? {};
    counts[type] = (counts[type] ?? 0) + c.value;
    byPeer.set(peer, counts);
  }
  const slotKey = (x: Sample): string => `${String(x.labels['peer'])}\u0000${String(x.labels['slot'])}`;
  const retained = new Map(slotRetained.map((x) => [slotKey(x), x.value]));
  const status = new Map(slotStatus.filter((x) => x.value === 1).map((x) => [slotKey(x), String(x.labels['wal_status'])]));
  return {
    node: s.node,
    at: s.at,
    links: s.links.map((l): LinkView => ({
      peer: l.peer,
      state: l.state,
      lagSeconds: l.lagSeconds,
      changesPerSecond: s.changesPerSecond(l.peer),
      changesApplied: l.changesApplied,
      transactionsApplied: l.transactionsApplied,
      conflicts: l.conflicts,
      conflictsByType: byPeer.get(l.peer) ?? {},
      lastError: l.lastError ? `${l.lastError.code ?? ''} ${l.lastError.message}`.trim() : null,
    })),
    deadLettersPending: deadLetters[0]?.value ?? 0,
    localSlots: slotActive.map((x) => ({
      peer: String(x.labels['peer']),
      slot: String(x.labels['slot']),
      active: x.value === 1,
      retainedWalBytes: retained.get(slotKey(x)) ?? 0,
      walStatus: status.get(slotKey(x)) ?? null,
    })),
    history: s.history,
  };
}
