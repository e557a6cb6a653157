import express from 'express';
import type { Server } from 'node:http';
import { listen } from '../http/http-server.js';
import { mountWebView } from '../http/web-view.js';
import type { DemoGroup } from './demo-group.js';

/**
 * One URL for the whole group: the agents' web view (http/web-view.ts), fed with every agent's view.
 * The demo runs its agents in this process, so it asks them directly; loopback only.
 */
export interface GroupWebView {
  readonly url: string;
  stop(): Promise<void>;
}

export async function startGroupWebView(group: DemoGroup): Promise<GroupWebView> {
  const app = express();
  app.disable('x-powered-by');
  mountWebView(app, `pgbidi demo · ${group.agents.size} nodes`, () => Promise.all([...group.agents.values()].map((agent) => agent.view())));
  const server: Server = await listen(app, '127.0.0.1:0');
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;
  return {
    url: `http://127.0.0.1:${port}/`,
    stop: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
