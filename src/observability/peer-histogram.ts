import type { Metric, Registry } from 'prom-client';

/**
 * A histogram labelled by peer only, observed once per applied transaction: prom-client's
 * Histogram hashes the label object and validates it at every observe (and a histogram with
 * exemplars exists twice, once per registry), which came to several µs per transaction in the
 * agent's CPU profile at tens of thousands of transactions/s. This one finds the bucket in a
 * Float64Array and hands prom-client's registries the same values a prom-client Histogram would
 * (get() → name, help, type, values with metricName and labels; exemplars only in OpenMetrics).
 */
interface Series {
  readonly counts: Float64Array;
  sum: number;
  count: number;
  readonly exemplars: ({ labelSet: { trace_id: string }; value: number; timestamp: number } | null)[];
}

interface ExportedValue {
  readonly labels: Record<string, string | number>;
  readonly value: number;
  readonly metricName: string;
  readonly exemplar?: { labelSet: { trace_id: string }; value: number; timestamp: number } | null;
}

export class PeerHistogram {
  private readonly series = new Map<string, Series>();

  constructor(
    readonly name: string,
    readonly help: string,
    private readonly buckets: readonly number[],
    registries: { readonly text: Registry; readonly openMetrics: Registry; readonly exemplars: boolean },
  ) {
    registries.text.registerMetric(this.view(false));
    registries.openMetrics.registerMetric(this.view(registries.exemplars));
  }

  /** Exports the peer's series at zero before its first observation. */
  zero(peer: string): void {
    if (!this.series.has(peer)) this.series.set(peer, this.emptySeries());
  }

  private emptySeries(): Series {
    const n = this.buckets.length + 1;
    return { counts: new Float64Array(n), sum: 0, count: 0, exemplars: Array.from({ length: n }, () => null) };
  }

  observe(peer: string, value: number, traceId?: string): void {
    let s = this.series.get(peer);
    if (!s) {
      s = this.emptySeries();
      this.series.set(peer, s);
    }
    let i = 0;
    while (i < this.buckets.length && value > (this.buckets[i] as number)) i++;
    s.counts[i] = (s.counts[i] as number) + 1;
    s.sum += value;
    s.count++;
    if (traceId !== undefined) s.exemplars[i] = { labelSet: { trace_id: traceId }, value, timestamp: Date.now() / 1000 };
  }

  private values(exemplars: boolean): ExportedValue[] {
    const out: ExportedValue[] = [];
    for (const [peer, s] of this.series) {
      let cumulative = 0;
      for (let i = 0; i <= this.buckets.length; i++) {
        cumulative += s.counts[i] as number;
        out.push({
          labels: { le: i < this.buckets.length ? (this.buckets[i] as number) : '+Inf', peer },
          value: cumulative,
          metricName: `${this.name}_bucket`,
          ...(exemplars ? { exemplar: s.exemplars[i] ?? null } : {}),
        });
      }
      out.push({ labels: { peer }, value: s.sum, metricName: `${this.name}_sum` });
      out.push({ labels: { peer }, value: s.count, metricName: `${this.name}_count` });
    }
    return out;
  }

  /** What a registry holds: prom-client reads name, help, type and get(). */
  private view(exemplars: boolean): Metric {
    const view = {
      name: this.name,
      help: this.help,
      type: 'histogram',
      labelNames: ['peer'],
      aggregator: 'sum',
      get: () => Promise.resolve({ name: this.name, help: this.help, type: 'histogram', values: this.values(exemplars), aggregator: 'sum' }),
      reset: () => this.series.clear(),
    };
    return view as unknown as Metric;
  }
}
