/**
 * Starts and stops real PostgreSQL servers for tests, the benchmark and the embedded demo.
 *
 *   start() ──initdb (once)──> launch ──ready──> running ──stop()/kill()──> stopped ──destroy()──> gone
 *                                 ^                                            │
 *                                 └──────────────── restart() ─────────────────┘
 *
 * The postmaster is spawned directly (not via pg_ctl) so that we own its pid, in its own process
 * group (`detached`) so that a terminal Ctrl-C reaches the caller first and the caller decides the
 * shutdown order. Backends call setsid() themselves, so a process-group kill would miss them: hard
 * kills target the postmaster and its children found in /proc. Every running server is SIGKILLed
 * synchronously when this process exits.
 *
 * The postmaster's stdout and stderr go to SERVER_LOG in its data dir, as `pg_ctl -l` sends them to a
 * file, unless a caller asked for every line (onLog: the demo shows them). Reading them through a
 * pipe made this process a consumer of the server's log: PostgreSQL 18's apply worker logs every
 * conflict it detects (three lines each), and during a pgbench backlog the benchmark's own process
 * spent 23-41 % of a core splitting them into lines, on the same two cores as the apply worker it was
 * timing.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, fstatSync, openSync, readFileSync, readSync, readdirSync, realpathSync } from 'node:fs';
import { chown, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import type { QueryResultRow } from 'pg';
import { freePort, isPortFree } from './free-port.js';
import { ensureServerUser, type ServerUser } from './os-user.js';

export type SettingValue = string | number | boolean;

export interface PostgresServerOptions {
  /** Directory holding `initdb` and `postgres`. */
  binDir: string;
  /** Default: a fresh temp dir (`pgbidi-pg-*`), removed by destroy(). A given dir is never removed. */
  dataDir?: string;
  /** Default: a free port, picking another one if it is taken before the server binds it. */
  port?: number;
  /** Extra `-c name=value` settings; they override DEFAULT_SETTINGS. */
  settings?: Record<string, SettingValue>;
  /** Used in error messages. */
  name?: string;
  /** Receives every stdout/stderr line of initdb and postgres; without it postgres writes to SERVER_LOG. */
  onLog?: (line: string) => void;
}

export type PostgresServerErrorCode = 'PG_INITDB_FAILED' | 'PG_START_FAILED' | 'PG_START_TIMEOUT';

