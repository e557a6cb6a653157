import { CONFLICT_TYPES, RESOLUTIONS } from '../conflict/conflict-types.js';
import type { ConflictType, Resolution } from '../conflict/conflict-types.js';
import type { OverwriteRule } from '../conflict/policy.js';
import { METADATA_SCHEMA, storedKeyOf, TOMBSTONE_WRITE_LOCK, TOMBSTONE_WRITES_SEQUENCE } from '../node/names.js';
import { assertNever } from '../util/assert-never.js';
import { qualifiedName, quoteIdent, quoteLiteral } from '../util/sql.js';
import type { ApplyRules } from './statements.js';
import { keyCopied } from './statements.js';
import type { MappedColumn, TableMapping } from './table-mapping.js';

/**
 * The apply procedure: PL/pgSQL that applies many small peer transactions in one CALL and commits
 * each of them on its own, with pg_replication_origin_xact_setup(end LSN, commit time) right before
 * its COMMIT, so that every remote transaction keeps its own local commit, its exact commit
 * timestamp and its origin progress (technical research §7.4). Statements inside a procedure run
 * with cached plans and need no round trip, which is what makes small transactions cheap.
 *
 * It is created per apply session in pg_temp (no privilege beyond TEMP, nothing left behind), and
 * generated from the step shapes the session has seen: one static block per shape, so every
 * statement is planned once. It decides row by row with the same rules as the multi-row statements
 * of statements.ts (the conflict tests run both), in READ COMMITTED, where each statement takes a
 * fresh snapshot: a decision that a concurrent local transaction invalidates is simply taken again
 * (the `xmin = r.x` guard on every write). What it does not handle it leaves to the caller: it stops
 * at that step, rolls back that transaction and returns how far it got (stop_step).
 *
 * Parameters: the origin progress expected at the start (a CALL sent behind one that stopped early
 * must not apply anything: it raises PB003); the peer's name; per transaction its end LSN, commit LSN, commit time and
 * number of steps; per step its shape (0 = advisory key lock); and every step's values, flat, as
 * text, cast to the local column types. Returns: transactions committed, one event per conflict
 * (step * 64 + type * 8 + resolution, see decodeEvent), each commit's server time (epoch ms) and the
 * step it stopped at (0 = none).
 */

export const PROCEDURE_NAME = 'pgbidi_apply';

/** SQLSTATE of a CALL whose predecessor did not commit everything it was given (the order guard). */
export const OUT_OF_ORDER = 'PB003';

/** Attempts at one step whose row changed under it before the procedure hands the step back. */
const MAX_ATTEMPTS = 8;

export type StepKind = 'insert' | 'update' | 'delete';

/** One kind of step the procedure knows: a table, an operation, and the values each step carries. */
export interface StepShape {
  /** ≥ 1; 0 is the advisory key lock. */
  readonly id: number;
  readonly kind: StepKind;
  readonly mapping: TableMapping;
  /** schema.table of the local table. */
  readonly table: string;
  /** The values each step carries, in this order. */
  readonly carried: readonly MappedColumn[];
  /** update: columns whose value was sent (not unchanged TOAST): the conflict log's remote row. */
  readonly sent: readonly MappedColumn[];
  /** update: every column is carried, so a missing row can be re-created. */
  readonly complete: boolean;
  readonly rules: ApplyRules;
  /** What a change that does not win is recorded as under the table's policy (keep_local or skip). */
  readonly losing: Resolution;
}

export interface DecodedEvent {
  /** 1-based index of the step in the CALL. */
  readonly step: number;
  readonly type: ConflictType;
  readonly resolution: Resolution;
}

export function decodeEvent(code: number): DecodedEvent {
  const step = Math.floor(code / 64);
  const type = CONFLICT_TYPES[Math.floor(code / 8) % 8];
  const resolution = RESOLUTIONS[code % 8];
  if (type === undefined || resolution === undefined) throw new RangeError(`not an apply event code: ${code}`);
  return { step, type, resolution };
}

function eventCode(type: ConflictType, resolution: Resolution): number {
  return CONFLICT_TYPES.indexOf(type) * 8 + RESOLUTIONS.indexOf(resolution);
}

// Every variable is qualified by its block label, and parameters by the procedure name, so that no
// column name of a user table can capture them (#variable_conflict use_column).
const V = 'pgbidi_v';
const P = PROCEDURE_NAME;
const S = METADATA_SCHEMA;
const OWN_XID = 'pg_catalog.pg_current_xact_id()::xid';
// The peer's origin id on this node and the group's start here: constants of the session, written
// into the procedure (applyProcedureSql replaces these markers) instead of read at every CALL.
const PEER_RO = '<<peer_ro>>';
const EPOCH = '<<epoch>>';

function value(pos: number): string {
  return `${P}.vals[${V}.p + ${pos}]`;
}

/** PL/pgSQL as data: lines, groups of lines at the same depth, and indented bodies. */
interface Body {
  readonly body: Code;
}
type Code = string | Body | readonly Code[];

