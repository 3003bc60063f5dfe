// Issue 25's targets ("Done means"), each with what the run measured and whether it is met: pure,
// from a run's Results (bench/report.ts), so test/unit/bench-targets.test.ts can hold it to what
// each row means. A row whose figures the run did not produce is "not measured" (met undefined),
// never met.
import type { Results, Target } from './report.js';
import type { LoadResult } from './load.js';
import type { RunResult } from './open-loop.js';

/** The figures a latency row compares: a run's percentiles and its failed calls. */
interface Percentiles {
  p50: number;
  p99: number;
  errors: number;
}

const GOALS = {
  getGrant500: { p50: 1.5, p99: 2 },
  getGrant1000: { p99: 3 },
  exchange500: { p50: 1.5, p99: 2 },
  cpuBeyondFloorMs: 0.1,
  observability200: { p50: 1.1, p99: 1.3 },
  peakRssMb: 100,
  settledRssMb: 90,
  settledWithinSeconds: 30,
  ceilingPerSecond: 6000,
  ceilingEnvoyWorkers: 4,
  restingRssMb: 70,
} as const;
export const ISSUE_25_GOALS = GOALS;

const finite = (value: number | undefined): value is number => value !== undefined && Number.isFinite(value);
const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor((values.length - 1) / 2)]!;
const f2 = (value: number) => value.toFixed(2);
const f3 = (value: number) => value.toFixed(3);
const errorCount = (run: RunResult) => Object.values(run.errors).reduce((sum, count) => sum + count, 0);

function fromRun(run: RunResult | undefined): Percentiles | undefined {
  if (!run || !finite(run.latencyMs.p50) || !finite(run.latencyMs.p99)) return undefined;
  return { p50: run.latencyMs.p50, p99: run.latencyMs.p99, errors: errorCount(run) };
}

/**
 * A latency row against a floor: each named percentile within limit × the floor's, and no failed
 * call. Undefined (not measured) when either side is missing.
 */
function againstFloor(
  measured: Percentiles | undefined,
  floor: Percentiles | undefined,
  limits: Partial<Record<'p50' | 'p99', number>>,
  unit: 'ms' | 'µs' = 'ms',
): { measured: string; met: boolean | undefined } {
  if (!measured || !floor) return { measured: '—', met: undefined };
  const scale = unit === 'µs' ? 1000 : 1;
  const parts: string[] = [];
  let met = measured.errors === 0;
  for (const percentile of ['p50', 'p99'] as const) {
    const limit = limits[percentile];
    if (limit === undefined) continue;
    const ratio = measured[percentile] / floor[percentile];
    const within = ratio <= limit;
    met &&= within;
    parts.push(
      `${percentile} ${f2(measured[percentile] / scale)} / ${f2(floor[percentile] / scale)} ms = ${f2(ratio)}x (${within ? 'within' : 'over'} ${limit}x)`,
    );
  }
  if (measured.errors > 0) parts.push(`${measured.errors} failed`);
  return { measured: parts.join(', '), met };
}

