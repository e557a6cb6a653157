import { parseArgs } from 'node:util';
import { setFlagsFromString } from 'node:v8';
import { agentClient } from './util/agent-client.js';
import { Agent } from './agent.js';
import { ConfigError, loadConfigFile } from './config/load-config.js';
import type { Config } from './config/config-schema.js';
import { redactedMessage } from './config/redact.js';
import { createLogger } from './observability/logger.js';
import { SetupError, setupNode } from './node/setup-node.js';
import { PartError } from './node/part-node.js';
import { formatStatusTable } from './status-format.js';
import { watchStatus } from './status-watch.js';
import { NOT_A_TERMINAL, processTerminal } from './util/terminal-screen.js';
import type { Terminal } from './util/terminal-screen.js';
import type { LinkStatus } from './link/link.js';
import { VERSION } from './version.js';
import { errorMessage } from './util/error-message.js';

const USAGE = `pgbidi ${VERSION}: bidirectional replication for PostgreSQL 15+

Usage:
  pgbidi demo   [--nodes N] [--duration SECONDS] [--write-rate N] [--conflict-rate N] [--prometheus]
  pgbidi setup  --config FILE     prepare this node (idempotent)
  pgbidi run    --config FILE     run the agent for this node until SIGTERM/SIGINT
  pgbidi ddl    --config FILE "STATEMENT"   run a schema change on every node (writes and apply wait meanwhile)
  pgbidi join   --config FILE --from PEER [--parallel N]   fill this new node from PEER while the group takes writes
  pgbidi status --config FILE [--json]   per-link state, LSNs, lag, last error, schema drift; mesh and sequence checks
  pgbidi status --config FILE --watch [--count N]   the same, refreshed every second until Ctrl-C
  pgbidi resolve --config FILE --peer NAME (--retry | --skip)   release a link halted by the error policy
  pgbidi dead-letters --config FILE [--json] [--retry ID|all]    list changes kept aside, or apply them again
  pgbidi part   --config FILE [--node NAME] [--force]   this node leaves the group, or NAME (gone for good) is removed
  pgbidi --help | --version

The config path may also come from PGBIDI_CONFIG. Exit codes: 0 ok, 1 failure, 2 invalid usage or config.`;

export type Io = { out: (s: string) => void; err: (s: string) => void };
const stdio: Io = { out: (s) => process.stdout.write(s), err: (s) => process.stderr.write(s) };

/** `terminal` says how to draw live views; output to anything but the process's stdout is not a terminal. */
export async function main(argv: readonly string[], io: Io = stdio, terminal: Terminal = io === stdio ? processTerminal : NOT_A_TERMINAL): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === '--help' || command === '-h' || command === 'help') {
    io.out(`${USAGE}\n`);
    return command === undefined ? 2 : 0;
  }
  if (command === '--version') {
    io.out(`${VERSION}\n`);
    return 0;
  }
  let args: ReturnType<typeof parse>;
  try {
    args = parse(rest);
    if (args.positionals.length > (command === 'ddl' ? 1 : 0)) throw new Error(`unexpected argument '${args.positionals.at(-1) ?? ''}'`);
  } catch (err) {
    io.err(`pgbidi: ${errorMessage(err)}\n\n${USAGE}\n`);
    return 2;
  }
  try {
    switch (command) {
      case 'setup':
        return await setup(loadConfig(args.values.config), io);
      case 'run':
        return await run(loadConfig(args.values.config));
      case 'ddl': {
        const { ddlCommand } = await import('./node/ddl-command.js');
        return await ddlCommand(loadConfig(args.values.config), { statement: args.positionals[0], lockTimeoutMs: 30_000 }, io);
      }
      case 'join': {
        const { joinCommand } = await import('./node/join-command.js');
        return await joinCommand(loadConfig(args.values.config), args.values, io);
      }
      case 'status':
        return await status(loadConfig(args.values.config), args.values, io, terminal);
      case 'resolve':
        return await resolve(loadConfig(args.values.config), args.values, io);
      case 'dead-letters':
        return await deadLetters(loadConfig(args.values.config), args.values, io);
      case 'part': {
        const { partCommand } = await import('./part-command.js');
        return await partCommand(loadConfig(args.values.config), args.values, io);
      }
      case 'demo': {
        const { runDemo } = await import('./demo/demo.js');
        return await runDemo(args.values, io, terminal);
      }
      default:
        io.err(`pgbidi: unknown command '${command}'\n\n${USAGE}\n`);
        return 2;
    }
  } catch (err) {
    if (err instanceof ConfigError) {
      io.err(`pgbidi: ${err.message}\n`);
      return 2;
    }
    if (err instanceof SetupError || err instanceof PartError) {
      io.err(`pgbidi: ${err.message}\n`);
      return 1;
    }
    io.err(`pgbidi: ${redactedMessage(err)}\n`);
    return 1;
  }
}

