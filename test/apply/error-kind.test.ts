import { describe, expect, it } from 'vitest';
import { errorKind } from '../../src/apply/error-kind.js';

/** A driver error as node-postgres builds it: the SQLSTATE in `code`. */
function pgError(code: string): Error {
  return Object.assign(new Error('server error'), { code });
}

describe('errorKind', () => {
  it.each([
    ['53100', 'resources'], // disk_full
    ['53200', 'resources'], // out_of_memory
    ['53300', 'resources'], // too_many_connections
    ['23505', 'unique_violation'],
    ['08006', 'connection'],
    ['57P01', 'connection'],
    ['57014', 'timeout'],
    ['40P01', 'serialization'],
    ['42P01', 'schema'],
    ['55000', 'other'],
  ])('classifies SQLSTATE %s as %s', (code, kind) => {
    expect(errorKind(pgError(code))).toBe(kind);
  });

  it('classifies a socket error by its errno code as a connection error', () => {
    expect(errorKind(Object.assign(new Error('reset'), { code: 'ECONNRESET' }))).toBe('connection');
  });
});
