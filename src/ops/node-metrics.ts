// Node's process metrics (prom-client's default metrics, token_tap_process_* and token_tap_nodejs_*),
// its GC duration histogram only on request (TOKEN_TAP_GC_METRICS). That histogram is a
// PerformanceObserver of every GC: with serve's 1 MiB semi-space (node-flags.ts) a scavenge comes
// every few captures, and for each one Node builds an entry (wrapping its deprecated `kind` and
// `flags` getters in `deprecate()` every time) and calls the observer on the next turn of the loop:
// ~15 µs of the main thread per capture at 1,000/s, and garbage of its own. No alert, dashboard or
// runbook reads it (deploy/prometheus/rules.yaml, deploy/grafana/token-tap.json, docs/runbooks.md).
import { createRequire } from 'node:module';
import { collectDefaultMetrics, type Registry } from 'prom-client';

const require = createRequire(import.meta.url);

/** prom-client's name (collectDefaultMetrics.metricsList) of its GC histogram, nodejs_gc_duration_seconds. */
const GC_METRIC = 'gc';

type DefaultMetric = (registry: Registry, config: { prefix: string; eventLoopMonitoringPrecision: number }) => void;

/**
 * What collectDefaultMetrics registers, one module of prom-client's at a time (it has no option to
 * leave one out); the GC histogram only with `gc`.
 */
export function registerNodeMetrics(registry: Registry, options: { prefix: string; gc: boolean }): void {
  // collectDefaultMetrics's own default precision (ms) of the event loop delay monitor.
  const config = { prefix: options.prefix, eventLoopMonitoringPrecision: 10 };
  for (const name of collectDefaultMetrics.metricsList) {
    if (name === GC_METRIC && !options.gc) continue;
    (require(`prom-client/lib/metrics/${name}`) as DefaultMetric)(registry, config);
  }
}
