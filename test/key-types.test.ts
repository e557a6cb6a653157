import { describe, expect, it } from 'vitest';
import { caughtUp, databaseSetting, sleep, useCluster, versionsAndApplyPaths } from './support/cluster-fixture.js';

/**
 * Primary keys of many types through the delete/update races. A local delete's tombstone is written
 * by the trigger from the row (to_jsonb(OLD)), a remote one by apply from the text pgoutput sent:
 * both must give the same jsonb key (a timestamptz as ISO 8601 in UTC, a numeric as a number, a
 * char(n) padded), or the newer delete is not found and an older update brings the row back.
 */
function longBytes(from: number): string {
  return `(SELECT string_agg(sha256(int4send(g)), ''::bytea ORDER BY g) FROM generate_series(${from}, ${from + 49}) AS g)`;
}

const KEYS: readonly (readonly [table: string, type: string, first: string, second: string])[] = [
  ['k_tstz', 'timestamptz', `'2024-01-02 03:04:05.123456+02'`, `'infinity'`],
  ['k_ts', 'timestamp', `'2024-01-02 03:04:05'`, `'1999-12-31 23:59:59.5'`],
  ['k_num', 'numeric', `1.50`, `'NaN'`],
  ['k_f8', 'float8', `0.1`, `'-Infinity'`],
  ['k_uuid', 'uuid', `'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'`, `'00000000-0000-0000-0000-000000000000'`],
  ['k_bytea', 'bytea', `'\\x00ff'`, `''`],
  ['k_bool', 'boolean', `true`, `false`],
  ['k_date', 'date', `'2024-02-29'`, `'4713-01-01 BC'`],
  ['k_text', 'text', `E'ünï "q" \\\\ x'`, `''`],
  ['k_int8', 'bigint', `9007199254740993`, `-9223372036854775808`],
  ['k_interval', 'interval', `'1 day 02:00:00'`, `'-1 mons'`],
  ['k_inet', 'inet', `'10.0.0.1/24'`, `'::1'`],
  ['k_char', 'char(4)', `'ab'`, `'abcd'`],
  ['k_money', 'money', `'12.5'`, `'-1'`],
  ['k_jsonb', 'jsonb', `'{"a": 1}'`, `'[null, "x"]'`],
  ['k_array', 'int[]', `'{1,2}'`, `'{}'`],
  // 1,600 bytes that do not compress: 3,200 as hex in jsonb, over a btree entry's 2,704.
  ['k_long', 'bytea', longBytes(1), longBytes(51)],
];

/**
 * The applications' sessions format values otherwise than pgbidi's (which pin UTC and the default
 * styles): the local deletes' tombstones must still carry the keys apply looks for.
 */
const APPLICATION_SETTINGS = [
  databaseSetting('timezone', "'Asia/Kolkata'"),
  databaseSetting('intervalstyle', 'sql_standard'),
  databaseSetting('bytea_output', 'escape'),
  databaseSetting('extra_float_digits', '0'),
];

const SCHEMA = [
  ...KEYS.map(([t, type]) => `CREATE TABLE ${t} (k ${type} PRIMARY KEY, v text)`),
  `CREATE TABLE marker (id int PRIMARY KEY)`,
  ...APPLICATION_SETTINGS,
];

describe.each(versionsAndApplyPaths())('primary keys of many types on $label through the $path', ({ binDir, apply_procedure_max_changes }) => {
  const cluster = useCluster(() => ({ binDir, nodes: ['a', 'b'], schema: SCHEMA, replication: { apply_procedure_max_changes } }));

  it('finds the newer delete of a key by its tombstone, and lets a newer update re-create a row an older delete removed', async () => {
    const c = cluster.get();
    await c.setupAll();
    await c.startAgent('a');
    await c.startAgent('b');
    for (const [t, , first, second] of KEYS) await c.query('a', `INSERT INTO ${t} VALUES (${first}, 'x'), (${second}, 'x')`);
    await caughtUp(c);
    await Promise.all(['a', 'b'].map((n) => c.stopAgent(n)));
    for (const [t, , first, second] of KEYS) {
      await c.query('a', `UPDATE ${t} SET v = 'older update' WHERE k = ${first}`);
      await c.query('a', `DELETE FROM ${t} WHERE k = ${second}`);
    }
    await sleep(5);
    for (const [t, , first, second] of KEYS) {
      await c.query('b', `DELETE FROM ${t} WHERE k = ${first}`);
      await c.query('b', `UPDATE ${t} SET v = 'newer update' WHERE k = ${second}`);
    }
    await c.startAgent('a');
    await c.startAgent('b');
    await caughtUp(c);
    for (const [t, type, , second] of KEYS) {
      const expected = await c.query('a', `SELECT (${second})::${type}::text AS k, 'newer update' AS v`);
      for (const node of ['a', 'b']) expect(await c.query(node, `SELECT k::text, v FROM ${t}`), `${t} on ${node}`).toEqual(expected);
    }
    const conflicts = async (node: string): Promise<string[]> =>
      (await c.query<{ c: string }>(node, `SELECT table_name || ' ' || conflict_type || '/' || resolution AS c FROM pgbidi.conflicts ORDER BY 1`)).map(
        (r) => r.c,
      );
    expect(await conflicts('a')).toEqual(KEYS.flatMap(([t]) => [`${t} delete_origin_differs/apply_remote`, `${t} update_missing/apply_remote`]).sort());
    expect(await conflicts('b')).toEqual(KEYS.flatMap(([t]) => [`${t} delete_origin_differs/keep_local`, `${t} update_deleted/skip`]).sort());
  });
});