function parse(rest: readonly string[]) {
  return parseArgs({
    args: [...rest],
    options: {
      config: { type: 'string', short: 'c' },
      json: { type: 'boolean' },
      watch: { type: 'boolean', short: 'w' },
      count: { type: 'string' },
      nodes: { type: 'string' },
      duration: { type: 'string' },
      'write-rate': { type: 'string' },
      'conflict-rate': { type: 'string' },
      prometheus: { type: 'boolean' },
      'keep-data': { type: 'boolean' },
      peer: { type: 'string' },
      retry: { type: 'string' },
      skip: { type: 'boolean' },
      node: { type: 'string' },
      force: { type: 'boolean' },
      from: { type: 'string' },
      parallel: { type: 'string' },
    },
    // Only ddl takes one (its statement); main refuses them for the other commands.
    allowPositionals: true,
    strict: true,
  });
}

function loadConfig(path: string | undefined): Config {
  const file = path ?? process.env.PGBIDI_CONFIG;
  if (!file) throw new ConfigError('(arguments)', [{ path: '--config', message: 'required (or set PGBIDI_CONFIG)' }]);
  return loadConfigFile(file, process.env);
}

async function setup(config: Config, io: Io): Promise<number> {
  const report = await setupNode(config);
  io.out(`node ${config.node.name} is ready (PostgreSQL ${report.serverVersionNum})\n`);
  io.out(`  published tables: ${report.tables.length ? report.tables.join(', ') : '(none yet)'}\n`);
  io.out(`  replication origins: ${report.origins.join(', ')}\n`);
  for (const s of report.slots) io.out(`  slot ${s.slot} for peer ${s.peer}: ${s.status}\n`);
  for (const s of report.synchronous) {
    if (s.synchronous) io.out(`  synchronous link from ${s.peer}: ${s.status} (commits on ${s.peer} wait for ${s.standby})\n`);
    else if (s.status === 'removed') io.out(`  synchronous link from ${s.peer}: removed (commits on ${s.peer} no longer wait for this node)\n`);
  }
  for (const n of report.notes) io.out(`  note: ${n}\n`);
  const { setupGroup } = await import('./group-checks.js');
  io.out(await setupGroup(config));
  return 0;
}

/**
 * From here on V8 compiles every function with its baseline compiler (Sparkplug) at its first call,
 * instead of interpreting it until its call count earns that. A freshly started agent otherwise runs
 * its hot path (decode, assemble, build statements) interpreted for its first seconds, which is when
 * it catches up a backlog after a restart. Set for `run` only, after the CLI's modules loaded, so
 * that the other commands do not pay for compiling what they run once (`--help` took 0.51-0.65 s
 * with the flag set before loading, 0.43-0.49 s without). Measured: docs/benchmark-history.md.
 */
function compileEagerly(): void {
  setFlagsFromString('--always-sparkplug');
}

