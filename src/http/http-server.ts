import express from 'express';
import type { Server } from 'node:http';
import type { Registry } from 'prom-client';
import { openMetricsContentType } from 'prom-client';
import type { LinkStatus } from '../link/link.js';
import { redactedMessage } from '../config/redact.js';
import { requireAdmin } from './admin-auth.js';
import type { AdminAccess } from './admin-auth.js';
import type { NodeView } from './node-view.js';
import { mountWebView } from './web-view.js';

/**
 * /metrics (Prometheus text, or OpenMetrics when the scraper asks for it, which carries exemplars),
 * /healthz (process alive), /readyz (every link streaming and under the lag bound), /status (JSON),
 * and the live web view at / (http/web-view.ts) when the view can be assembled.
 * Nothing here can reach a secret: links report redacted state only.
 */
export interface AgentView {
  readonly node: string;
  links(): readonly LinkStatus[];
  readonly maxReadyLagSeconds: number;
  extraStatus?(): Promise<Record<string, unknown>>;
  /** What the web view shows of this node; absent: no web view. */
  nodeView?(): Promise<NodeView>;
  /** Operator actions and who may call them; absent in read-only views. */
  admin?: { readonly actions: AdminActions; readonly access: AdminAccess };
}

/** What `pgbidi resolve` and `pgbidi dead-letters --retry` ask a running agent to do. */
export interface AdminActions {
  resolve(peer: string, action: 'retry' | 'skip'): 'resolved' | 'not_halted' | 'unknown_peer';
  retryDeadLetter(id: number): Promise<{ readonly outcome: string; readonly message?: string } | 'unknown'>;
}

export function createHttpApp(view: AgentView, registry: Registry, openMetricsRegistry: Registry): express.Express {
  const app = express();
  app.disable('x-powered-by');

  app.get('/metrics', async (req, res) => {
    const wantsOpenMetrics = (req.get('accept') ?? '').includes('application/openmetrics-text');
    const reg = wantsOpenMetrics ? openMetricsRegistry : registry;
    res.set('Content-Type', wantsOpenMetrics ? openMetricsContentType : registry.contentType);
    res.send(await reg.metrics());
  });

  app.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });

  app.get('/readyz', (_req, res) => {
    const reasons = readinessProblems(view.links(), view.maxReadyLagSeconds);
    if (reasons.length) res.status(503).json({ ready: false, reasons });
    else res.json({ ready: true });
  });

  app.get('/status', async (_req, res) => {
    res.json({ node: view.node, links: view.links(), ...(view.extraStatus ? await view.extraStatus() : {}) });
  });

  const nodeView = view.nodeView?.bind(view);
  if (nodeView) mountWebView(app, `pgbidi · node ${view.node}`, async () => [await nodeView()]);

  // Operator actions: authorized before anything else is read (http/admin-auth.ts); small bodies only.
  if (view.admin) {
    const { actions: admin, access } = view.admin;
    const authorized = requireAdmin(access);
    app.post('/links/:peer/resolve', authorized, express.json({ limit: ADMIN_BODY_LIMIT }), (req, res) => {
      const action = (req.body as { action?: unknown } | undefined)?.action;
      if (action !== 'retry' && action !== 'skip') {
        res.status(400).json({ error: 'action must be "retry" or "skip"' });
        return;
      }
      const r = admin.resolve(String(req.params.peer), action);
      res.status(r === 'resolved' ? 200 : r === 'unknown_peer' ? 404 : 409).json({ result: r });
    });
    app.post('/dead-letters/:id/retry', authorized, async (req, res) => {
      const id = Number(req.params.id);
      if (!Number.isSafeInteger(id) || id <= 0) {
        res.status(400).json({ error: 'id must be a positive integer' });
        return;
      }
      try {
        const r = await admin.retryDeadLetter(id);
        if (r === 'unknown') res.status(404).json({ error: `no dead letter ${id}` });
        else res.json({ id, ...r });
      } catch (err) {
        res.status(409).json({ error: redactedMessage(err) });
      }
    });
  }

  // Body parser errors (too large, malformed JSON) as JSON, never express's HTML page with a stack.
  app.use((err: unknown, _req: express.Request, res: express.Response, next: express.NextFunction) => {
    if (res.headersSent) {
      next(err);
      return;
    }
    const status = typeof err === 'object' && err !== null && 'status' in err && typeof err.status === 'number' ? err.status : 500;
    res.status(status).json({ error: status === 500 ? 'internal error' : redactedMessage(err) });
  });

  return app;
}

/** The operator endpoints take a few bytes of JSON at most. */
const ADMIN_BODY_LIMIT = '1kb';

export function readinessProblems(links: readonly LinkStatus[], maxLagSeconds: number): string[] {
  const reasons: string[] = [];
  for (const l of links) {
    // A parted peer left the group: nothing more can come from it, so it does not hold this node back.
    if (l.state === 'parted') continue;
    if (l.state !== 'streaming' && l.state !== 'paused') reasons.push(`link from ${l.peer} is ${l.state}`);
    else if (l.lagSeconds > maxLagSeconds) reasons.push(`link from ${l.peer} lags ${l.lagSeconds.toFixed(1)} s (bound ${maxLagSeconds} s)`);
  }
  return reasons;
}

export function listen(app: express.Express, hostPort: string): Promise<Server> {
  const i = hostPort.lastIndexOf(':');
  const host = hostPort.slice(0, i).replace(/^\[|\]$/g, '');
  const port = Number(hostPort.slice(i + 1));
  return new Promise((resolve, reject) => {
    const server = app.listen(port, host);
    server.once('listening', () => resolve(server));
    server.once('error', reject);
  });
}
