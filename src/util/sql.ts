/** Identifier and literal quoting for the few statements that cannot take parameters. */
export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/**
 * A string constant that means `value` whatever the session's standard_conforming_strings: with it
 * off (a legacy setting a database or role may still carry), a backslash in a plain '...' constant
 * starts an escape, so a value with one is written as an escape string constant, E'...', whose
 * backslashes are doubled (sql-syntax-lexical.html "String Constants With C-Style Escapes"). With
 * plain constants, the apply procedure logged the conflicts of table `back\slash` as `backslash` and
 * kept its tombstones under another name than the statement path did.
 */
export function quoteLiteral(value: string): string {
  const quoted = value.replace(/'/g, "''");
  return value.includes('\\') ? `E'${quoted.replace(/\\/g, '\\\\')}'` : `'${quoted}'`;
}

export function qualifiedName(schema: string, table: string): string {
  return `${quoteIdent(schema)}.${quoteIdent(table)}`;
}

/**
 * A one-dimensional array literal (arrays.html "Array Value Input") of text, null or boolean
 * elements, every text element double-quoted so that no element needs other escaping than `"` and
 * `\`. Apply sends its columns this way: one string per column instead of the driver escaping every
 * element with two regular expressions.
 */
export function arrayLiteral(values: readonly (string | boolean | null)[]): string {
  const parts = new Array<string>(values.length);
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (v === null || v === undefined) parts[i] = 'NULL';
    else if (typeof v === 'boolean') parts[i] = v ? 't' : 'f';
    else parts[i] = NEEDS_ESCAPE.test(v) ? `"${v.replace(ESCAPED, '\\$&')}"` : `"${v}"`;
  }
  return `{${parts.join(',')}}`;
}

const NEEDS_ESCAPE = /["\\]/;
const ESCAPED = /["\\]/g;