/**
 * From here on V8 allocates every object in the young generation, instead of moving the allocation
 * sites whose objects survive young collections to the old one (allocation-site pretenuring). A
 * backlog keeps each transaction queued across a few young collections, which makes V8 pretenure the
 * sites of the decoded messages, tuples and encoded steps; once caught up, the same objects live for
 * milliseconds but were still allocated old, died there until the next full collection, and kept the
 * young objects they pointed to alive through every young collection in between. Measured with
 * `--trace-gc` in W2's live phase on 18 (two runs each): each young collection kept 2.2 MB (of ~12)
 * and took 14-15 ms on average, with a full collection every 4-7 s; without pretenuring, 0.2 MB and
 * 7-8 ms, and no full collection (docs/benchmark-history.md).
 */
function allocateYoung(): void {
  setFlagsFromString('--no-allocation-site-pretenuring');
}

async function run(config: Config): Promise<number> {
  compileEagerly();
  allocateYoung();
  const log = createLogger(config.log.level);
  const agent = await Agent.start({ config, log, tracingEnv: process.env });
  await new Promise<void>((resolve) => {
    const onSignal = (signal: NodeJS.Signals): void => {
      log.info({ component: 'agent', signal }, 'signal received');
      process.off('SIGTERM', onSignal);
      process.off('SIGINT', onSignal);
      resolve();
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
  await agent.stop();
  return 0;
}

async function status(config: Config, values: Values, io: Io, terminal: Terminal): Promise<number> {
  const url = `http://${config.http.listen}/status`;
  if (values.watch || values.count !== undefined) return statusWatch(url, values, io, terminal);
  const json = values.json ?? false;
  let body: { node: string; links: LinkStatus[]; schemaDifferences?: { description: string }[] };
  const { formatGroupChecks, groupChecks } = await import('./group-checks.js');
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(5000) });
    body = (await res.json()) as typeof body;
  } catch (err) {
    io.err(`pgbidi: no agent answers at ${url} (${errorMessage(err)}); is 'pgbidi run' running?\n`);
    if (!json) io.out(formatGroupChecks(await groupChecks(config)));
    return 1;
  }
  const checks = await groupChecks(config);
  io.out(json ? `${JSON.stringify({ ...body, ...checks }, null, 2)}\n` : formatStatusTable(body.node, body.links));
  if (!json) for (const d of body.schemaDifferences ?? []) io.out(`schema: ${d.description}\n`);
  if (!json) io.out(formatGroupChecks(checks));
  return 0;
}

type Values = ReturnType<typeof parse>['values'];