/** Issue 25's rows, in the issue's order. */
export function computeIssue25Targets(results: Results): Target[] {
  const targets: Target[] = [];
  const vaultRow = (server: 'sidecar' | 'floor', rate: number) => results.vault?.rows.find((row) => row.server === server && row.rate === rate)?.measured;

  const at500 = againstFloor(fromRun(vaultRow('sidecar', 500)), fromRun(vaultRow('floor', 500)), GOALS.getGrant500);
  targets.push({
    target: 'GetGrant at 500/s, durable audit, p50 / p99 vs the canned floor (bench/token-vault-echo.ts)',
    goal: 'p50 ≤ 1.5 × floor, p99 ≤ 2 × floor',
    ...at500,
  });
  const at1000 = againstFloor(fromRun(vaultRow('sidecar', 1000)), fromRun(vaultRow('floor', 1000)), GOALS.getGrant1000);
  targets.push({ target: 'GetGrant at 1,000/s, p99 vs the canned floor at 1,000/s', goal: 'p99 ≤ 3 × floor', ...at1000 });

  const exchange = results.exchange?.rows.find((row) => row.endpoint === 'exchange' && row.rate === 500)?.measured;
  targets.push({
    target: 'token exchange at 500/s, p50 / p99 vs the canned GetGrant floor at 500/s',
    goal: 'p50 ≤ 1.5 × floor, p99 ≤ 2 × floor',
    ...againstFloor(fromRun(exchange), fromRun(vaultRow('floor', 500)), GOALS.exchange500),
  });

  // CPU: the sidecar per capture (ceiling B at 1,000/s, until all are in Postgres) beyond the floor
  // server per ext_proc stream (B0's latency runs at 1,000/s).
  const sidecarMs = results.ceiling?.B?.find((step) => step.rate === 1000)?.sidecarCpuMsPerCapture;
  const floorRuns = results.latencyCpu?.['1000']?.B0?.filter(finite) ?? [];
  const floorMs = floorRuns.length ? median(floorRuns) : undefined;
  const cpuMeasured = finite(sidecarMs) && finite(floorMs);
  targets.push({
    target: 'sidecar CPU per capture at 1,000/s (B) beyond the floor server’s CPU per ext_proc stream (B0)',
    goal: `≤ ${GOALS.cpuBeyondFloorMs.toFixed(2)} ms`,
    measured: cpuMeasured ? `${f3(sidecarMs - floorMs)} ms (sidecar ${f3(sidecarMs)} ms per capture − floor ${f3(floorMs)} ms per stream)` : '—',
    met: cpuMeasured ? sidecarMs - floorMs <= GOALS.cpuBeyondFloorMs : undefined,
  });

  const latency200 = results.latency?.['200'];
  const latencyOf = (runs: LoadResult[] | undefined): Percentiles | undefined => {
    if (!runs?.length) return undefined;
    const p50 = median(runs.map((run) => run.latencyUs.p50));
    const p99 = median(runs.map((run) => run.latencyUs.p99));
    if (!finite(p50) || !finite(p99)) return undefined;
    return { p50, p99, errors: runs.reduce((sum, run) => sum + run.errors, 0) };
  };
  targets.push({
    target: 'observability at 200/s, p50 / p99, B / B0 (floor)',
    goal: '≤ 1.10 / ≤ 1.30',
    ...againstFloor(latencyOf(latency200?.B), latencyOf(latency200?.B0), GOALS.observability200, 'µs'),
  });

  const peaks = (['B', 'C'] as const).map((mode) => ({ mode, step: results.ceiling?.[mode]?.find((step) => step.rate === 1000) }));
  const settled = (['B', 'C'] as const).map((mode) => ({ mode, after: results.settledAfter1000?.[mode] }));
  const rssMeasured = peaks.every(({ step }) => step !== undefined) && settled.every(({ after }) => after !== undefined);
  targets.push({
    target: 'sidecar peak RSS at 1,000 captures/s (B / C), and 30 s after the load',
    goal: `≤ ${GOALS.peakRssMb} MB; ≤ ${GOALS.settledRssMb} MB within ${GOALS.settledWithinSeconds} s after`,
    measured: rssMeasured
      ? `peak ${peaks.map(({ step }) => `${step!.sidecarPeakRssMb}`).join(' / ')} MB; ${GOALS.settledWithinSeconds} s after: ${settled
          .map(({ after }) => `${after!.vmRssMb.toFixed(1)}`)
          .join(' / ')} MB (first ≤ ${GOALS.settledRssMb} MB at ${settled
          .map(({ after }) => (after!.firstWithinGoalSeconds === undefined ? 'never' : `${after!.firstWithinGoalSeconds} s`))
          .join(' / ')})`
      : '—',
    met: rssMeasured
      ? peaks.every(({ step }) => step!.sidecarPeakRssMb <= GOALS.peakRssMb) && settled.every(({ after }) => after!.firstWithinGoalSeconds !== undefined)
      : undefined,
  });

  const ceiling = results.growth?.find((step) => step.envoyWorkers === GOALS.ceilingEnvoyWorkers);
  const alone = results.growthEnvoyAlone;
  const offered = ceiling
    ? ceiling.requestsPerSecond < GOALS.ceilingPerSecond
      ? `; the closed loop (32 connections) offered only ${ceiling.requestsPerSecond} req/s${alone ? `, Envoy alone at ${alone.envoyWorkers} workers ${alone.requestsPerSecond} req/s` : ''}`
      : ''
    : '';
  targets.push({
    target: `ceiling, captures/s with 0 lost, all in Postgres, ${GOALS.ceilingEnvoyWorkers} Envoy workers (closed loop, observability)`,
    goal: '≥ 6,000/s, 0 lost',
    measured: ceiling ? `${ceiling.capturesPerSecond} captures/s of ${ceiling.requestsPerSecond} req/s, lost ${ceiling.lost}${offered}` : '—',
    met: ceiling ? ceiling.capturesPerSecond >= GOALS.ceilingPerSecond && ceiling.lost === 0 : undefined,
  });

  const resting = results.memory?.flagless;
  targets.push({
    target: 'RSS at rest as `npx token-tap serve` runs it (bin/token-tap.js serve executed, no NODE_OPTIONS; median of 3)',
    goal: `≤ ${GOALS.restingRssMb} MB`,
    measured: resting
      ? `${resting.median.vmRssMb.toFixed(1)} MB (RssAnon ${resting.median.rssAnonMb.toFixed(1)}, RssFile ${resting.median.rssFileMb.toFixed(1)})`
      : '—',
    met: resting && finite(resting.median.vmRssMb) ? resting.median.vmRssMb <= GOALS.restingRssMb : undefined,
  });
  return targets;
}