function body(...code: Code[]): Body {
  return { body: code };
}

function render(code: Code, depth = 0): string {
  if (typeof code === 'string')
    return code
      .split('\n')
      .map((l) => `${'  '.repeat(depth)}${l}`)
      .join('\n');
  if (Array.isArray(code))
    return (code as readonly Code[])
      .map((c) => render(c, depth))
      .filter((l) => l !== '')
      .join('\n');
  return render((code as Body).body, depth + 1);
}

const CTS = (xmin: string): string => `pg_catalog.pg_xact_commit_timestamp(${xmin})`;
const ROIDENT = (xmin: string): string => `(pg_catalog.pg_xact_commit_timestamp_origin(${xmin})).roident`;
const OWN_IF_ASSIGNED = 'pg_catalog.pg_current_xact_id_if_assigned()::xid';
/** A remembered insert step is step * STEP_SHIFT + value position (both int, so both fit). */
const STEP_SHIFT = '4294967296';

/** Builds the SQL of one shape's block; values are addressed by their position among the carried columns. */
class ShapeSql {
  readonly table: string;
  readonly tableText: string;
  private readonly positions = new Map<MappedColumn, number>();

  constructor(readonly shape: StepShape) {
    const m = shape.mapping;
    this.table = qualifiedName(m.local.schema, m.local.name);
    this.tableText = quoteLiteral(`${m.local.schema}.${m.local.name}`);
    shape.carried.forEach((c, i) => this.positions.set(c, i + 1));
  }

  pos(c: MappedColumn): number {
    const p = this.positions.get(c);
    if (p === undefined) throw new Error(`column ${c.name} is not carried by shape ${this.shape.id}`);
    return p;
  }

  typed(c: MappedColumn): string {
    return `${value(this.pos(c))}::${c.type}`;
  }

  keyMatch(alias: string): string {
    return this.shape.mapping.key.map((c) => `${alias}.${quoteIdent(c.name)} = ${this.typed(c)}`).join(' AND ');
  }

  /** The key as pgbidi.tombstones stores it: a jsonb array of the typed values (storedKey). */
  tombstoneKey(): string {
    return storedKeyOf(this.shape.mapping.key.map((c) => this.typed(c)));
  }

  /** The key as pgbidi.conflicts stores it: a jsonb array of the text values. */
  logKey(): string {
    return `jsonb_build_array(${this.shape.mapping.key.map((c) => value(this.pos(c))).join(', ')})`;
  }

  /** column → text value; jsonb_build_object takes at most 50 pairs (FUNC_MAX_ARGS). */
  remoteRow(columns: readonly MappedColumn[]): string {
    if (columns.length === 0) return `'{}'::jsonb`;
    const parts: string[] = [];
    for (let i = 0; i < columns.length; i += 50) {
      const pairs = columns.slice(i, i + 50).map((c) => `${quoteLiteral(c.name)}, ${value(this.pos(c))}`);
      parts.push(`jsonb_build_object(${pairs.join(', ')})`);
    }
    return parts.join(' || ');
  }

  /**
   * The local row, its version and, when its origin is not the peer's, the row itself for the log.
   * Rows are named `t.*`, never `t`: a bare name is a column first, and the table may have one named t.
   */
  selectRow(): string {
    return (
      `SELECT t.ctid AS tid, t.xmin AS x, c.timestamp AS cts, c.roident AS ro, ` +
      `CASE WHEN c.roident IS DISTINCT FROM ${PEER_RO} THEN to_jsonb(t.*) END AS loc INTO ${V}.r ` +
      `FROM ${this.table} AS t LEFT JOIN LATERAL pg_catalog.pg_xact_commit_timestamp_origin(t.xmin) AS c ON true ` +
      `WHERE ${this.keyMatch('t')};`
    );
  }

  /** A newer tombstone for the key: deleted later on some node. */
  newerTombstone(): string {
    return (
      `EXISTS (SELECT 1 FROM ${S}.tombstones AS tb WHERE tb.table_name = ${this.tableText} AND tb.key = ${this.tombstoneKey()} ` +
      `AND NOT (tb.xmin = ${OWN_XID} OR ${S}.remote_wins(tb.xmin, ${V}.ts, ${P}.peer)))`
    );
  }

  /** One conflict: a row in pgbidi.conflicts (same transaction) and an event for the agent. */
  conflict(type: ConflictType, resolution: Resolution, local: string, remote: string): Code {
    const m = this.shape.mapping;
    return [
      `INSERT INTO ${S}.conflicts (peer, conflict_type, resolution, table_schema, table_name, key, remote_commit_ts, remote_commit_lsn, remote_node, local_tuple, remote_tuple) ` +
        `VALUES (${P}.peer, ${quoteLiteral(type)}, ${quoteLiteral(resolution)}, ${quoteLiteral(m.local.schema)}, ${quoteLiteral(m.local.name)}, ` +
        `${this.logKey()}, ${V}.ts, ${P}.clsns[i], ${P}.peer, ${local}, ${remote});`,
      `${P}.events := array_append(${P}.events, ${V}.k * 64 + ${eventCode(type, resolution)});`,
    ];
  }

