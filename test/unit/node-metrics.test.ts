// Node's process metrics on serve's registry, the GC duration histogram only when asked for
// (TOKEN_TAP_GC_METRICS): by default no callback runs on every garbage collection (src/ops/node-metrics.ts).
import { expect } from 'chai';
import { loadSidecarConfig } from '../../src/config/sidecar.js';
import { createMetrics } from '../../src/ops/metrics.js';

const GC_HISTOGRAM = 'token_tap_nodejs_gc_duration_seconds';
const valid = { DATABASE_URL: 'postgres://u:p@localhost:5432/db', TOKEN_TAP_KEYS: `k1:${Buffer.alloc(32, 7).toString('base64')}` };

async function exposedNames(metrics: ReturnType<typeof createMetrics>): Promise<string[]> {
  return (await metrics.registry.getMetricsAsJSON()).map((metric) => metric.name);
}

describe('Node process metrics', () => {
  it('serve exposes every default process metric but the GC histogram by default', async () => {
    const names = await exposedNames(createMetrics({ defaultMetrics: true }));
    for (const name of [
      'token_tap_process_cpu_seconds_total',
      'token_tap_process_resident_memory_bytes',
      'token_tap_nodejs_eventloop_lag_p99_seconds',
      'token_tap_nodejs_heap_size_used_bytes',
      'token_tap_nodejs_heap_space_size_used_bytes',
      'token_tap_nodejs_version_info',
      'token_tap_process_start_time_seconds',
    ]) {
      expect(names).to.include(name);
    }
    expect(names).not.to.include(GC_HISTOGRAM);
  });

  it('the GC histogram is there, and counts collections, when asked for', async () => {
    const metrics = createMetrics({ defaultMetrics: true, gcMetrics: true });
    expect(await exposedNames(metrics)).to.include(GC_HISTOGRAM);
    // Garbage until a scavenge has been observed (the observer is called on a later turn of the loop).
    let observed = 0;
    for (let turn = 0; turn < 200 && observed === 0; turn++) {
      let junk: object[] = [];
      for (let i = 0; i < 100_000; i++) junk.push({ i });
      junk = [];
      await new Promise((resolve) => setImmediate(resolve));
      const histogram = (await metrics.registry.getSingleMetric(GC_HISTOGRAM)?.get())?.values ?? [];
      observed = histogram
        .filter((value) => (value as { metricName?: string }).metricName === `${GC_HISTOGRAM}_count`)
        .reduce((sum, value) => sum + value.value, 0);
      expect(junk).to.have.length(0);
    }
    expect(observed).to.be.greaterThan(0);
  });

  it('a test registry has no process metrics at all', async () => {
    expect((await exposedNames(createMetrics())).filter((name) => name.startsWith('token_tap_process_') || name.startsWith('token_tap_nodejs_'))).to.deep.equal(
      [],
    );
  });

  it('TOKEN_TAP_GC_METRICS is off unless set to true', () => {
    expect(loadSidecarConfig(valid).gcMetrics).to.equal(false);
    expect(loadSidecarConfig({ ...valid, TOKEN_TAP_GC_METRICS: 'true' }).gcMetrics).to.equal(true);
    expect(() => loadSidecarConfig({ ...valid, TOKEN_TAP_GC_METRICS: 'yes' })).to.throw('TOKEN_TAP_GC_METRICS must be true or false, got "yes"');
  });
});
