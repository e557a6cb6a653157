/**
 * Reading from the walsender, stopped while any reason holds it, going on when none does.
 *
 * Two parts of a link stop reading for reasons of their own: the receive stage when its queue is
 * full (backpressure), and the apply loop while it lets a few small transactions gather before a
 * CALL (apply-loop.ts, GATHER_MS). Either may end while the other still holds: reading goes on only
 * when both have let go.
 */

/** Why reading stopped. */
export type ReadHold = 'backpressure' | 'gathering';

/** The part of a Node.js Readable the gate drives. */
export interface Pausable {
  pause(): unknown;
  resume(): unknown;
}

export class ReadGate {
  private readonly holds = new Set<ReadHold>();

  constructor(private readonly stream: Pausable) {}

  /** Whether some reason holds reading now. */
  get held(): boolean {
    return this.holds.size > 0;
  }

  hold(reason: ReadHold): void {
    this.holds.add(reason);
    this.stream.pause();
  }

  release(reason: ReadHold): void {
    this.holds.delete(reason);
    if (this.holds.size === 0) this.stream.resume();
  }
}