  /**
   * The local row for the log when the remote change lost: fetched here when selectRow left it out
   * (the row's origin is the peer's own, which is rare for a losing change).
   */
  localForLog(): string {
    return `coalesce(${V}.r.loc, (SELECT to_jsonb(t.*) FROM ${this.table} AS t WHERE t.ctid = ${V}.r.tid))`;
  }

  /** PostgreSQL 18's *_origin_differs for a remote change that won over the selected row. */
  originDiffers(type: ConflictType, remote: string): Code {
    return [
      `IF ${V}.r.cts >= ${EPOCH} AND ${V}.r.ro IS DISTINCT FROM ${PEER_RO} AND ${V}.r.x IS DISTINCT FROM ${OWN_IF_ASSIGNED} THEN`,
      body(this.conflict(type, 'apply_remote', `${V}.r.loc`, remote)),
      'END IF;',
    ];
  }

  /** The same, for a row version that RETURNING old.* gave (PostgreSQL 18). */
  oldOriginDiffers(): string {
    return `(${CTS('old.xmin')} >= ${EPOCH} AND ${ROIDENT('old.xmin')} IS DISTINCT FROM ${PEER_RO} AND old.xmin IS DISTINCT FROM ${OWN_IF_ASSIGNED})`;
  }

  /**
   * Undoes the row this step just inserted when a newer delete committed meanwhile: a local DELETE
   * that held the key while the insert waited commits its tombstone after the insert's snapshot
   * (statements.ts undoDeletedLater). The first check (any tombstone of the table) keeps tables
   * without tombstones cheap.
   */
  undoDeletedLater(): Code {
    return [`IF ${anyTombstone(`x.table_name = ${this.tableText}`)} THEN`, body(this.undoInsert()), 'END IF;'];
  }

  /** The undo itself: the row this transaction inserted, where a newer tombstone says it is gone. */
  undoInsert(): Code {
    return [
      `DELETE FROM ${this.table} AS t WHERE ${this.keyMatch('t')} AND t.xmin = ${OWN_XID} AND ${this.newerTombstone()};`,
      'IF FOUND THEN',
      body(this.conflict('update_deleted', 'skip', 'NULL', 'NULL')),
      'END IF;',
    ];
  }

  /**
   * undoDeletedLater for the insert fast path, without a statement of its own in the usual case. A
   * table that had tombstones when the CALL began is checked at once, as above. For one that had
   * none, a newer tombstone can only be one committed since, by a concurrent transaction, and a
   * check anywhere after the insert sees it: the step is remembered (its index and value position)
   * and the end of the transaction checks all such tables in the statement that sets up the origin.
   */
  undoOrRemember(flag: number): Code {
    return [`IF ${V}.tb[${flag}] THEN`, body(this.undoInsert()), 'ELSE', body(`${V}.dk := ${V}.dk || (${V}.k::int8 * ${STEP_SHIFT} + ${V}.p);`), 'END IF;'];
  }

  insertRow(columns: readonly MappedColumn[]): string {
    const m = this.shape.mapping;
    const overriding = columns.some((c) => c.identityAlways) ? ' OVERRIDING SYSTEM VALUE' : '';
    return (
      `INSERT INTO ${this.table} AS t (${columns.map((c) => quoteIdent(c.name)).join(', ')})${overriding} ` +
      `VALUES (${columns.map((c) => this.typed(c)).join(', ')}) ON CONFLICT (${m.key.map((c) => quoteIdent(c.name)).join(', ')}) DO NOTHING;`
    );
  }

  assignments(columns: readonly MappedColumn[]): string {
    return columns.map((c) => `${quoteIdent(c.name)} = ${this.typed(c)}`).join(', ');
  }

  /** Whether the remote change may overwrite the selected row (conflict/policy.ts overwriteRule). */
  overwrites(rule: OverwriteRule): string {
    const r = `${V}.r`;
    const own = `${r}.x = ${OWN_IF_ASSIGNED}`;
    const node = `coalesce(${S}.node_of_origin(${r}.ro), '') COLLATE "C"`;
    switch (rule) {
      case 'remote_newer':
        return `(${own} OR ${r}.cts IS NULL OR ${r}.cts < ${V}.ts OR (${r}.cts = ${V}.ts AND ${node} < ${P}.peer COLLATE "C"))`;
      case 'remote_older':
        return `(${own} OR (${r}.cts IS NOT NULL AND (${V}.ts < ${r}.cts OR (${V}.ts = ${r}.cts AND ${P}.peer COLLATE "C" < ${node}))))`;
      case 'always':
        return 'true';
      case 'same_origin':
        return `(${own} OR ${r}.ro = ${PEER_RO})`;
      default:
        return assertNever(rule);
    }
  }