async function statusWatch(url: string, values: Values, io: Io, terminal: Terminal): Promise<number> {
  const count = values.count === undefined ? undefined : Number(values.count);
  const problems = [
    ...(values.watch ? [] : ['--count needs --watch']),
    ...(values.json ? ['--watch prints a table or lines, not JSON: use --json without --watch'] : []),
    ...(count !== undefined && !(Number.isInteger(count) && count >= 1)
      ? [`--count ${JSON.stringify(values.count)}: must be a whole number of refreshes from 1`]
      : []),
  ];
  if (problems.length) {
    io.err(`pgbidi: ${problems.join('; ')}\n`);
    return 2;
  }
  // A signal ends the watch normally: the terminal is restored and the exit code is 0.
  const stop = new AbortController();
  const onSignal = (): void => stop.abort();
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    return await watchStatus({ url, io, terminal, stop: stop.signal, ...(count === undefined ? {} : { count }) });
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

async function agentPost(config: Config, path: string, body: unknown, io: Io): Promise<{ status: number; body: Record<string, unknown> } | null> {
  const url = `http://${config.http.listen}${path}`;
  try {
    const res = await fetch(url, {
      method: 'POST',
      // The same token the agent reads (PGBIDI_ADMIN_TOKEN or http.admin_token_file): http/admin-auth.ts.
      headers: { 'content-type': 'application/json', ...(config.http.admin_token === null ? {} : { authorization: `Bearer ${config.http.admin_token}` }) },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(30_000),
    });
    if (res.status === 401) io.err('pgbidi: the agent requires its admin token: set PGBIDI_ADMIN_TOKEN (or http.admin_token_file) as for the agent\n');
    if (res.status === 403) io.err('pgbidi: the agent listens beyond loopback without an admin token, so its operator endpoints are off\n');
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  } catch (err) {
    io.err(`pgbidi: no agent answers at ${url} (${errorMessage(err)}); is 'pgbidi run' running?\n`);
    return null;
  }
}

async function resolve(config: Config, values: Values, io: Io): Promise<number> {
  const retry = values.retry !== undefined;
  if (!values.peer || retry === (values.skip ?? false)) {
    io.err('pgbidi: resolve needs --peer NAME and exactly one of --retry or --skip\n');
    return 2;
  }
  const r = await agentPost(config, `/links/${encodeURIComponent(values.peer)}/resolve`, { action: retry ? 'retry' : 'skip' }, io);
  if (!r) return 1;
  io.out(`${JSON.stringify(r.body)}\n`);
  return r.status === 200 ? 0 : 1;
}

interface DeadLetterRow {
  readonly id: string;
  readonly logged_at: Date;
  readonly peer: string;
  readonly conflict_type: string;
  readonly table: string;
  readonly op: string;
  readonly constraint_name: string | null;
  readonly column_name: string | null;
  readonly key: Record<string, string | null> | null;
  readonly remote_commit_ts: Date;
  readonly remote_commit_lsn: string;
  readonly attempts: number;
  readonly reason: string;
}

async function pendingDeadLetterIds(config: Config): Promise<string[]> {
  const client = agentClient({ connectionString: config.node.dsn, application_name: 'pgbidi_cli' });
  await client.connect();
  try {
    const r = await client.query<{ id: string }>(`SELECT id::text AS id FROM pgbidi.dead_letters WHERE status = 'pending' ORDER BY id`);
    return r.rows.map((x) => x.id);
  } finally {
    await client.end();
  }
}

async function deadLetters(config: Config, values: Values, io: Io): Promise<number> {
  if (values.retry !== undefined) {
    // `--retry all`: every pending dead letter, oldest first (after a schema fix that accepts them all).
    const ids = values.retry === 'all' ? await pendingDeadLetterIds(config) : [values.retry];
    if (ids.length === 0) io.out('no pending dead letters\n');
    let ok = true;
    for (const id of ids) {
      const r = await agentPost(config, `/dead-letters/${encodeURIComponent(id)}/retry`, {}, io);
      if (!r) return 1;
      io.out(`${JSON.stringify(r.body)}\n`);
      ok &&= r.status === 200 && r.body.outcome === 'applied';
    }
    return ok ? 0 : 1;
  }
  const client = agentClient({ connectionString: config.node.dsn, application_name: 'pgbidi_cli' });
  await client.connect();
  try {
    const r = await client.query<DeadLetterRow>(
      `SELECT id, logged_at, peer, conflict_type, table_schema || '.' || table_name AS "table", op, constraint_name,
              column_name, key, remote_commit_ts, remote_commit_lsn::text, attempts, reason
         FROM pgbidi.dead_letters WHERE status = 'pending' ORDER BY id`,
    );
    if (values.json) io.out(`${JSON.stringify(r.rows, null, 2)}\n`);
    else if (r.rows.length === 0) io.out('no pending dead letters\n');
    else
      for (const d of r.rows)
        io.out(
          `#${d.id}  ${d.peer}  ${d.conflict_type}  ${d.table}${d.column_name ? `.${d.column_name}` : ''}  ${d.op}  ${d.key ? JSON.stringify(d.key) : ''}  ${d.constraint_name ?? ''}  attempts=${d.attempts}  ${d.reason}\n`,
        );
    return 0;
  } finally {
    await client.end();
  }
}
