import { createServer } from 'node:http';
import type { Server } from 'node:http';

/**
 * A tiny OTLP/HTTP receiver for tests: accepts POST /v1/<signal> with JSON bodies
 * (OTEL_EXPORTER_OTLP_PROTOCOL=http/json), records every request and answers 200 with an empty
 * ExportTraceServiceResponse. Only the fields the tests read are typed.
 */
export interface OtlpAnyValue {
  stringValue?: string;
  intValue?: number | string;
  doubleValue?: number;
  boolValue?: boolean;
}
export interface OtlpKeyValue {
  key: string;
  value: OtlpAnyValue;
}
export interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  startTimeUnixNano: string | number;
  endTimeUnixNano: string | number;
  attributes?: OtlpKeyValue[];
  events?: { name: string; timeUnixNano: string | number; attributes?: OtlpKeyValue[] }[];
  links?: { traceId: string; spanId: string; attributes?: OtlpKeyValue[] }[];
}
export interface ReceivedSpan {
  resource: Record<string, string | number | boolean>;
  span: OtlpSpan;
}
export interface OtlpRequest {
  path: string;
  contentType: string;
  body: string;
}

/** OTLP SpanKind enum value for CONSUMER. */
export const SPAN_KIND_CONSUMER = 5;

export function attributeValue(v: OtlpAnyValue): string | number | boolean {
  if (v.stringValue !== undefined) return v.stringValue;
  if (v.intValue !== undefined) return Number(v.intValue);
  if (v.doubleValue !== undefined) return v.doubleValue;
  if (v.boolValue !== undefined) return v.boolValue;
  return '';
}

export function attributes(kvs: readonly OtlpKeyValue[] | undefined): Record<string, string | number | boolean> {
  return Object.fromEntries((kvs ?? []).map((kv) => [kv.key, attributeValue(kv.value)]));
}

export class OtlpReceiver {
  private constructor(
    private readonly server: Server,
    readonly requests: readonly OtlpRequest[],
  ) {}

  static async start(): Promise<OtlpReceiver> {
    const requests: OtlpRequest[] = [];
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        requests.push({ path: req.url ?? '', contentType: req.headers['content-type'] ?? '', body: Buffer.concat(chunks).toString('utf8') });
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('{}');
      });
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    return new OtlpReceiver(server, requests);
  }

  get endpoint(): string {
    const a = this.server.address();
    if (typeof a !== 'object' || a === null) throw new Error('receiver not listening');
    return `http://127.0.0.1:${a.port}`;
  }

  /** Every span received on /v1/traces so far, with its resource attributes. */
  spans(): ReceivedSpan[] {
    const out: ReceivedSpan[] = [];
    for (const r of this.requests) {
      if (r.path !== '/v1/traces') continue;
      const body = JSON.parse(r.body) as {
        resourceSpans?: { resource?: { attributes?: OtlpKeyValue[] }; scopeSpans?: { spans?: OtlpSpan[] }[] }[];
      };
      for (const rs of body.resourceSpans ?? []) {
        const resource = attributes(rs.resource?.attributes);
        for (const ss of rs.scopeSpans ?? []) for (const span of ss.spans ?? []) out.push({ resource, span });
      }
    }
    return out;
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
