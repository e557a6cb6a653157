import { DiagLogLevel, ROOT_CONTEXT, diag } from '@opentelemetry/api';
import type { DiagLogger } from '@opentelemetry/api';
import { tracing } from '@opentelemetry/sdk-node';
import { afterEach, describe, expect, it } from 'vitest';
import { DroppedSpanCounter, droppedSpans } from '../../src/bench/dropped-spans.js';

interface ExportResult {
  readonly code: number;
}

describe('dropped spans', () => {
  afterEach(() => diag.disable());

  it('sums the drops reported, across chunks that split lines', () => {
    expect(droppedSpans('Dropped 12 spans because maxQueueSize reached\nother\nDropped 3 spans because maxQueueSize reached\n')).toBe(15);
    expect(droppedSpans('nothing dropped\n')).toBe(0);
    const counter = new DroppedSpanCounter();
    for (const chunk of ['Dropped 1', '0 spans because maxQu', 'eueSize reached\nDropped 5 spans because maxQueueSize reached', '\n']) counter.push(chunk);
    expect(counter.total).toBe(15);
  });

  it("reads what the installed SDK's batch span processor reports when its queue is full", async () => {
    const lines: string[] = [];
    const log = (m: string): void => void lines.push(m);
    const logger: DiagLogger = { error: log, warn: log, info: log, debug: () => undefined, verbose: () => undefined };
    diag.setLogger(logger, DiagLogLevel.WARN);
    // An exporter that holds its first batch until released: the spans ended meanwhile fill the queue.
    const held: ((r: ExportResult) => void)[] = [];
    const exporter = {
      export: (_spans: unknown, done: (r: ExportResult) => void) => void held.push(done),
      shutdown: () => Promise.resolve(),
    };
    const processor = new tracing.BatchSpanProcessor(exporter, { maxQueueSize: 2, maxExportBatchSize: 2, scheduledDelayMillis: 1 });
    const tracer = new tracing.BasicTracerProvider({ spanProcessors: [processor] }).getTracer('t');
    const end = (n: number): void => {
      for (let i = 0; i < n; i++) tracer.startSpan('s', {}, ROOT_CONTEXT).end();
    };
    end(2); // a full batch: its export starts and is held
    end(5); // two queue up, three are dropped
    expect(held).toHaveLength(1);
    held[0]?.({ code: 0 });
    await new Promise((resolve) => setTimeout(resolve, 20));
    end(1); // the queue has room again: the drops are reported
    expect(droppedSpans(lines.map((l) => `${l}\n`).join(''))).toBe(3);
  });
});
