/**
 * Spans the agent's batch span processor dropped, read from its stderr.
 *
 * The observability comparison is only worth its number if every transaction's span was built,
 * serialized and sent: a span the BatchSpanProcessor drops because its queue is full
 * (OTEL_BSP_MAX_QUEUE_SIZE, 2,048 by default) costs almost nothing, so an agent that drops spans
 * looks cheaper than one that exports them all. The SDK reports drops only through its diagnostic
 * logger, which the agent's NodeSDK installs on stderr when OTEL_LOG_LEVEL is set, as
 * "Dropped <n> spans because maxQueueSize reached" (sdk-trace BatchSpanProcessorBase; the test pins
 * that text against the installed SDK).
 */
const DROPPED = /Dropped (\d+) spans because maxQueueSize reached/g;

/** Sum of the drops reported in `text` (whole lines). */
export function droppedSpans(text: string): number {
  let n = 0;
  for (const m of text.matchAll(DROPPED)) n += Number(m[1]);
  return n;
}

/** Counts the drops reported in a stream of chunks, which may split a line anywhere. */
export class DroppedSpanCounter {
  total = 0;
  private partial = '';

  push(chunk: string): void {
    const text = this.partial + chunk;
    const end = text.lastIndexOf('\n') + 1;
    this.total += droppedSpans(text.slice(0, end));
    this.partial = text.slice(end).slice(-1000);
  }
}
