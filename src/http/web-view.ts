import type express from 'express';
import type { NodeView } from './node-view.js';
import { webViewPage } from './web-view-page.js';

/**
 * Serves the live web view: the page at `/` and what it polls at `/view.json`. Read-only; the agent
 * mounts it for its own node, the demo for every node of the group.
 */
export function mountWebView(app: express.Express, title: string, views: () => Promise<readonly NodeView[]>): void {
  const page = webViewPage(title);
  app.get('/', (_req, res) => {
    res.set({ 'Content-Security-Policy': page.contentSecurityPolicy, 'X-Content-Type-Options': 'nosniff', 'Referrer-Policy': 'no-referrer' });
    res.type('html').send(page.html);
  });
  app.get('/view.json', async (_req, res) => {
    res.set('Cache-Control', 'no-store');
    res.json({ nodes: await views() });
  });
}
