// An open-loop load generator: requests are sent on a fixed schedule whatever the responses do,
// and each latency is measured from the moment the request was due, so a stall is not hidden
// (no coordinated omission). Microsecond resolution.
import { Pool } from 'undici';

export interface LoadOptions {
  origin: string;
  path: string;
  body: string;
  headers: Record<string, string>;
  /** Requests per second; 0 means closed loop: every connection sends as fast as answers come. */
  rate: number;
  durationMs: number;
  /**
   * Keep-alive connections at most (one request at a time each). Open loop, a request finding all
   * of them busy waits in the pool's queue, and that wait counts in its latency: give at least
   * rate × response time of them (200/s × 80 ms = 16). maxInFlight in the result shows what was used.
   */
  connections: number;
}

export interface LoadResult {
  sent: number;
  ok: number;
  errors: number;
  /** Seconds the run took, from first send to last answer. */
  seconds: number;
  /** The most requests outstanding at once; at connections, requests queued for a connection. */
  maxInFlight: number;
  latencyUs: { p50: number; p99: number; p999: number; max: number; mean: number };
}

function percentile(sorted: Float64Array, fraction: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil(fraction * sorted.length) - 1)]!;
}

export async function runLoad(options: LoadOptions): Promise<LoadResult> {
  const pool = new Pool(options.origin, { connections: options.connections, pipelining: 1, keepAliveTimeout: 30_000 });
  const latencies: number[] = [];
  let sent = 0;
  let ok = 0;
  let errors = 0;
  let maxInFlight = 0;
  const inFlight = new Set<Promise<void>>();
  const start = process.hrtime.bigint();
  const elapsedUs = () => Number(process.hrtime.bigint() - start) / 1000;

  const fire = (dueUs: number): Promise<void> => {
    sent += 1;
    const request = pool
      .request({ method: 'POST', path: options.path, body: options.body, headers: options.headers })
      .then(async (response) => {
        await response.body.arrayBuffer();
        if (response.statusCode >= 200 && response.statusCode < 300) ok += 1;
        else errors += 1;
      })
      .catch(() => {
        errors += 1;
      })
      .finally(() => {
        latencies.push(elapsedUs() - dueUs);
        inFlight.delete(request);
      });
    inFlight.add(request);
    maxInFlight = Math.max(maxInFlight, inFlight.size);
    return request;
  };

  const durationUs = options.durationMs * 1000;
  if (options.rate > 0) {
    const intervalUs = 1_000_000 / options.rate;
    let next = 0;
    while (next < durationUs) {
      const now = elapsedUs();
      while (next <= now && next < durationUs) {
        void fire(next);
        next += intervalUs;
      }
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
  } else {
    const worker = async () => {
      while (elapsedUs() < durationUs) await fire(elapsedUs());
    };
    await Promise.all(Array.from({ length: options.connections }, worker));
  }
  await Promise.all(inFlight);
  const seconds = elapsedUs() / 1e6;
  await pool.close();
  const sorted = Float64Array.from(latencies).sort();
  const mean = latencies.reduce((sum, value) => sum + value, 0) / Math.max(1, latencies.length);
  return {
    sent,
    ok,
    errors,
    seconds,
    maxInFlight,
    latencyUs: { p50: percentile(sorted, 0.5), p99: percentile(sorted, 0.99), p999: percentile(sorted, 0.999), max: sorted.at(-1) ?? NaN, mean },
  };
}
