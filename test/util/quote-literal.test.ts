import { describe, expect, it } from 'vitest';
import { quoteLiteral } from '../../src/util/sql.js';
import { availableServerVersions } from '../support/pg-versions.js';
import { useServer } from '../support/server-fixture.js';

const VALUES = ['plain', '', "it's", 'back\\slash', '\\', "\\'", "'\\", 'C:\\new\\table', '\\\\ two', 'é and \\u0041'];

describe.each(availableServerVersions())('quoteLiteral on $label', ({ binDir, label }) => {
  const db = useServer(() => ({ binDir, name: `quote-literal-${label}` }));

  it.each(['on', 'off'])('is read back as the same string with standard_conforming_strings = %s', async (setting) => {
    await db.client.query(`SET standard_conforming_strings = ${setting}`);
    const r = await db.client.query<{ v: string }>(VALUES.map((v) => `SELECT ${quoteLiteral(v)}::text AS v`).join(' UNION ALL '));
    expect(r.rows.map((x) => x.v)).toEqual(VALUES);
  });
});
