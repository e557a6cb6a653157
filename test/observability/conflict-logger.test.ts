import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { conflictLogger, createLogger } from '../../src/observability/logger.js';

function capture(): { lines: () => Record<string, unknown>[]; stream: Writable } {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      chunks.push(chunk.toString('utf8'));
      cb();
    },
  });
  return {
    lines: () =>
      chunks
        .join('')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as Record<string, unknown>),
    stream,
  };
}

describe('conflictLogger', () => {
  it('writes a conflict line as it is, with the parent bindings, while the parent keeps redacting', () => {
    const out = capture();
    const log = createLogger('info', out.stream).child({ component: 'link', peer: 'a' });
    const conflicts = conflictLogger(log);
    const line = { conflict: 'update_origin_differs', resolution: 'apply_remote', table: 'public.t', key: ['7', 'x'], remoteNode: 'a' };
    conflicts.warn(line, 'conflict');
    log.warn({ peer: { dsn: 'postgres://u:secret@h/db', password: 'secret' } }, 'config');
    const [first, second] = out.lines();
    expect(first).toMatchObject({ ...line, component: 'link', peer: 'a', msg: 'conflict', level: 'warn' });
    expect(second).toMatchObject({ peer: { dsn: '***', password: '***' }, msg: 'config' });
    expect(JSON.stringify(out.lines())).not.toContain('secret');
  });
});
