/**
 * The options of `pgbidi demo`: the strings `pgbidi` parses, validated all at once into numbers with
 * the defaults the README documents.
 */

/** The option values as `pgbidi` parses them (strings, booleans for flags). */
export interface DemoArgs {
  readonly nodes?: string;
  readonly duration?: string;
  readonly 'write-rate'?: string;
  readonly 'conflict-rate'?: string;
  readonly prometheus?: boolean;
  readonly 'keep-data'?: boolean;
}

export interface DemoOptions {
  readonly nodes: number;
  /** Seconds of workload; undefined runs until Ctrl-C. */
  readonly durationSeconds: number | undefined;
  /** Rows per second per node on keys only that node writes. */
  readonly writeRate: number;
  /** Races per second across the group on the shared keys. */
  readonly conflictRate: number;
  readonly prometheus: boolean;
  readonly keepData: boolean;
}

export class DemoOptionsError extends Error {
  readonly code = 'PGBIDI_DEMO_OPTIONS';
  override readonly name = 'DemoOptionsError';
  constructor(readonly problems: readonly string[]) {
    super(`invalid demo options:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
  }
}

export const DEFAULT_DEMO_OPTIONS = {
  nodes: 3,
  writeRate: 20,
  conflictRate: 2,
} as const;

const MAX_NODES = 6;

/** Validates every option at once; the defaults are those documented in the README. */
export function parseDemoOptions(args: DemoArgs): DemoOptions {
  const problems: string[] = [];
  const number = (name: string, raw: string | undefined, fallback: number | undefined, check: (n: number) => boolean, rule: string): number | undefined => {
    if (raw === undefined) return fallback;
    const n = Number(raw);
    if (raw.trim() === '' || !Number.isFinite(n) || !check(n)) {
      problems.push(`--${name} ${JSON.stringify(raw)}: ${rule}`);
      return fallback;
    }
    return n;
  };
  const nodes = number(
    'nodes',
    args.nodes,
    DEFAULT_DEMO_OPTIONS.nodes,
    (n) => Number.isInteger(n) && n >= 2 && n <= MAX_NODES,
    `must be an integer from 2 to ${MAX_NODES}`,
  );
  const durationSeconds = number('duration', args.duration, undefined, (n) => n > 0 && n <= 7 * 24 * 3600, 'must be a number of seconds above 0');
  const writeRate = number(
    'write-rate',
    args['write-rate'],
    DEFAULT_DEMO_OPTIONS.writeRate,
    (n) => n >= 0 && n <= 10_000,
    'must be rows per second per node, from 0 to 10000',
  );
  const conflictRate = number(
    'conflict-rate',
    args['conflict-rate'],
    DEFAULT_DEMO_OPTIONS.conflictRate,
    (n) => n >= 0 && n <= 200,
    'must be races per second, from 0 to 200',
  );
  if (problems.length) throw new DemoOptionsError(problems);
  return {
    nodes: nodes ?? DEFAULT_DEMO_OPTIONS.nodes,
    durationSeconds,
    writeRate: writeRate ?? DEFAULT_DEMO_OPTIONS.writeRate,
    conflictRate: conflictRate ?? DEFAULT_DEMO_OPTIONS.conflictRate,
    prometheus: args.prometheus === true,
    keepData: args['keep-data'] === true,
  };
}
