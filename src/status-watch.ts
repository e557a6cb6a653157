/**
 * `pgbidi status --watch`: asks the agent's GET /status once a second. On a terminal the table is
 * redrawn in place, fitted to the window's width; elsewhere (a pipe, a CI log) each refresh is one
 * line. An agent that does not answer is reported in the frame and asked again at the next
 * refresh, so that the watch outlives an agent restart.
 *
 *   refresh ──> fetch /status ──> draw frame | print line ──> wait out the second ──> refresh
 *      └── stop signal (SIGINT/SIGTERM, wired by the caller) or --count N reached: restore the cursor, exit
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Io } from './cli.js';
import { renderStatusFrame, renderStatusLine } from './status-format.js';
import type { StatusBody } from './status-format.js';
import { cutText } from './util/text-layout.js';
import { frameRoom, InPlaceScreen } from './util/terminal-screen.js';
import type { Terminal } from './util/terminal-screen.js';
import { errorMessage } from './util/error-message.js';

const DEFAULT_INTERVAL_MS = 1_000;
/** Narrower than this the frame wraps rather than lose the peer names and states. */
const MIN_FRAME_WIDTH = 20;
/** Longer than a refresh on purpose: a busy agent that answers late is still shown. */
const FETCH_TIMEOUT_MS = 5_000;

export interface StatusWatchOptions {
  /** The agent's /status URL. */
  readonly url: string;
  readonly io: Io;
  readonly terminal: Terminal;
  /** Aborted by the caller on SIGINT/SIGTERM: the watch ends after restoring the terminal. */
  readonly stop: AbortSignal;
  /** Refreshes before the watch ends by itself (`--count N`); undefined: until stopped. */
  readonly count?: number;
  readonly intervalMs?: number;
}

export type StatusAnswer = { readonly ok: true; readonly body: StatusBody } | { readonly ok: false; readonly problem: string };

/**
 * Runs the watch. Exit code: 0 when stopped by a signal, or when the last of `count` refreshes got
 * an answer; 1 when the last refresh found no agent (as `pgbidi status` would).
 */
export async function watchStatus(options: StatusWatchOptions): Promise<number> {
  const { io, terminal, stop } = options;
  const interval = options.intervalMs ?? DEFAULT_INTERVAL_MS;
  const screen = terminal.isTTY ? new InPlaceScreen((text) => io.out(text)) : undefined;
  let refreshes = 0;
  let last: StatusAnswer | undefined;
  try {
    while (!stop.aborted) {
      const started = Date.now();
      last = await fetchStatus(options.url, stop);
      if (stop.aborted) break;
      refreshes += 1;
      const at = new Date();
      if (screen) {
        const { width, height } = frameRoom(terminal, MIN_FRAME_WIDTH);
        screen.draw(last.ok ? renderStatusFrame(last.body, { width, height, at }) : [cutText(`${at.toISOString()}  ${last.problem}`, width)]);
      } else {
        io.out(`${last.ok ? renderStatusLine(last.body, at) : `${at.toISOString()} ${last.problem}`}\n`);
      }
      if (options.count !== undefined && refreshes >= options.count) break;
      await sleep(Math.max(0, started + interval - Date.now()), undefined, { signal: stop }).catch(() => undefined);
    }
  } finally {
    screen?.restore();
  }
  if (stop.aborted) return 0;
  return last?.ok === true ? 0 : 1;
}

/** One GET /status; a failure is an answer too, with what went wrong. */
export async function fetchStatus(url: string, stop?: AbortSignal): Promise<StatusAnswer> {
  const timeout = AbortSignal.timeout(FETCH_TIMEOUT_MS);
  try {
    const res = await fetch(url, { signal: stop ? AbortSignal.any([stop, timeout]) : timeout });
    const body: unknown = await res.json();
    if (!res.ok || !isStatusBody(body)) return { ok: false, problem: `the agent at ${url} answered HTTP ${res.status} without a status` };
    return { ok: true, body };
  } catch (err) {
    return { ok: false, problem: `no agent answers at ${url} (${errorMessage(err)}); is 'pgbidi run' running?` };
  }
}

function isStatusBody(value: unknown): value is StatusBody {
  return typeof value === 'object' && value !== null && 'node' in value && typeof value.node === 'string' && 'links' in value && Array.isArray(value.links);
}