  /**
   * The same rule over a row of the statement (alias t), for a guarded UPDATE or DELETE: the order
   * of remote_wins (metadata-schema.ts), with the commit timestamp read once in a row comparison
   * ((a, b) < (c, d) compares b and d only when a = c, and is null when a is).
   */
  guard(rule: OverwriteRule): string {
    const own = `t.xmin = ${OWN_IF_ASSIGNED}`;
    const local = `(${CTS('t.xmin')}, coalesce(${S}.node_of_origin(${ROIDENT('t.xmin')}), '') COLLATE "C")`;
    const remote = `(${V}.ts, ${P}.peer COLLATE "C")`;
    switch (rule) {
      case 'remote_newer':
        // A row without a commit timestamp loses to any remote version (the comparison is null).
        return `(${own} OR (${local} < ${remote}) IS NOT FALSE)`;
      case 'remote_older':
        return `(${own} OR (${remote} < ${local}) IS TRUE)`;
      case 'always':
        return 'true';
      case 'same_origin':
        return `(${own} OR ${ROIDENT('t.xmin')} = ${PEER_RO})`;
      default:
        return assertNever(rule);
    }
  }

  /**
   * The rule where it holds without a conflict to log: the row was last written by the peer itself,
   * or before the group existed (or by this transaction, or carries no commit timestamp). The usual
   * case once a group runs, and the one a single statement can decide without reading the row first.
   *
   * Every call below is made again at every execution, so each is paid for. A row without a commit
   * timestamp (this transaction's own, whose xid has none yet, or one too old to have one) makes
   * the comparisons null, and coalesce makes that true: no separate test for either case. The
   * epoch comes before the origin because pg_xact_commit_timestamp_origin builds its row type at
   * every call: a row from before the group (most rows, for long, in a group set up on existing
   * data) is decided without it. Measured on the procedure alone against the form with those tests
   * (pgbench-shaped transactions, rows from before the group): -3.2 us per transaction on 18, -1.6 us
   * on 15; with the origin first -0.2 / -0.4 us.
   */
  quiet(rule: OverwriteRule): string {
    const own = `t.xmin = ${OWN_IF_ASSIGNED}`;
    const cts = CTS('t.xmin');
    const same = `${ROIDENT('t.xmin')} = ${PEER_RO}`;
    const silent = `(${cts} < ${EPOCH} OR ${same})`;
    switch (rule) {
      case 'remote_newer':
        return `coalesce(${cts} < ${V}.ts AND ${silent}, true)`;
      case 'remote_older':
        return `(${own} OR (${silent} AND ${V}.ts < ${cts}))`;
      case 'always':
        return `coalesce(${silent}, true)`;
      case 'same_origin':
        return `(${own} OR ${same})`;
      default:
        return assertNever(rule);
    }
  }
}

function retryGuard(): Code {
  return [`${V}.tries := ${V}.tries + 1;`, `IF ${V}.tries > ${MAX_ATTEMPTS} THEN ${P}.stop_step := ${V}.k; EXIT; END IF;`];
}

export interface ProcedureOptions {
  /** RETURNING old.* exists (PostgreSQL 18): a write that wins over another origin's row is decided, done and reported by one statement. */
  readonly returningOld: boolean;
  /** roident of the peer's replication origin on this node (pg_replication_origin). */
  readonly peerOrigin: number;
  /**
   * When the group began on this node (pgbidi.node.created_at, timestamptz text): rows last written
   * before it are not conflicts (statements.ts overwritten).
   */
  readonly epoch: string;
  /**
   * This node's schema has the tombstone-write mark (metadata-schema.ts: TOMBSTONE_WRITE_LOCK and
   * the sequence): a transaction of remembered inserts can end without reading pgbidi.tombstones.
   */
  readonly tombstoneWrites: boolean;
}

function insertBlock(sql: ShapeSql, flag: number): Code {
  const { shape } = sql;
  const m = shape.mapping;
  const remote = sql.remoteRow(m.columns);
  const losing = shape.losing;
  const assigned = m.columns.filter((c) => !c.isKey && !c.identityAlways);
  const newer = shape.rules.insert === 'always' ? 'false' : sql.newerTombstone();
  const keep: Code = [sql.conflict('insert_exists', losing, sql.localForLog(), remote), 'EXIT;'];
  const overwrite: Code =
    assigned.length === 0
      ? keep // a table of key columns only: the existing row already is the remote one (upsertRows' DO NOTHING)
      : [
          `IF ${sql.overwrites(shape.rules.insert)} THEN`,
          body(
            `UPDATE ${sql.table} AS t SET ${sql.assignments([...assigned, ...keyCopied(m)])} WHERE t.ctid = ${V}.r.tid AND t.xmin = ${V}.r.x;`,
            'IF FOUND THEN',
            body(sql.conflict('insert_exists', 'apply_remote', sql.localForLog(), remote), 'EXIT;'),
            'END IF;',
          ),
          'ELSE',
          body(keep),
          'END IF;',
        ];
  return [
    sql.insertRow(m.columns),
    'IF FOUND THEN',
    body(sql.undoOrRemember(flag)),
    'ELSE',
    body(
      slowPath([
        '-- The key exists (or a concurrent insert of it committed while this one waited).',
        sql.selectRow(),
        'IF FOUND THEN',
        body(`IF ${newer} THEN`, body(keep), 'END IF;', overwrite),
        'ELSE',
        body('-- It is gone again: insert once more.', sql.insertRow(m.columns), 'IF FOUND THEN', body(sql.undoDeletedLater(), 'EXIT;'), 'END IF;'),
        'END IF;',
      ]),
    ),
    'END IF;',
  ];
}

