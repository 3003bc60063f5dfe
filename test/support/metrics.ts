// A sidecar metric read in process (prom-client's own values), summed over the series whose labels
// include `labels`.
import type { Metrics } from '../../src/ops/metrics.js';

export async function metricValue(metrics: Metrics, name: keyof Metrics, labels: Record<string, string> = {}): Promise<number> {
  const metric = (
    await (metrics[name] as { get(): Promise<{ values: Array<{ value: number; labels: Record<string, string | number>; metricName?: string }> }> }).get()
  ).values;
  return metric.filter((value) => Object.entries(labels).every(([key, wanted]) => value.labels[key] === wanted)).reduce((sum, value) => sum + value.value, 0);
}