export class PostgresServerError extends Error {
  override readonly name = 'PostgresServerError';
  constructor(
    readonly code: PostgresServerErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** What pgbidi needs from every server: logical decoding, origins' commit timestamps, room for links. */
export const DEFAULT_SETTINGS: Readonly<Record<string, SettingValue>> = Object.freeze({
  wal_level: 'logical',
  track_commit_timestamp: true,
  max_replication_slots: 20,
  max_wal_senders: 20,
  max_worker_processes: 16,
  max_logical_replication_workers: 8,
  shared_buffers: '64MB',
  log_min_messages: 'warning',
  logical_decoding_work_mem: '64MB',
});

const HOST = '127.0.0.1';
const START_TIMEOUT_MS = 60_000;
const STOP_GRACE_MS = 15_000;
const CONNECT_TIMEOUT_MS = 10_000;
const LOG_TAIL_LINES = 200;
/** The postmaster's output file in its data dir when no onLog listener reads it line by line. */
export const SERVER_LOG = 'server.log';
/** Enough of SERVER_LOG's end for LOG_TAIL_LINES lines of ordinary length. */
const LOG_TAIL_BYTES = 64 * 1024;
const PORT_ATTEMPTS = 5;
// sockaddr_un.sun_path is 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH_BYTES = 107;

interface Launch {
  child: ChildProcess;
  exited: Promise<void>;
  done: boolean;
}

const runningServers = new Set<PostgresServer>();
let exitHookInstalled = false;

/** Stops (fast shutdown) every server this process started and has not stopped yet. */
export async function stopAllServers(): Promise<void> {
  await Promise.all([...runningServers].map((server) => server.stop()));
}

export class PostgresServer {
  readonly host = HOST;
  private launch: Launch | undefined;
  private readonly logTail: string[] = [];
  private currentPort: number;
  private lastPid = 0;
  private lastVersionNum = 0;

  private constructor(
    readonly binDir: string,
    readonly dataDir: string,
    private readonly ownsDataDir: boolean,
    port: number,
    private readonly settings: Readonly<Record<string, SettingValue>>,
    readonly name: string,
    private readonly onLog: ((line: string) => void) | undefined,
    private readonly user: ServerUser | undefined,
  ) {
    this.currentPort = port;
  }

  static async start(opts: PostgresServerOptions): Promise<PostgresServer> {
    const user = await ensureServerUser();
    const ownsDataDir = opts.dataDir === undefined;
    const dataDir = path.resolve(opts.dataDir ?? (await mkdtemp(path.join(tmpdir(), 'pgbidi-pg-'))));
    const server = new PostgresServer(
      opts.binDir,
      dataDir,
      ownsDataDir,
      opts.port ?? 0,
      { ...DEFAULT_SETTINGS, ...opts.settings },
      opts.name ?? path.basename(dataDir),
      opts.onLog,
      user,
    );
    try {
      await server.initDataDir();
      await server.launchOnFreePort(opts.port);
    } catch (error) {
      if (ownsDataDir) await rm(dataDir, { recursive: true, force: true });
      throw error;
    }
    return server;
  }

  get port(): number {
    return this.currentPort;
  }
  /** pid of the current (or last) postmaster; also its process group id. */
  get pid(): number {
    return this.lastPid;
  }
  /** server_version_num, e.g. 180004. */
  get versionNum(): number {
    return this.lastVersionNum;
  }
  get running(): boolean {
    return this.launch !== undefined && !this.launch.done;
  }
  /** Last lines of server output (initdb's, then the postmaster's), for error messages. */
  get recentLog(): readonly string[] {
    if (this.onLog) return this.logTail;
    return [...this.logTail, ...readLogTail(path.join(this.dataDir, SERVER_LOG))].slice(-LOG_TAIL_LINES);
  }

  connectionString(database = 'postgres', user = 'postgres'): string {
    return `postgresql://${encodeURIComponent(user)}@${HOST}:${this.port}/${encodeURIComponent(database)}`;
  }

  /** Runs one statement on a short-lived connection and returns its rows. */
  async query<R extends QueryResultRow = QueryResultRow>(sql: string, params: unknown[] = [], database = 'postgres'): Promise<R[]> {
    const client = new pg.Client({
      connectionString: this.connectionString(database),
      connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
    });
    // A server that dies mid-query must reject this call, not crash the process with 'error'.
    client.on('error', () => undefined);
    await client.connect();
    try {
      return (await client.query<R>(sql, params)).rows;
    } finally {
      await client.end().catch(() => undefined);
    }
  }

  /**
   * Writes a file into the data directory, owned by the server's OS user (a TLS key must be, and
   * readable by it alone: be-secure-openssl.c refuses a key with group or world access).
   */
  async writeDataFile(name: string, contents: string, mode = 0o600): Promise<string> {
    const file = path.join(this.dataDir, name);
    await writeFile(file, contents, { mode });
    if (this.user) await chown(file, this.user.uid, this.user.gid);
    return file;
  }

  async createDatabase(name: string): Promise<void> {
    await this.query(`create database ${pg.escapeIdentifier(name)}`);
  }

  /** Fast shutdown (SIGINT); SIGKILL to the whole process group if it takes over 15 s. */
  async stop(): Promise<void> {
    const launch = this.launch;
    if (!launch || launch.done) return;
    signalProcess(this.lastPid, 'SIGINT');
    if (!(await settlesWithin(launch.exited, STOP_GRACE_MS))) await this.kill();
    await launch.exited;
  }

  /**
   * Immediate shutdown (SIGQUIT, what `pg_ctl stop -m immediate` sends): backends quit at once, no
   * checkpoint, crash recovery at the next start. SIGKILL if the server is still there after 15 s.
   */
  async stopImmediate(): Promise<void> {
    const launch = this.launch;
    if (!launch || launch.done) return;
    signalProcess(this.lastPid, 'SIGQUIT');
    if (!(await settlesWithin(launch.exited, STOP_GRACE_MS))) await this.kill();
    await launch.exited;
  }

  /** Starts again after stop(), stopImmediate() or kill(), on the same port and data directory. */
  async startAgain(): Promise<void> {
    if (this.running) return;
    await this.launchAndWait(this.currentPort);
  }

  /** SIGKILL to the postmaster and all its children at once: a crash, for recovery tests. */
  async kill(): Promise<void> {
    const launch = this.launch;
    if (!launch || launch.done) return;
    const family = this.killNow();
    await launch.exited;
    // A new postmaster refuses to start while old backends still hold the shared memory.
    for (let i = 0; i < 100 && family.some(isAlive); i += 1) await sleep(20);
  }

  /** Stops if running, then starts again on the same port and data directory. */
  async restart(): Promise<void> {
    await this.stop();
    await this.launchAndWait(this.currentPort);
  }

  /** Stops if running, then removes the data directory if start() created it. */
  async destroy(): Promise<void> {
    await this.stop();
    if (this.ownsDataDir) await rm(this.dataDir, { recursive: true, force: true });
  }

  private async initDataDir(): Promise<void> {
    await mkdir(this.dataDir, { recursive: true, mode: 0o700 });
    if (this.user) await chown(this.dataDir, this.user.uid, this.user.gid);
    if (existsSync(path.join(this.dataDir, 'PG_VERSION'))) return;
    const args = ['-D', this.dataDir, '-U', 'postgres', '--auth=trust', '--encoding=UTF8', '--locale=C'];
    const child = this.spawnPg('initdb', args);
    const status = await new Promise<number | string>((resolve) => {
      child.once('error', (error) => resolve(error.message));
      child.once('close', (code, signal) => resolve(code ?? signal ?? 'unknown'));
    });
    if (status !== 0) {
      throw new PostgresServerError('PG_INITDB_FAILED', this.describe(`initdb failed (${status})`));
    }
  }

  private async launchOnFreePort(fixedPort: number | undefined): Promise<void> {
    if (fixedPort !== undefined) return this.launchAndWait(fixedPort);
    for (let attempt = 1; ; attempt += 1) {
      const port = await freePort();
      try {
        return await this.launchAndWait(port);
      } catch (error) {
        // Another process may bind the port between freePort() and postgres; probing the port
        // tells that case apart without parsing (possibly localized) server messages.
        const lostRace = error instanceof PostgresServerError && error.code === 'PG_START_FAILED' && !(await isPortFree(port));
        if (!lostRace || attempt >= PORT_ATTEMPTS) throw error;
      }
    }
  }

  private async launchAndWait(port: number): Promise<void> {
    this.currentPort = port;
    const socketDir = Buffer.byteLength(path.join(this.dataDir, `.s.PGSQL.${port}`)) <= MAX_SOCKET_PATH_BYTES ? this.dataDir : '';
    const args = ['-D', this.dataDir, '-p', String(port), '-c', `listen_addresses=${HOST}`];
    args.push('-c', `unix_socket_directories=${socketDir}`);
    for (const [key, value] of Object.entries(this.settings)) args.push('-c', `${key}=${formatSetting(value)}`);

    const child = this.spawnPg('postgres', args);
    const launch: Launch = { child, done: false, exited: Promise.resolve() };
    launch.exited = new Promise<void>((resolve) => {
      const finish = (): void => {
        launch.done = true;
        runningServers.delete(this);
        resolve();
      };
      child.once('exit', finish);
      child.once('error', finish); // spawn failure: 'exit' may never come
    });
    this.launch = launch;
    this.lastPid = child.pid ?? 0;
    if (child.pid !== undefined) {
      runningServers.add(this);
      installExitHook();
    }

    const deadline = Date.now() + START_TIMEOUT_MS;
    for (;;) {
      if (launch.done) {
        throw new PostgresServerError('PG_START_FAILED', this.describe(`postgres exited during startup`));
      }
      const versionNum = await this.probe();
      if (versionNum !== undefined) {
        this.lastVersionNum = versionNum;
        return;
      }
      if (Date.now() > deadline) {
        await this.kill();
        throw new PostgresServerError('PG_START_TIMEOUT', this.describe(`not ready after ${START_TIMEOUT_MS} ms`));
      }
      await Promise.race([sleep(100), launch.exited]);
    }
  }

  /**
   * server_version_num once the server answers, else undefined. Checks data_directory, because
   * after losing a port race the server answering on that port belongs to someone else.
   */
  private async probe(): Promise<number | undefined> {
    try {
      const rows = await this.query<{ dir: string; num: number }>(
        "select current_setting('data_directory') as dir, current_setting('server_version_num')::int as num",
      );
      const row = rows[0];
      return row && realpathSync(row.dir) === realpathSync(this.dataDir) ? row.num : undefined;
    } catch {
      return undefined;
    }
  }

  private spawnPg(program: 'initdb' | 'postgres', args: string[]): ChildProcess {
    // initdb needs an empty data dir and says little: its lines are read here.
    const logFd = program === 'postgres' && !this.onLog ? openSync(path.join(this.dataDir, SERVER_LOG), 'a', 0o600) : null;
    let child: ChildProcess;
    try {
      child = spawn(path.join(this.binDir, program), args, {
        cwd: this.dataDir,
        detached: true,
        stdio: logFd === null ? ['ignore', 'pipe', 'pipe'] : ['ignore', logFd, logFd],
        ...(this.user ? { uid: this.user.uid, gid: this.user.gid } : {}),
      });
    } finally {
      if (logFd !== null) closeSync(logFd);
    }
    for (const stream of [child.stdout, child.stderr]) {
      if (stream) createInterface({ input: stream, crlfDelay: Infinity }).on('line', (line) => this.log(line));
    }
    return child;
  }

  private log(line: string): void {
    this.logTail.push(line);
    if (this.logTail.length > LOG_TAIL_LINES) this.logTail.shift();
    this.onLog?.(line);
  }

  private describe(what: string): string {
    const tail = this.recentLog.slice(-30).join('\n');
    return `${this.name} (${this.binDir}, port ${this.currentPort}): ${what}${tail ? `\n${tail}` : ''}`;
  }

  /** SIGKILLs the postmaster and its children synchronously (also used on process exit). */
  killNow(): number[] {
    if (!this.running) return [];
    const family = [this.lastPid, ...childPids(this.lastPid)];
    for (const pid of family) signalProcess(pid, 'SIGKILL');
    return family;
  }
}

function formatSetting(value: SettingValue): string {
  if (typeof value === 'boolean') return value ? 'on' : 'off';
  return String(value);
}

/** process.kill that ignores ESRCH; pid 0 would signal our own process group, so it is skipped. */
function signalProcess(pid: number, signal: NodeJS.Signals): void {
  if (pid <= 0) return;
  try {
    process.kill(pid, signal);
  } catch {
    // already gone
  }
}

/** `[state, ppid]` from /proc/<pid>/stat; undefined when gone or not on Linux. */
function procStat(pid: number | string): [string, number] | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name in parentheses may contain spaces; fields after it are fixed.
    const [state = '', ppid] = text.slice(text.lastIndexOf(')') + 2).split(' ');
    return [state, Number(ppid)];
  } catch {
    return undefined;
  }
}