/**
 * The decision taken when the first statement did not do it, in a loop: an iteration that finds the
 * row changed under it (its write by ctid and xmin finds nothing) decides again on a fresh snapshot.
 * After MAX_ATTEMPTS the step is handed back: the transaction rolls back and the CALL returns.
 */
function slowPath(decide: Code): Code {
  return [
    `${V}.tries := 0;`,
    'LOOP',
    body(retryGuard(), decide),
    'END LOOP;',
    `IF ${P}.stop_step <> 0 THEN`,
    body('ROLLBACK;', `${P}.done := pg_catalog.cardinality(${P}.commits);`, 'RETURN;'),
    'END IF;',
  ];
}

/** What an update or delete does with a key that is not here (update: re-create it, or not). */
function missingRow(sql: ShapeSql, kind: 'update' | 'delete', remote: string, tombstone: string): Code {
  const { shape } = sql;
  if (kind === 'delete') return [tombstone, sql.conflict('delete_missing', 'skip', 'NULL', remote), 'EXIT;'];
  const skipped: Code = [
    `IF ${V}.dl THEN`,
    body(sql.conflict('update_deleted', 'skip', 'NULL', remote)),
    'ELSE',
    body(sql.conflict('update_missing', 'skip', 'NULL', remote)),
    'END IF;',
    'EXIT;',
  ];
  // Without the whole row (unchanged TOAST values, no REPLICA IDENTITY FULL) a missing row cannot be re-created.
  if (!shape.complete || shape.rules.recreate === 'never') return [`${V}.dl := ${sql.newerTombstone()};`, skipped];
  const recreate = shape.rules.recreate === 'always' ? 'true' : `NOT ${V}.dl`;
  return [
    `${V}.dl := ${sql.newerTombstone()};`,
    `IF ${recreate} THEN`,
    body(
      sql.insertRow(shape.mapping.columns),
      'IF FOUND THEN',
      body(
        `IF ${V}.dl THEN`,
        body(sql.conflict('update_deleted', 'apply_remote', 'NULL', remote)),
        'ELSE',
        body(sql.conflict('update_missing', 'apply_remote', 'NULL', remote)),
        'END IF;',
        sql.undoDeletedLater(),
        'EXIT;',
      ),
      'END IF;',
    ),
    'ELSE',
    body(skipped),
    'END IF;',
  ];
}

/**
 * An update (key unchanged) or a delete. Usually one statement that writes only where the rule holds
 * without a conflict to log (quiet), with nothing to read back. On PostgreSQL 18, when it wrote
 * nothing, a second statement writes wherever the rule holds and reports from the old row version
 * (RETURNING old) whether that was an *_origin_differs. When neither wrote (on older servers, when the
 * first did not), the row is read and decided on: a conflict, a missing row, or a concurrent change
 * (decided again on a fresh snapshot).
 *
 * The RETURNING stays out of the usual statement because every write pays for it (the projection,
 * the row SPI hands back, the record it is assigned to): 2 to 2.6 us of the ~60 us of a pgbench
 * transaction, the procedure alone on 18 (medians of 100 interleaved pairs of CALLs). Conflicts come
 * in runs, so after a step whose quiet write found nothing the shape's next step starts with the
 * RETURNING statement, until one writes without a conflict (conflictFlag): in a run of
 * update_origin_differs the extra statement cost 13.9 us per transaction, with the flag 2.7 us.
 */
