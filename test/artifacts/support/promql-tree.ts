/**
 * Reads PromQL with Prometheus' own lezer grammar and reports what the linters need: each series
 * selector with its label matchers, the range it is read over, and the function it is passed to.
 *
 * Grafana's range variables are not PromQL; before parsing they are replaced by sentinel durations
 * of the same length, so positions stay valid and the linter can still tell `[$__rate_interval]` from
 * a hard-coded `[5m]`.
 */
import type { SyntaxNode } from '@lezer/common';
import { parser } from '@prometheus-io/lezer-promql';

const SENTINELS: ReadonlyMap<string, string> = new Map([
  ['$__rate_interval', '999999999999999s'],
  ['$__interval', '9999999998s'],
  ['$__range', '9999997s'],
]);

export interface Matcher {
  readonly label: string;
  readonly op: '=' | '!=' | '=~' | '!~';
  readonly value: string;
}

export interface SelectorUse {
  /** Series name (the selector's identifier). */
  readonly metric: string;
  readonly matchers: readonly Matcher[];
  /** `[...]` of the matrix selector around it, as written (`$__rate_interval`, `5m`), or null. */
  readonly range: string | null;
  /** Function the selector (or its matrix) is passed to directly, e.g. `rate`; null when none. */
  readonly func: string | null;
  readonly text: string;
}

export interface ParsedPromql {
  /** Syntax errors as "at <offset>: <text near it>"; empty when the expression parses. */
  readonly errors: readonly string[];
  readonly selectors: readonly SelectorUse[];
  /** Names of every function called. */
  readonly functions: readonly string[];
}

/** Replaces Grafana variables that stand for durations with same-length PromQL durations. */
export function substituteGrafanaRanges(expr: string): string {
  let out = expr;
  for (const [variable, sentinel] of SENTINELS) out = out.split(variable).join(sentinel);
  return out;
}

function restoreRange(text: string): string {
  for (const [variable, sentinel] of SENTINELS) if (text === sentinel) return variable;
  return text;
}

function unquote(literal: string): string {
  const quote = literal[0];
  if (quote === '`') return literal.slice(1, -1);
  return JSON.parse(quote === "'" ? `"${literal.slice(1, -1).replace(/"/g, '\\"')}"` : literal) as string;
}

function child(node: SyntaxNode, name: string): SyntaxNode | null {
  for (let c = node.firstChild; c; c = c.nextSibling) if (c.name === name) return c;
  return null;
}

function functionName(call: SyntaxNode, src: string): string | null {
  const id = child(call, 'FunctionIdentifier');
  return id ? src.slice(id.from, id.to) : null;
}

export function parsePromql(expr: string): ParsedPromql {
  const src = substituteGrafanaRanges(expr);
  const tree = parser.parse(src);
  const errors: string[] = [];
  const selectors: SelectorUse[] = [];
  const functions: string[] = [];
  tree.iterate({
    enter: (ref) => {
      if (ref.type.isError) errors.push(`at ${ref.from}: ${JSON.stringify(src.slice(Math.max(0, ref.from - 20), ref.to + 20))}`);
      if (ref.name === 'FunctionCall') {
        const name = functionName(ref.node, src);
        if (name) functions.push(name);
      }
      if (ref.name !== 'VectorSelector') return;
      const node = ref.node;
      const id = child(node, 'Identifier');
      const matchers: Matcher[] = [];
      const list = child(node, 'LabelMatchers');
      for (let m = list?.firstChild ?? null; m; m = m.nextSibling) {
        if (m.name !== 'UnquotedLabelMatcher' && m.name !== 'QuotedLabelMatcher') continue;
        const label = child(m, 'LabelName') ?? child(m, 'QuotedLabelName');
        const op = child(m, 'MatchOp');
        const value = child(m, 'StringLiteral');
        if (!label || !op || !value) continue;
        matchers.push({
          label: src.slice(label.from, label.to),
          op: src.slice(op.from, op.to) as Matcher['op'],
          value: unquote(src.slice(value.from, value.to)),
        });
      }
      const nameMatcher = matchers.find((m) => m.label === '__name__' && m.op === '=');
      const metric = id ? src.slice(id.from, id.to) : (nameMatcher?.value ?? '');
      let range: string | null = null;
      let outer: SyntaxNode = node;
      const parent = node.parent;
      if (parent?.name === 'MatrixSelector') {
        const duration = child(parent, 'DurationExpr') ?? parent.lastChild;
        range = duration ? restoreRange(src.slice(duration.from, duration.to)) : null;
        outer = parent;
      }
      let func: string | null = null;
      const body = outer.parent;
      if (body?.name === 'FunctionCallBody' && body.parent?.name === 'FunctionCall') func = functionName(body.parent, src);
      selectors.push({ metric, matchers: matchers.filter((m) => m.label !== '__name__'), range, func, text: expr.slice(node.from, outer.to) });
    },
  });
  return { errors, selectors, functions };
}

/** `label_values(<selector>, label)` → the selector, or null for other variable queries. */
export function labelValuesSelector(query: string): string | null {
  const m = /^label_values\((.*),\s*[A-Za-z_][A-Za-z0-9_]*\)$/.exec(query.trim());
  return m ? (m[1] ?? null) : null;
}