function childPids(parent: number): number[] {
  let entries: string[];
  try {
    entries = readdirSync('/proc');
  } catch {
    return []; // no procfs: the children still exit on their own once they notice the postmaster died
  }
  return entries.filter((e) => /^\d+$/.test(e) && procStat(e)?.[1] === parent).map(Number);
}

// A zombie has exited (only its parent has not reaped it yet); it holds no shared memory.
function isAlive(pid: number): boolean {
  const stat = procStat(pid);
  return stat !== undefined && stat[0] !== 'Z';
}

async function settlesWithin(promise: Promise<void>, ms: number): Promise<boolean> {
  const timeout = new AbortController();
  try {
    return await Promise.race([promise.then(() => true), sleep(ms, false, { signal: timeout.signal })]);
  } finally {
    timeout.abort();
  }
}

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // 'exit' listeners must be synchronous; SIGKILL to each process group takes the backends too.
  process.on('exit', () => {
    for (const server of runningServers) server.killNow();
  });
}

/** The last lines of a log file, or none if it does not exist yet. */
function readLogTail(file: string): string[] {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch {
    // Missing (no launch yet) or unreadable: the tail serves error messages, and must not replace them.
    return [];
  }
  try {
    const size = fstatSync(fd).size;
    const start = Math.max(0, size - LOG_TAIL_BYTES);
    const buf = Buffer.alloc(size - start);
    const n = readSync(fd, buf, 0, buf.length, start);
    const lines = buf.toString('utf8', 0, n).split('\n');
    // A partial first line (the read started inside it) and the empty string after the last newline.
    if (start > 0) lines.shift();
    if (lines.at(-1) === '') lines.pop();
    return lines.slice(-LOG_TAIL_LINES);
  } finally {
    closeSync(fd);
  }
}