function writeBlock(sql: ShapeSql, kind: 'update' | 'delete', options: ProcedureOptions): Code {
  const { shape } = sql;
  const rule = kind === 'update' ? shape.rules.update : shape.rules.delete;
  const remote = sql.remoteRow(kind === 'update' ? shape.sent : shape.mapping.columns);
  const differs: ConflictType = kind === 'update' ? 'update_origin_differs' : 'delete_origin_differs';
  const assigned = shape.sent.filter((c) => !c.isKey && !c.identityAlways);
  const tombstone =
    `INSERT INTO ${S}.tombstones AS tb (table_name, key) VALUES (${sql.tableText}, ${sql.tombstoneKey()}) ` +
    `ON CONFLICT (table_name, key) DO UPDATE SET deleted_at = now() WHERE tb.xmin = ${OWN_XID} OR ${S}.remote_wins(tb.xmin, ${V}.ts, ${P}.peer);`;
  // A delete leaves its tombstone right after the row is gone.
  const wrote = (...then: Code[]): Code => (kind === 'delete' ? [tombstone, ...then] : then.length ? then : ['NULL;']);
  // Nothing to assign (every sent column is part of the key): the row is already as sent.
  const canWrite = kind === 'delete' || assigned.length > 0;
  const write = (where: string): string =>
    kind === 'delete' ? `DELETE FROM ${sql.table} AS t WHERE ${where}` : `UPDATE ${sql.table} AS t SET ${sql.assignments(assigned)} WHERE ${where}`;
  const decided: Code = !canWrite
    ? [sql.originDiffers(differs, remote), 'EXIT;']
    : [`${write(`t.ctid = ${V}.r.tid AND t.xmin = ${V}.r.x`)};`, 'IF FOUND THEN', body(wrote(sql.originDiffers(differs, remote), 'EXIT;')), 'END IF;'];
  const slow = slowPath([
    sql.selectRow(),
    'IF FOUND THEN',
    body(`IF ${sql.overwrites(rule)} THEN`, body(decided), 'ELSE', body(sql.conflict(differs, shape.losing, sql.localForLog(), remote), 'EXIT;'), 'END IF;'),
    'ELSE',
    body(missingRow(sql, kind, remote, tombstone)),
    'END IF;',
  ]);
  if (!canWrite) return slow;
  const key = sql.keyMatch('t');
  const quiet = `${write(`${key} AND ${sql.quiet(rule)}`)};`;
  if (!options.returningOld) return [quiet, 'IF FOUND THEN', body(wrote()), 'ELSE', body(slow), 'END IF;'];
  const flag = conflictFlag(shape);
  return [
    `IF NOT ${flag} THEN`,
    body(quiet),
    'END IF;',
    `IF ${flag} OR NOT FOUND THEN`,
    body(
      // to_jsonb of a row is never null: the old row is returned exactly when it was an *_origin_differs
      // (old.*: a bare old would be a column named old, if the table has one).
      `${write(`${key} AND ${sql.guard(rule)}`)} RETURNING CASE WHEN ${sql.oldOriginDiffers()} THEN to_jsonb(old.*) END AS loc INTO ${V}.w;`,
      `${flag} := NOT FOUND OR ${V}.w.loc IS NOT NULL;`,
      'IF FOUND THEN',
      body(wrote(`IF ${V}.w.loc IS NOT NULL THEN`, body(sql.conflict(differs, 'apply_remote', `${V}.w.loc`, remote)), 'END IF;')),
      'ELSE',
      body(slow),
      'END IF;',
    ),
    'ELSE',
    body(wrote()),
    'END IF;',
  ];
}

/** The name of conflictFlag's variable, as declared. */
function conflictFlagName(shape: StepShape): string {
  return `c${shape.id}`;
}

/** The shape's last step found no quiet row to write (PostgreSQL 18, writeBlock): its next one starts with RETURNING. */
function conflictFlag(shape: StepShape): string {
  return `${V}.${conflictFlagName(shape)}`;
}

/** 1-based index of each table with insert steps: its flag in tb (tombstones when the CALL began). */
type TombstoneFlags = ReadonlyMap<string, number>;

function shapeBlock(sql: ShapeSql, options: ProcedureOptions, flags: TombstoneFlags): Code {
  const { shape } = sql;
  switch (shape.kind) {
    case 'insert':
      return insertBlock(sql, flags.get(sql.tableText) ?? 0);
    case 'update':
    case 'delete':
      return writeBlock(sql, shape.kind, options);
    default:
      return assertNever(shape.kind);
  }
}

/**
 * Whether pgbidi.tombstones has a row that satisfies `condition` (on `x`), in a form planned as an
 * index-only scan of its primary key. The planner makes an EXISTS over the table a sequential scan
 * while it is small (it assumes 10 pages for one never vacuumed), and every sequential scan starts by
 * reading the table's size with an lseek (initscan → RelationGetNumberOfBlocks): a system call in
 * every applied transaction (strace of the W2 backlog on PostgreSQL 15, which the native worker
 * does not make). ORDER BY … LIMIT, which EXISTS would drop, makes the index the cheaper plan.
 */
function anyTombstone(condition: string): string {
  return `((SELECT x.table_name FROM ${S}.tombstones AS x WHERE ${condition} ORDER BY x.table_name, x.key LIMIT 1) IS NOT NULL)`;
}

/**
 * Reads which tables with insert steps have tombstones (tb, by flag) and which have none (dt): at
 * the start of the CALL, and again at the end of a transaction of remembered inserts when a
 * tombstone may have been written since (endOfTransaction).
 */
