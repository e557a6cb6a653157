import { z } from 'zod';
import { POLICIES, REJECTED_ROW_POLICIES, UNIQUE_POLICIES } from '../conflict/policy.js';

/**
 * The agent's configuration. Key names are part of the operator interface: keep them stable.
 * Durations are in milliseconds and named so.
 */

const NODE_NAME = /^[a-z][a-z0-9_]{0,19}$/;

const nodeName = z.string().regex(NODE_NAME, 'must be 1-20 characters of a-z, 0-9 and _, starting with a letter (it names slots and origins)');

const dsn = z
  .string()
  .min(1)
  .refine((v) => /^postgres(ql)?:\/\//.test(v), 'must be a postgres:// or postgresql:// URL')
  .refine((v) => {
    try {
      new URL(v);
      return true;
    } catch {
      return false;
    }
  }, 'is not a valid URL');

/**
 * Names as the catalog holds them, unquoted (pg_namespace.nspname and pg_class.relname: any
 * character, case kept), matched against `schema.table`: `Sales Dept.Orders` or `public.café`.
 */
const tablePattern = z.string().regex(/^[^.]+\.[^.]+$/, 'must be schema.table, as the catalog spells them (unquoted); * and ? are wildcards');

const listen = z
  .string()
  .regex(/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, 'must be host:port, e.g. 127.0.0.1:9464')
  .refine((v) => Number(v.slice(v.lastIndexOf(':') + 1)) <= 65535, 'the port must be at most 65535 (0 picks a free one)');

/** host:port/database of a DSN, to tell two DSNs that name the same database. */
function databaseOf(dsn: string): string | null {
  try {
    const u = new URL(dsn);
    const host = (u.searchParams.get('host') ?? u.hostname).toLowerCase().replace(/^localhost$/, '127.0.0.1');
    return `${host}:${u.searchParams.get('port') ?? (u.port || '5432')}/${decodeURIComponent(u.pathname.slice(1)) || decodeURIComponent(u.username)}`;
  } catch {
    return null;
  }
}

const positiveMs = z.number().int().positive();

export const configSchema = z
  .object({
    node: z.object({ name: nodeName, dsn }).strict(),
    peers: z
      .array(
        z
          .object({
            name: nodeName,
            dsn,
            // Commits on that peer wait until this node has applied and flushed them (setup lists
            // this node's agent in the peer's synchronous_standby_names).
            synchronous: z.boolean().default(false),
          })
          .strict(),
      )
      .min(1, 'needs at least one peer'),
    replication: z
      .object({
        publication: z
          .string()
          .regex(/^[a-z_][a-z0-9_]{0,62}$/)
          .default('pgbidi'),
        tables: z.array(tablePattern).min(1).default(['public.*']),
        exclude_tables: z.array(tablePattern).default([]),
        apply_batch_size: z.number().int().min(1).max(100_000).default(1000),
        apply_procedure_max_changes: z.number().int().min(0).max(1000).default(100),
        apply_streamed: z.enum(['while_streaming', 'at_commit']).default('while_streaming'),
        max_queued_changes: z.number().int().min(100).default(2_000),
        feedback_interval_ms: positiveMs.default(1000),
        heartbeat_interval_ms: positiveMs.default(1000),
        statement_timeout_ms: positiveMs.default(60_000),
        // How long a stopping link may take to finish the transaction it is applying (link.ts stop).
        drain_timeout_ms: positiveMs.default(5_000),
        max_clock_skew_ms: positiveMs.default(5_000),
        tombstone_retention_margin_ms: positiveMs.default(60_000),
        reconnect: z
          .object({ initial_delay_ms: positiveMs.default(500), max_delay_ms: positiveMs.default(30_000) })
          .strict()
          .default({ initial_delay_ms: 500, max_delay_ms: 30_000 }),
      })
      .strict()
      .default({
        publication: 'pgbidi',
        tables: ['public.*'],
        exclude_tables: [],
        apply_batch_size: 1000,
        apply_procedure_max_changes: 100,
        apply_streamed: 'while_streaming',
        max_queued_changes: 2_000,
        feedback_interval_ms: 1000,
        heartbeat_interval_ms: 1000,
        statement_timeout_ms: 60_000,
        drain_timeout_ms: 5_000,
        max_clock_skew_ms: 5_000,
        tombstone_retention_margin_ms: 60_000,
        reconnect: { initial_delay_ms: 500, max_delay_ms: 30_000 },
      }),
    conflicts: z
      .object({
        default_policy: z.enum(POLICIES).default('last_update_wins'),
        unique_violation: z.enum(UNIQUE_POLICIES).default('dead_letter'),
        rejected_row: z.enum(REJECTED_ROW_POLICIES).default('dead_letter'),
        tables: z
          .array(
            z
              .object({
                match: z.array(tablePattern).min(1),
                policy: z.enum(POLICIES),
                delta_columns: z.array(z.string().min(1)).default([]),
              })
              .strict(),
          )
          .default([]),
        log_retention_days: z.number().int().positive().default(7),
      })
      .strict()
      .default({ default_policy: 'last_update_wins', unique_violation: 'dead_letter', rejected_row: 'dead_letter', tables: [], log_retention_days: 7 }),
    http: z
      .object({
        listen: listen.default('127.0.0.1:9464'),
        // The bearer token of the operator endpoints, read from this file (or PGBIDI_ADMIN_TOKEN);
        // never inline, so that the config file can be shared (a ConfigMap) without the secret.
        admin_token_file: z.string().min(1).optional(),
      })
      .strict()
      .default({ listen: '127.0.0.1:9464' }),
    log: z
      .object({ level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info') })
      .strict()
      .default({ level: 'info' }),
    readiness: z
      .object({ max_lag_ms: positiveMs.default(30_000) })
      .strict()
      .default({ max_lag_ms: 30_000 }),
    // node-offset: `setup` makes the serial and identity sequences of replicated tables hand out
    // values ≡ offset (mod group_size), so that no two nodes generate the same key (node/sequences.ts).
    sequences: z
      .object({
        mode: z.enum(['none', 'node-offset']).default('none'),
        group_size: z.number().int().min(2).max(1000).optional(),
        offset: z.number().int().min(0).optional(),
      })
      .strict()
      .default({ mode: 'none' }),
  })
  .strict()
  .superRefine((c, ctx) => {
    const seen = new Map<string, string>([[c.node.name, 'node.name']]);
    c.peers.forEach((p, i) => {
      const first = seen.get(p.name);
      if (first !== undefined) {
        ctx.addIssue({ code: 'custom', path: ['peers', i, 'name'], message: `duplicates ${first} (${p.name})` });
      } else {
        seen.set(p.name, `peers.${i}.name`);
      }
    });
    // Two entries that name one database: a node replicating into itself, or one peer twice.
    const databases = new Map<string, string>();
    [{ path: ['node', 'dsn'], dsn: c.node.dsn }, ...c.peers.map((p, i) => ({ path: ['peers', i, 'dsn'], dsn: p.dsn }))].forEach(({ path, dsn }) => {
      const db = databaseOf(dsn);
      if (db === null) return;
      const first = databases.get(db);
      if (first !== undefined) {
        ctx.addIssue({ code: 'custom', path, message: `names the same database (${db}) as ${first}: every node needs its own database` });
      } else {
        databases.set(db, path.join('.'));
      }
    });
    c.conflicts.tables.forEach((t, i) => {
      if (t.policy === 'delta' && t.delta_columns.length === 0) {
        ctx.addIssue({ code: 'custom', path: ['conflicts', 'tables', i, 'delta_columns'], message: 'the delta policy needs the counter columns it merges' });
      }
      if (t.policy !== 'delta' && t.delta_columns.length > 0) {
        ctx.addIssue({ code: 'custom', path: ['conflicts', 'tables', i, 'delta_columns'], message: 'only used with policy: delta' });
      }
    });
    const seq = c.sequences;
    if (seq.mode === 'node-offset') {
      const nodes = c.peers.length + 1;
      if (seq.group_size === undefined) {
        ctx.addIssue({
          code: 'custom',
          path: ['sequences', 'group_size'],
          message: `required with mode node-offset (at least ${nodes}, the number of nodes; leave room to grow)`,
        });
      } else if (seq.group_size < nodes) {
        ctx.addIssue({ code: 'custom', path: ['sequences', 'group_size'], message: `must be at least the number of nodes (${nodes})` });
      } else if (seq.offset !== undefined && seq.offset >= seq.group_size) {
        ctx.addIssue({ code: 'custom', path: ['sequences', 'offset'], message: `must be below group_size (${seq.group_size})` });
      }
    } else if (seq.group_size !== undefined || seq.offset !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['sequences', 'mode'], message: 'group_size and offset are only used with mode: node-offset' });
    }
    if (c.replication.reconnect.max_delay_ms < c.replication.reconnect.initial_delay_ms) {
      ctx.addIssue({
        code: 'custom',
        path: ['replication', 'reconnect', 'max_delay_ms'],
        message: 'must not be smaller than initial_delay_ms',
      });
    }
  });

export type RawConfig = z.input<typeof configSchema>;
type ParsedConfig = z.output<typeof configSchema>;
/** The frozen config; `http.admin_token` is resolved from PGBIDI_ADMIN_TOKEN or `http.admin_token_file`. */
export type Config = Omit<ParsedConfig, 'http'> & { readonly http: ParsedConfig['http'] & { readonly admin_token: string | null } };
export type PeerConfig = Config['peers'][number];
