import { createHash, timingSafeEqual } from 'node:crypto';
import { isIP } from 'node:net';
import type { RequestHandler } from 'express';

/**
 * Who may call the operator endpoints (skip a halted transaction, retry a dead letter). They share the
 * listener with /metrics, which deployments expose to Prometheus, so reaching the port must not be
 * enough:
 * - a token configured (PGBIDI_ADMIN_TOKEN or http.admin_token_file): every call carries
 *   `Authorization: Bearer <token>` (RFC 6750 §2.1), whatever the listener;
 * - no token, loopback listener: open, as only this host can connect;
 * - no token, any other listener: off.
 */
export type AdminAccess = { readonly kind: 'token'; readonly token: string } | { readonly kind: 'loopback' } | { readonly kind: 'off' };

export function adminAccess(listen: string, token: string | null): AdminAccess {
  if (token !== null) return { kind: 'token', token };
  return isLoopbackListen(listen) ? { kind: 'loopback' } : { kind: 'off' };
}

/** host:port on 127.0.0.0/8, ::1 or localhost. */
export function isLoopbackListen(listen: string): boolean {
  const host = listen
    .slice(0, listen.lastIndexOf(':'))
    .replace(/^\[|\]$/g, '')
    .toLowerCase();
  if (host === 'localhost') return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  if (isIP(host) === 6) return host === '::1' || host === '0:0:0:0:0:0:0:1';
  return false;
}

/** Compares digests, so that neither the token's content nor its length shows in the time taken. */
export function bearerMatches(header: string | undefined, token: string): boolean {
  const m = /^Bearer +(\S+) *$/i.exec(header ?? '');
  const given = createHash('sha256')
    .update(m?.[1] ?? '')
    .digest();
  const expected = createHash('sha256').update(token).digest();
  return timingSafeEqual(given, expected) && m !== null;
}

export function requireAdmin(access: AdminAccess): RequestHandler {
  return (req, res, next) => {
    if (access.kind === 'loopback') {
      next();
      return;
    }
    if (access.kind === 'off') {
      res.status(403).json({
        error: 'operator endpoints are off on a non-loopback listener without an admin token: set PGBIDI_ADMIN_TOKEN or http.admin_token_file',
      });
      return;
    }
    if (!bearerMatches(req.get('authorization'), access.token)) {
      res.set('WWW-Authenticate', 'Bearer realm="pgbidi"').status(401).json({ error: 'a valid bearer token is required (Authorization: Bearer …)' });
      return;
    }
    next();
  };
}