function readTombstoneFlags(flags: TombstoneFlags): Code {
  const names = `ARRAY[${[...flags.keys()].join(', ')}]::text[]`;
  return (
    `SELECT array_agg(q.has ORDER BY q.ord), coalesce(array_agg(q.tbl) FILTER (WHERE NOT q.has), '{}') INTO ${V}.tb, ${V}.dt ` +
    `FROM (SELECT u.tbl, u.ord, ${anyTombstone('x.table_name = u.tbl')} AS has ` +
    `FROM unnest(${names}) WITH ORDINALITY AS u(tbl, ord)) AS q;`
  );
}

/**
 * Notes where the tombstone-write sequence stands and whether a writer holds TOMBSTONE_WRITE_LOCK,
 * before the tombstones are read (readTombstoneFlags, or the check at the end of a transaction).
 * While no writer held it (quiet) and the sequence has not moved since, no tombstone was written
 * that this read does not show: a writer takes the lock before it advances the sequence and holds it
 * until it ends, so one that advanced it before s0 was read either had ended before the lock was
 * tried (the read, after, sees its tombstones) or still held the lock (not quiet); one that advances
 * it later is seen at the end of the transaction. The try and the unlock are one expression: nothing
 * between them can fail, so the session never keeps the lock. Without the mark in this node's
 * schema, quiet stays false and every transaction of remembered inserts reads the tombstones.
 */
function watchTombstoneWrites(options: ProcedureOptions): Code {
  if (!options.tombstoneWrites) return [];
  return [
    `${V}.s0 := ${WRITES_SO_FAR};`,
    `${V}.quiet := pg_catalog.pg_try_advisory_lock(${TOMBSTONE_WRITE_LOCK}::int8) AND pg_catalog.pg_advisory_unlock(${TOMBSTONE_WRITE_LOCK}::int8);`,
  ];
}

const WRITES_SO_FAR = `pg_catalog.pg_sequence_last_value('${S}.${TOMBSTONE_WRITES_SEQUENCE}'::regclass)`;

/**
 * The xid (pg_current_xact_id assigns one) and the origin of the commit, as an assignment: PL/pgSQL
 * evaluates an assignment as a simple expression, without the executor start and SPI call that a
 * PERFORM costs (~1.5 us of a pgbench transaction, the procedure alone on 18). CASE evaluates its
 * result only after its condition, so both calls are made, the xid first.
 */
const ORIGIN_SETUP = `${V}.o := CASE WHEN pg_catalog.pg_current_xact_id() IS NOT NULL THEN pg_catalog.pg_replication_origin_xact_setup(${P}.lsns[i], ${V}.ts) IS NULL END;`;

/**
 * The end of a remote transaction, up to its COMMIT. Deferred triggers fire before the origin is set
 * up: PostgreSQL 18 advances the origin also for a transaction that aborts after
 * pg_replication_origin_xact_setup. The xid makes every transaction write a commit record, so that
 * the origin's progress says exactly how far apply got.
 *
 * With inserts remembered (undoOrRemember) and no tombstone written since the tombstones were last
 * read (watchTombstoneWrites), the transaction ends as any other: no statement. Otherwise the
 * tombstones of their tables are looked for again, on a fresh snapshot that comes after every insert
 * of the transaction (and after the watch is taken again, for the transactions after it). Rarely
 * there is one: then those inserts are checked one by one as undoDeletedLater does, and the flags
 * read again.
 */
function endOfTransaction(inserts: readonly ShapeSql[], flags: TombstoneFlags, options: ProcedureOptions): Code {
  const deferred = 'SET CONSTRAINTS ALL IMMEDIATE;';
  const setup = ORIGIN_SETUP;
  if (flags.size === 0) return [deferred, setup];
  const undo = inserts.map((sql, n) => [`${n === 0 ? 'IF' : 'ELSIF'} ${V}.sh = ${sql.shape.id} THEN`, body(sql.undoInsert())]);
  return [
    deferred,
    `IF pg_catalog.cardinality(${V}.dk) = 0 THEN`,
    body(setup),
    // Only with the mark: the sequence's name is resolved when the condition is first planned.
    options.tombstoneWrites ? [`ELSIF ${V}.quiet AND ${WRITES_SO_FAR} IS NOT DISTINCT FROM ${V}.s0 THEN`, body(setup, `${V}.dk := '{}';`)] : [],
    'ELSE',
    body(
      watchTombstoneWrites(options),
      `IF ${anyTombstone(`x.table_name = ANY (${V}.dt)`)} THEN`,
      body(
        `${V}.sk := ${V}.k;`,
        `${V}.sp := ${V}.p;`,
        `FOR j IN 1 .. pg_catalog.cardinality(${V}.dk) LOOP`,
        body(
          // j is the loop's own variable (a FOR over integers declares it), like i and s above.
          `${V}.k := (${V}.dk[j] / ${STEP_SHIFT})::int;`,
          `${V}.p := (${V}.dk[j] % ${STEP_SHIFT})::int;`,
          `${V}.sh := ${P}.shapes[${V}.k];`,
          undo,
          'END IF;',
        ),
        'END LOOP;',
        `${V}.k := ${V}.sk;`,
        `${V}.p := ${V}.sp;`,
        readTombstoneFlags(flags),
        deferred,
      ),
      'END IF;',
      setup,
      `${V}.dk := '{}';`,
    ),
    'END IF;',
  ];
}

