// The open-loop generator the API benchmarks share (token-vault.ts, token-exchange.ts): requests go
// out on a fixed schedule whatever the server does, and each latency counts from when its request
// was due, so a stall is not hidden. Also the figures around it: percentiles, a process's CPU, and
// writing one marked section of bench/RESULTS.md (the other sections are kept).
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { log } from './common.js';

export interface RunResult {
  sent: number;
  ok: number;
  errors: Record<string, number>;
  seconds: number;
  latencyMs: { p50: number; p90: number; p99: number; p999: number; max: number; mean: number };
}

/** One request: ok, or the name its failure is counted under (a gRPC status, an OAuth error code) and a message for the log. */
export type Outcome = { ok: true } | { ok: false; error: string; message: string };

export function percentile(sorted: Float64Array, fraction: number): number {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(fraction * sorted.length) - 1))]!;
}

/** CPU seconds (user + system) of a process, from /proc. */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** Calls `call` `rate` times a second for `durationSeconds`, open loop; waits for the last answer. */
export async function drive(call: () => Promise<Outcome>, rate: number, durationSeconds: number): Promise<RunResult> {
  const latencies: number[] = [];
  const errors: Record<string, number> = {};
  let sent = 0;
  let ok = 0;
  const inFlight = new Set<Promise<void>>();
  const start = process.hrtime.bigint();
  const elapsedUs = () => Number(process.hrtime.bigint() - start) / 1000;
  const fire = (dueUs: number) => {
    sent += 1;
    const pending = call().then((outcome) => {
      latencies.push((elapsedUs() - dueUs) / 1000);
      if (outcome.ok) ok += 1;
      else {
        if (!errors[outcome.error]) log(`first ${outcome.error}: ${outcome.message}`);
        errors[outcome.error] = (errors[outcome.error] ?? 0) + 1;
      }
    });
    inFlight.add(pending);
    void pending.then(() => inFlight.delete(pending));
  };
  const intervalUs = 1_000_000 / rate;
  const durationUs = durationSeconds * 1_000_000;
  let next = 0;
  while (next < durationUs) {
    const now = elapsedUs();
    while (next <= now && next < durationUs) {
      fire(next);
      next += intervalUs;
    }
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
  await Promise.all(inFlight);
  const sorted = Float64Array.from(latencies).sort();
  return {
    sent,
    ok,
    errors,
    seconds: elapsedUs() / 1e6,
    latencyMs: {
      p50: percentile(sorted, 0.5),
      p90: percentile(sorted, 0.9),
      p99: percentile(sorted, 0.99),
      p999: percentile(sorted, 0.999),
      max: sorted.at(-1)!,
      mean: latencies.reduce((sum, value) => sum + value, 0) / Math.max(1, latencies.length),
    },
  };
}

/** Replaces the section between `start` and `end` in `file` (or appends it), keeping the others. */
export function writeSection(file: string, start: string, end: string, section: string): void {
  const current = existsSync(file) ? readFileSync(file, 'utf8') : '# Benchmark results\n';
  const startAt = current.indexOf(start);
  const endAt = current.indexOf(end);
  const next =
    startAt >= 0 && endAt > startAt ? `${current.slice(0, startAt)}${section}${current.slice(endAt + end.length)}` : `${current.trimEnd()}\n\n${section}\n`;
  writeFileSync(file, next);
}
