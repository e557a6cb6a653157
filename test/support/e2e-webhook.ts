/**
 * An Alertmanager webhook receiver inside the test: an HTTP server on 127.0.0.1 that records every
 * notification (the receiver is the request path, e.g. `/chat`), and lets a test wait for one alert
 * of one notification to match. Payload: Alertmanager's webhook format, version 4.
 */
import { createServer } from 'node:http';
import type { IncomingMessage, Server } from 'node:http';

export interface WebhookAlert {
  readonly status: 'firing' | 'resolved';
  readonly labels: Readonly<Record<string, string>>;
  readonly annotations: Readonly<Record<string, string>>;
  readonly startsAt: string;
  readonly endsAt: string;
}

export interface Notification {
  /** Request path without the leading slash: the shipped config posts to `<base>/<receiver>`. */
  readonly path: string;
  /** Alertmanager's `receiver` field. */
  readonly receiver: string;
  readonly status: 'firing' | 'resolved';
  readonly groupLabels: Readonly<Record<string, string>>;
  readonly alerts: readonly WebhookAlert[];
  /** Date.now() on arrival. */
  readonly receivedAt: number;
}

export interface Delivery {
  readonly notification: Notification;
  readonly alert: WebhookAlert;
}

export class WebhookReceiver {
  readonly notifications: Notification[] = [];
  private readonly server: Server = createServer((req, res) => {
    void readBody(req)
      .then((body) => {
        const n = JSON.parse(body) as Omit<Notification, 'path' | 'receivedAt'>;
        this.notifications.push({ ...n, path: (req.url ?? '/').replace(/^\//, ''), receivedAt: Date.now() });
        res.writeHead(200).end();
      })
      .catch(() => res.writeHead(400).end());
  });
  private port = 0;

  private constructor() {}

  static async start(): Promise<WebhookReceiver> {
    const receiver = new WebhookReceiver();
    const server = receiver.server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    const address = server.address();
    receiver.port = typeof address === 'object' && address !== null ? address.port : 0;
    return receiver;
  }

  /** `http://127.0.0.1:<port>`: the shipped config's webhookBaseUrl is replaced by this. */
  get baseUrl(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Every alert delivered so far, with its notification, oldest first. */
  deliveries(): Delivery[] {
    return this.notifications.flatMap((notification) => notification.alerts.map((alert) => ({ notification, alert })));
  }

  /** Polls until a delivered alert matches; fails with `what` and a summary of what did arrive. */
  async waitFor(what: string, match: (d: Delivery) => boolean, timeoutMs: number): Promise<Delivery> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.deliveries().find(match);
      if (found) return found;
      if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; received: ${this.summary() || 'nothing'}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  /** One line per delivered alert: `path status alertname {labels}`. */
  summary(): string {
    return this.deliveries()
      .map(({ notification, alert }) => {
        const { alertname, ...rest } = alert.labels;
        return `${notification.path} ${alert.status} ${alertname ?? '?'} ${JSON.stringify(rest)}`;
      })
      .join('\n');
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}