/** CREATE OR REPLACE PROCEDURE pg_temp.pgbidi_apply for the given shapes. */
export function applyProcedureSql(shapes: readonly StepShape[], options: ProcedureOptions): string {
  const sqls = shapes.map((s) => new ShapeSql(s));
  const inserts = sqls.filter((sql) => sql.shape.kind === 'insert');
  const flags = new Map<string, number>();
  for (const sql of inserts) if (!flags.has(sql.tableText)) flags.set(sql.tableText, flags.size + 1);
  const dispatch = render(
    sqls.map((sql, n) => [
      `${n === 0 ? 'IF' : 'ELSIF'} ${V}.sh = ${sql.shape.id} THEN`,
      body(shapeBlock(sql, options, flags), `${V}.p := ${V}.p + ${sql.shape.carried.length};`),
    ]),
    3,
  );
  const flagDeclarations = options.returningOld
    ? shapes
        .filter((s) => s.kind !== 'insert')
        .map((s) => `  ${conflictFlagName(s)} boolean := false;\n`)
        .join('')
    : '';
  const template = `#variable_conflict use_column
<<${V}>>
DECLARE
  i int;
  s int;
  k int := 0;
  p int := 0;
  sh int;
  tries int;
  ts timestamptz;
  o boolean;
  dl boolean;
  r record;
  w record;
  tb boolean[];
  dt text[];
  dk int8[] := '{}';
  s0 int8;
  quiet boolean := false;
  sk int;
  sp int;
${flagDeclarations}BEGIN
  IF coalesce(pg_catalog.pg_replication_origin_session_progress(false), '0/0') IS DISTINCT FROM ${P}.expected THEN
    RAISE EXCEPTION 'pgbidi: apply out of order: origin progress is %, expected %',
      coalesce(pg_catalog.pg_replication_origin_session_progress(false), '0/0'), ${P}.expected USING ERRCODE = '${OUT_OF_ORDER}';
  END IF;
  ${P}.stop_step := 0;
  ${P}.events := '{}';
  ${P}.commits := '{}';
${flags.size ? render([watchTombstoneWrites(options), readTombstoneFlags(flags)], 1) : ''}
  FOR i IN 1 .. coalesce(array_length(${P}.lsns, 1), 0) LOOP
    IF ${P}.nsteps[i] = 0 THEN
      -- Nothing to write (a heartbeat): no commit, the origin stays (the agent accounts for it).
      ${P}.commits := array_append(${P}.commits, pg_catalog.date_part('epoch', clock_timestamp()) * 1000);
      CONTINUE;
    END IF;
    ${V}.ts := ${P}.tss[i];
    FOR s IN 1 .. ${P}.nsteps[i] LOOP
      ${V}.k := ${V}.k + 1;
      ${V}.sh := ${P}.shapes[${V}.k];
${dispatch}
      ${shapes.length ? 'ELSIF' : 'IF'} ${V}.sh = 0 THEN
        PERFORM pg_catalog.pg_advisory_xact_lock(${value(1)}::int, ${value(2)}::int);
        ${V}.p := ${V}.p + 2;
      ELSE
        RAISE EXCEPTION 'pgbidi: unknown step shape %', ${V}.sh USING ERRCODE = 'PB004';
      END IF;
    END LOOP;
    -- The clock-skew rule (PGD's WAIT): no commit before the local clock has passed the remote one.
    IF clock_timestamp() <= ${V}.ts THEN
      PERFORM pg_catalog.pg_sleep(extract(epoch FROM ${V}.ts - clock_timestamp())::float8 + 0.000001);
    END IF;
${render(endOfTransaction(inserts, flags, options), 2)}
    COMMIT;
    ${P}.commits := array_append(${P}.commits, pg_catalog.date_part('epoch', clock_timestamp()) * 1000);
  END LOOP;
  ${P}.done := pg_catalog.cardinality(${P}.commits);
END`;
  const text = template.replaceAll(PEER_RO, `${Math.trunc(options.peerOrigin)}::oid`).replaceAll(EPOCH, `${quoteLiteral(options.epoch)}::timestamptz`);
  let tag = '$pgbidi$';
  for (let n = 1; text.includes(tag); n++) tag = `$pgbidi${n}$`;
  return (
    `CREATE OR REPLACE PROCEDURE pg_temp.${P}(expected pg_lsn, peer text, lsns pg_lsn[], clsns pg_lsn[], ` +
    `tss timestamptz[], nsteps int[], shapes int[], vals text[], ` +
    `INOUT done int, INOUT events int[], INOUT commits float8[], INOUT stop_step int) LANGUAGE plpgsql AS ${tag}\n${text}\n${tag}`
  );
}
