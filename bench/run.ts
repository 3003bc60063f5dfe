// The benchmark: what the sidecar adds to a token call, and how far it scales, against issue 25's
// and 14's targets. Starts a stub IdP, Postgres (the machine's), the sidecar, a do-nothing ext_proc floor
// server and five Envoys (A: no ext_proc, B: observability, C: buffered; B0 and C0: B and C with
// the floor server in place of the sidecar), all on loopback, and writes the "Envoy + sidecar"
// section of bench/RESULTS.md (the other sections are kept).
//   npm run bench              (about 24 minutes on the 2-core bench machine, latency 8 and callgrind 5 of them; each
//                               phase's time is logged and written to RESULTS.md)
//   npm run bench -- --quick   (about 6 minutes: 1 round, 4 s runs, fewer ceiling steps; a smoke check)
// Phases (--phases, comma-separated, in this order whatever the order given):
//   memory    3 fresh sidecars in the default config (TokenVault API on; only DATABASE_URL, keys,
//             ports and spool dir set, no TOKEN_TAP_*, LOG_LEVEL or NODE_OPTIONS inherited), each
//             idle 5 s after ready: VmRSS, RssAnon, RssFile (median of 3); bare `node -e` for scale;
//             then 3 more as `npx token-tap serve` runs it: the bin executed, no NODE_OPTIONS (issue 25's row)
//   startup   5 fresh sidecars, spawn to ready
//   latency   open loop at each of --rates: A, B, C, B0, C0 interleaved, --rounds rounds of --seconds;
//             the CPU of the process behind each Envoy per request (sidecar for B, C; floor for B0, C0)
//   idp80     the same at 200/s through a second stub IdP that answers after 80 ms (an IdP across the
//             internet): Envoys A80, B80, C80, what a login really pays
//   ceiling   open loop, B then C, rising rates until a step fails, loses or falls behind: every
//             capture counted in Postgres, the sidecar's CPU and peak RSS; after the 1,000/s step, its
//             RSS each second for 30 s; after the last step, its RSS settled
//   growth    closed loop through Envoys of 1, 2 and 4 workers (observability), and Envoy alone at 4
//   vault     bench/token-vault.ts's measureGetGrant: GetGrant at 500 and 1,000/s on a fresh sidecar
//             and on the canned-answer floor (15 s runs after 5 s warm-up; --quick 4 s after 2 s):
//             the "TokenVault GetGrant" section of RESULTS.md
//   exchange  bench/token-exchange.ts in its own process (with --quick: 5 s runs), the token exchange
//             at 250 and 500/s against the GetGrant floor: its own section of RESULTS.md; its rows
//             come back through --json for issue 25's row (against the vault phase's canned floor)
//   instructions  bench/instruction-counts.ts's measureInstructions (callgrind): instructions per op beside the floors
// Flags: --quick  --rates 200,1000,3000  --rounds N  --seconds S  --phases ...  --dry-run (do not
// rewrite RESULTS.md; still measures every phase)  --keep-db  --extproc-thread (the load sidecar with TOKEN_TAP_EXTPROC_THREAD=true).
// Ends with one log line per target, `target goal | measured | met/missed`: issue 25's (bench/targets.ts),
// then issue 14's (bench/report.ts), e.g. after
//   node dist/bench/run.js --quick --rates 200,1000 --rounds 1 --phases memory,latency,ceiling --dry-run
// The sidecar runs as `node SERVE_NODE_FLAGS (src/ops/node-flags.ts) BENCH_SIDECAR_NODE_ARGS CLI serve`.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { tokenRoutePath } from '../src/contract.js';
import { startEnvoy, type RunningEnvoy } from '../src/ops/envoy-process.js';
import { SERVE_NODE_FLAGS } from '../src/ops/node-flags.js';
import { waitFor } from '../src/lib/wait-for.js';
import { generateKeySpec } from '../src/keys/key-ring.js';
import { createTestDatabase, type TestDatabase } from '../test/support/postgres.js';
import { freePort, freePorts } from '../test/support/ports.js';
import { runLoad, type LoadResult } from './load.js';
import { log } from './common.js';
import { envoyYaml, REQUEST, spawnNode, spawnProgram, startStubIdp } from './envoy-scenarios.js';
import { INSTRUCTION_COLUMNS, instructionRows, measureInstructions, writeInstructionsSection } from './instruction-counts.js';
import {
  computeTargets,
  renderResults,
  type CeilingStep,
  type ProcessMemory,
  type RestingMemory,
  type Results,
  type Scenario,
  type SettledAfterLoad,
  type SlowScenario,
  type Target,
} from './report.js';
import { computeIssue25Targets, ISSUE_25_GOALS } from './targets.js';
import type { ExchangeRow } from './token-exchange.js';
import { measureGetGrant, vaultMeta, writeVaultResults, type VaultOptions } from './token-vault.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const CLI = path.join(ROOT, 'bin/token-tap.js');
const RESULTS_DIR = path.join(ROOT, 'bench/results');
const PHASES = ['memory', 'startup', 'latency', 'idp80', 'ceiling', 'growth', 'vault', 'exchange', 'instructions'] as const;

const { values: flags } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    rates: { type: 'string', default: '200,1000,3000' },
    rounds: { type: 'string' },
    seconds: { type: 'string' },
    phases: { type: 'string', default: PHASES.join(',') },
    'dry-run': { type: 'boolean', default: false },
    /** Keep the bench database (its name is printed) to look at the rows afterwards. */
    'keep-db': { type: 'boolean', default: false },
    /** The load sidecar serves ext_proc on a thread of its own (TOKEN_TAP_EXTPROC_THREAD=true). */
    'extproc-thread': { type: 'boolean', default: false },
  },
});
const quick = flags.quick!;
const rates = flags.rates!.split(',').map(Number);
const rounds = Number(flags.rounds ?? (quick ? 1 : 3));
const seconds = Number(flags.seconds ?? (quick ? 4 : 10));
const phases = new Set(flags.phases!.split(',').filter(Boolean));
for (const phase of phases) {
  if (!(PHASES as readonly string[]).includes(phase)) throw new Error(`unknown phase "${phase}": the phases are ${PHASES.join(', ')}`);
}

/** How this run was started, as RESULTS.md names it. */
const BENCH_COMMAND = process.argv.length > 2 ? `npm run bench -- ${process.argv.slice(2).join(' ')}` : 'npm run bench';
const SCENARIO_ORDER: Scenario[] = ['A', 'B', 'C', 'B0', 'C0'];
/** B0 and C0 are B and C with the floor server (bench/extproc-floor.ts) in place of the sidecar. */
const FLOOR_OF: Partial<Record<Scenario, Scenario>> = { B0: 'B', C0: 'C' };
/** The realistic-upstream scenario: Envoys A, B and C in front of a stub IdP that answers after 80 ms. */
const SLOW_IDP_DELAY_MS = 80;
const SLOW_IDP_RATE = 200;
const SLOW_ORDER: SlowScenario[] = ['A80', 'B80', 'C80'];
const SLOW_BASE: Record<SlowScenario, Scenario> = { A80: 'A', B80: 'B', C80: 'C' };
/** Idle time before memory is read, after ready (memory phase) and after the load (ceiling phase). */
const IDLE_MS = 5_000;
/**
 * Keep-alive connections of the open-loop generator: a request finding all busy waits, and that
 * wait counts in its latency. 64 is 4 times what 200/s through an 80 ms IdP keeps in flight (16);
 * each run's maxInFlight is logged.
 */
const OPEN_LOOP_CONNECTIONS = 64;
/** How the bench starts `token-tap serve`: the flags serve runs with everywhere, then any of the bench's own. */
const SIDECAR_NODE_ARGS = [
  ...SERVE_NODE_FLAGS,
  // For profiling: BENCH_SIDECAR_NODE_ARGS="--cpu-prof --cpu-prof-dir=bench/results"
  ...(process.env.BENCH_SIDECAR_NODE_ARGS?.split(' ').filter(Boolean) ?? []),
];

const sleep = (milliseconds: number) => new Promise((resolve) => setTimeout(resolve, milliseconds));

/** The growth phase's load: as many token calls as 32 connections make through the Envoy on `listen`, for a run's seconds. */
function closedLoop(listen: number): Promise<LoadResult> {
  return runLoad({ origin: `http://127.0.0.1:${listen}`, path: tokenRoutePath('bench'), ...REQUEST, rate: 0, durationMs: seconds * 1000, connections: 32 });
}

/** The bench's environment without anything that would change how serve runs: for the default-config sidecar. */
function neutralEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [name, value] of Object.entries(process.env)) {
    if (value === undefined || name.startsWith('TOKEN_TAP_') || name === 'LOG_LEVEL' || name === 'NODE_OPTIONS') continue;
    env[name] = value;
  }
  return env;
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  await exited;
}

/** CPU seconds (user + system) and RSS bytes of a process, from /proc. */
function processUsage(pid: number): { cpuSeconds: number; systemSeconds: number; rssBytes: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]);
  const rssPages = Number(fields[21]);
  return { cpuSeconds: ticks / 100, systemSeconds: Number(fields[12]) / 100, rssBytes: rssPages * 4096 };
}

/**
 * Resident memory from /proc/PID/status, in MB (MiB): VmRSS = RssAnon (heaps, stacks: the
 * process's own) + RssFile (mapped files, mostly the node binary's pages, shared with every node
 * process) + RssShmem.
 */
function processMemory(pid: number): ProcessMemory {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const mb = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB$`, 'm').exec(status)?.[1] ?? NaN) / 1024;
  return { vmRssMb: mb('VmRSS'), rssAnonMb: mb('RssAnon'), rssFileMb: mb('RssFile'), rssShmemMb: mb('RssShmem') };
}

const medianBy = <T>(values: T[], key: (value: T) => number): T => [...values].sort((a, b) => key(a) - key(b))[Math.floor((values.length - 1) / 2)]!;
const mbText = (memory: ProcessMemory) =>
  `VmRSS ${memory.vmRssMb.toFixed(1)} MB (RssAnon ${memory.rssAnonMb.toFixed(1)}, RssFile ${memory.rssFileMb.toFixed(1)}, RssShmem ${memory.rssShmemMb.toFixed(1)})`;

async function tcpAccepts(port: number): Promise<true | undefined> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(undefined));
  });
}

/**
 * Spawns `token-tap serve` and waits for ext_proc's "ready" log line (and, with apiPort, for the
 * TokenVault API to accept connections). inheritEnv false: `env` is all it gets (with neutralEnv()).
 */
async function startSidecar(
  port: number,
  env: Record<string, string>,
  logFile: string,
  options: { apiPort?: number; inheritEnv?: boolean; nodeArgs?: readonly string[] | 'as-a-program' } = {},
): Promise<{ child: ChildProcess; readyMs: number }> {
  const started = process.hrtime.bigint();
  const nodeArgs = options.nodeArgs ?? SIDECAR_NODE_ARGS;
  const serveArgs = ['serve', '--listen', `127.0.0.1:${port}`];
  const inheritEnv = options.inheritEnv ?? true;
  // 'as-a-program': the bin executed itself, as npm's .bin link is (`npx token-tap serve`): its #!
  // line and sh line pick the node and its flags (the same PID: sh execs node).
  const child =
    nodeArgs === 'as-a-program'
      ? spawnProgram(CLI, serveArgs, env, logFile, inheritEnv)
      : spawnNode([...nodeArgs, CLI, ...serveArgs], env, logFile, inheritEnv);
  const exited = () => child.exitCode !== null || child.signalCode !== null;
  await waitFor(
    'the sidecar',
    async () => {
      if (exited()) throw new Error(`it exited (${child.exitCode ?? child.signalCode}); see ${logFile}`);
      return readFileSync(logFile, 'utf8').includes(`"listen":"127.0.0.1:${port}"`) ? true : undefined;
    },
    15_000,
    5,
  );
  if (options.apiPort !== undefined) await waitFor("the sidecar's TokenVault API", () => tcpAccepts(options.apiPort!), 15_000, 5);
  return { child, readyMs: Number(process.hrtime.bigint() - started) / 1e6 };
}

async function countEvents(db: TestDatabase): Promise<number> {
  const { rows } = await db.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM capture_events');
  return rows[0]!.n;
}

async function settledEvents(db: TestDatabase, expected: number, timeoutMs: number): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  let last = -1;
  let stableSince = Date.now();
  for (;;) {
    const count = await countEvents(db);
    if (count >= expected) return count;
    if (count !== last) {
      last = count;
      stableSince = Date.now();
    }
    if (Date.now() > deadline || Date.now() - stableSince > 5_000) return count;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** The event count once it has not moved for a second: captures of the step before are all in. */
async function quietEvents(db: TestDatabase): Promise<number> {
  let last = await countEvents(db);
  for (;;) {
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    const count = await countEvents(db);
    if (count === last) return count;
    last = count;
  }
}

/**
 * Envoy's own count of ext_proc streams it gave up on during a step: why a capture can be missing.
 * Not upstream_cx_protocol_error: Envoy 1.40 counts there each sidecar connection it drains itself
 * after max_requests_per_connection (upstream_cx_max_requests), a close, not a fault
 * (docs/envoy-stats.md); test/e2e/many-streams.test.ts holds it to at most one per drained connection.
 */
function envoyMissDeltas(before: Map<string, number>, after: Map<string, number>): Record<string, number> {
  const misses: Record<string, number> = {};
  for (const [name, value] of after) {
    const interesting =
      /ext_proc\.token_tap\./.test(name) ||
      (/token_tap_sidecar/.test(name) &&
        /upstream_rq_total|overflow|cx_connect_fail|rq_timeout|cx_total|cx_destroy|goaway|rx_reset|http2\./.test(name) &&
        !/tx_reset/.test(name));
    if (!interesting) continue;
    const delta = value - (before.get(name) ?? 0);
    if (delta > 0) misses[name] = delta;
  }
  return misses;
}

const ms = (us: number) => (us / 1000).toFixed(3);
const runLine = (result: LoadResult) =>
  `p50 ${ms(result.latencyUs.p50)} ms, p99 ${ms(result.latencyUs.p99)} ms, p99.9 ${ms(result.latencyUs.p999)} ms, errors ${result.errors}/${result.sent}, at most ${result.maxInFlight} in flight`;

async function main(): Promise<void> {
  const benchStarted = Date.now();
  mkdirSync(RESULTS_DIR, { recursive: true });
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const logFile = (name: string) => path.join(RESULTS_DIR, `${stamp}-${name}.log`);
  const results: Results = {};
  const phaseSeconds: Record<string, number> = {};
  const timed = async (phase: (typeof PHASES)[number], run: () => Promise<void>): Promise<void> => {
    if (!phases.has(phase)) return;
    const started = Date.now();
    log(`phase ${phase}`);
    await run();
    phaseSeconds[phase] = Math.round((Date.now() - started) / 1000);
    log(`phase ${phase} took ${phaseSeconds[phase]} s`);
  };
  const stubIdp = await startStubIdp(logFile('stub-idp'));
  const db = await createTestDatabase('bench');
  const opsPort = await freePort();
  const keys = generateKeySpec('bench1');
  const sidecarEnv: Record<string, string> = {
    DATABASE_URL: db.url,
    TOKEN_TAP_KEYS: keys,
    LOG_LEVEL: 'info',
    TOKEN_TAP_OPS_LISTEN: `127.0.0.1:${opsPort}`,
    TOKEN_TAP_API_LISTEN: 'off',
    // Format 3 (session keys): the format the next release seals by default; this one seals format 2
    // unless it is set (docs/upgrading.md). bench/RESULTS.md has the difference.
    TOKEN_TAP_SEAL_FORMAT: process.env.TOKEN_TAP_SEAL_FORMAT ?? '3',
    ...(flags['extproc-thread'] ? { TOKEN_TAP_EXTPROC_THREAD: 'true' } : {}),
  };
  const sidecarCounter = async (name: string): Promise<number> => {
    const text = await (await fetch(`http://127.0.0.1:${opsPort}/metrics`)).text();
    return Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? 0);
  };
  const sidecarPort = await freePort();
  const children: ChildProcess[] = [stubIdp.child];
  const envoys: RunningEnvoy[] = [];
  try {
    // A first start migrates the schema; the phases below start against a migrated database.
    const first = await startSidecar(sidecarPort, sidecarEnv, logFile('sidecar-startup'));
    await stopChild(first.child);

    /** 3 fresh sidecars started with `nodeArgs` in the default config, each idle IDLE_MS after ready: their memory, and the median. */
    const restingMemory = async (nodeArgs: readonly string[] | 'as-a-program', label: string): Promise<RestingMemory> => {
      const starts: Array<ProcessMemory & { readyMs: number }> = [];
      for (let attempt = 0; attempt < 3; attempt += 1) {
        const [port, ops, api] = await freePorts(3);
        const spoolDir = mkdtempSync(path.join(os.tmpdir(), 'token-tap-bench-spool-'));
        const env = {
          ...neutralEnv(),
          DATABASE_URL: db.url,
          TOKEN_TAP_KEYS: keys,
          TOKEN_TAP_OPS_LISTEN: `127.0.0.1:${ops}`,
          TOKEN_TAP_API_LISTEN: `127.0.0.1:${api}`,
          TOKEN_TAP_SPOOL_DIR: spoolDir,
        };
        const started = await startSidecar(port, env, logFile(`sidecar-memory-${label}-${attempt}`), { apiPort: api, inheritEnv: false, nodeArgs });
        try {
          await sleep(IDLE_MS);
          const memory = processMemory(started.child.pid!);
          starts.push({ ...memory, readyMs: started.readyMs });
          log(`at rest (${label}), start ${attempt + 1}: ${mbText(memory)}, ready in ${started.readyMs.toFixed(0)} ms`);
        } finally {
          await stopChild(started.child);
          rmSync(spoolDir, { recursive: true, force: true });
        }
      }
      const args = nodeArgs === 'as-a-program' ? [...SERVE_NODE_FLAGS] : [...nodeArgs];
      return { nodeArgs: args, starts, median: medianBy(starts, (start) => start.vmRssMb) };
    };

    await timed('memory', async () => {
      // At rest in the default config: a fresh process each time, ready, idle; median of 3 starts.
      // First as the bench's load sidecar starts (the Dockerfile's node flags), then as `npx
      // token-tap serve` does: bin/token-tap.js executed itself (its sh line execs node with
      // serve's flags), no NODE_OPTIONS, nothing on the command line but serve's own arguments.
      const { starts, median } = await restingMemory(SIDECAR_NODE_ARGS, 'serve-flags');
      const flagless = await restingMemory('as-a-program', 'as-npx-runs-it');
      // For scale: node itself, idle, on this machine (three at once, median).
      const bare = Array.from({ length: 3 }, () => spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { env: neutralEnv(), stdio: 'ignore' }));
      let bareNode: ProcessMemory[];
      try {
        await sleep(IDLE_MS);
        bareNode = bare.map((child) => processMemory(child.pid!));
      } finally {
        for (const child of bare) await stopChild(child);
      }
      const bareMedian = medianBy(bareNode, (memory) => memory.vmRssMb);
      results.memory = { idleMs: IDLE_MS, nodeArgs: [...SIDECAR_NODE_ARGS], starts, median, bareNode: bareMedian, flagless };
      log(
        `at rest (median of 3): ${mbText(median)}; as npx runs it (bin executed, no NODE_OPTIONS): ${mbText(flagless.median)}; bare node -e: ${mbText(bareMedian)}`,
      );
    });

    await timed('startup', async () => {
      // Start to ready: a fresh process each time, against an already-migrated database.
      const readyMs: number[] = [];
      for (let attempt = 0; attempt < 5; attempt += 1) {
        const port = await freePort();
        const started = await startSidecar(port, sidecarEnv, logFile(`sidecar-startup-${attempt}`));
        readyMs.push(started.readyMs);
        await stopChild(started.child);
      }
      readyMs.sort((a, b) => a - b);
      results.startup = { readyMs, medianMs: readyMs[2]! };
      log(`start to ready: median ${readyMs[2]!.toFixed(0)} ms (${readyMs.map((value) => value.toFixed(0)).join(', ')})`);
    });

    const sidecar = await startSidecar(sidecarPort, sidecarEnv, logFile('sidecar'));
    children.push(sidecar.child);
    const floorPort = await freePort();
    const floorLog = logFile('extproc-floor');
    const floor = spawnNode([path.join(ROOT, 'dist/bench/extproc-floor.js'), String(floorPort)], {}, floorLog);
    children.push(floor);
    await waitFor(
      'the ext_proc floor server',
      async () => (readFileSync(floorLog, 'utf8').includes(`"listen":"127.0.0.1:${floorPort}"`) ? true : undefined),
      15_000,
      5,
    );
    const ports: Record<Scenario, number> = { A: 0, B: 0, C: 0, B0: 0, C0: 0 };
    const envoyOf = {} as Record<Scenario, RunningEnvoy>;
    for (const scenario of SCENARIO_ORDER) {
      const [listen, admin] = await freePorts(2);
      envoyOf[scenario] = await startEnvoy(envoyYaml(scenario, stubIdp.port, listen, FLOOR_OF[scenario] ? floorPort : sidecarPort, admin), admin);
      envoys.push(envoyOf[scenario]);
      ports[scenario] = listen;
    }
    const driveAt = (port: number, rate: number, durationMs: number, connections = OPEN_LOOP_CONNECTIONS): Promise<LoadResult> =>
      runLoad({ origin: `http://127.0.0.1:${port}`, path: tokenRoutePath('bench'), ...REQUEST, rate, durationMs, connections });
    const drive = (scenario: Scenario, rate: number, durationMs: number, connections?: number) => driveAt(ports[scenario], rate, durationMs, connections);

    log('warming up');
    for (const scenario of SCENARIO_ORDER) await drive(scenario, 500, 2_000);
    // Every Envoy but A must have opened ext_proc streams in the warm-up: one whose ext_proc server
    // is unhealthy to it fails open without a stream, and its figures would be Envoy's alone.
    for (const scenario of SCENARIO_ORDER.filter((name) => name !== 'A')) {
      const stats = await envoyOf[scenario].stats();
      const started = [...stats].find(([name]) => name.endsWith('ext_proc.token_tap.streams_started'))?.[1] ?? 0;
      if (started === 0) throw new Error(`Envoy ${scenario} opened no ext_proc stream in the warm-up: its ext_proc server is not serving (health check)`);
    }

    await timed('latency', async () => {
      const latency: NonNullable<Results['latency']> = {};
      const latencyCpu: NonNullable<Results['latencyCpu']> = {};
      // The process behind each Envoy but A: its CPU per request (for B and C, captures still being
      // written when the run ends are the next run's CPU; the ceiling phase counts until all are stored).
      const serverPid: Partial<Record<Scenario, number>> = { B: sidecar.child.pid!, C: sidecar.child.pid!, B0: floor.pid!, C0: floor.pid! };
      for (const rate of rates) {
        latency[rate] = { A: [], B: [], C: [], B0: [], C0: [] };
        latencyCpu[rate] = { B: [], C: [], B0: [], C0: [] };
        for (let round = 0; round < rounds; round += 1) {
          // Interleaved, in a different order each round, so drift of the machine cancels out.
          const order = [...SCENARIO_ORDER].sort(() => Math.random() - 0.5);
          for (const scenario of order) {
            const pid = serverPid[scenario];
            const cpuBefore = pid === undefined ? 0 : processUsage(pid).cpuSeconds;
            const result = await drive(scenario, rate, seconds * 1000);
            let cpuText = '';
            if (pid !== undefined) {
              const msPerRequest = (1000 * (processUsage(pid).cpuSeconds - cpuBefore)) / Math.max(1, result.ok);
              latencyCpu[rate]![scenario]!.push(msPerRequest);
              cpuText = `, ${scenario.endsWith('0') ? 'floor' : 'sidecar'} CPU ${msPerRequest.toFixed(3)} ms per request`;
            }
            latency[rate]![scenario].push(result);
            log(`${rate}/s ${scenario} round ${round + 1}: ${runLine(result)}${cpuText}`);
          }
        }
      }
      results.latency = latency;
      results.latencyCpu = latencyCpu;
    });

    await timed('idp80', async () => {
      // What a login really pays: the IdP's token endpoint is across the internet, not on loopback.
      const slowIdp = await startStubIdp(logFile('stub-idp-80ms'), SLOW_IDP_DELAY_MS);
      children.push(slowIdp.child);
      const slowPorts = {} as Record<SlowScenario, number>;
      const slowEnvoys: RunningEnvoy[] = [];
      try {
        for (const scenario of SLOW_ORDER) {
          const [listen, admin] = await freePorts(2);
          slowEnvoys.push(await startEnvoy(envoyYaml(SLOW_BASE[scenario], slowIdp.port, listen, sidecarPort, admin), admin));
          slowPorts[scenario] = listen;
        }
        for (const scenario of SLOW_ORDER) await driveAt(slowPorts[scenario], SLOW_IDP_RATE, 1_000);
        const runs: Record<SlowScenario, LoadResult[]> = { A80: [], B80: [], C80: [] };
        for (let round = 0; round < rounds; round += 1) {
          const order = [...SLOW_ORDER].sort(() => Math.random() - 0.5);
          for (const scenario of order) {
            const result = await driveAt(slowPorts[scenario], SLOW_IDP_RATE, seconds * 1000);
            runs[scenario].push(result);
            log(`${SLOW_IDP_RATE}/s ${scenario} (IdP answers after ${SLOW_IDP_DELAY_MS} ms) round ${round + 1}: ${runLine(result)}`);
          }
        }
        results.idp80 = { delayMs: SLOW_IDP_DELAY_MS, rate: SLOW_IDP_RATE, connections: OPEN_LOOP_CONNECTIONS, runs };
      } finally {
        for (const envoy of slowEnvoys) await envoy.stop();
        await stopChild(slowIdp.child);
      }
    });

    await timed('ceiling', async () => {
      const ceiling: NonNullable<Results['ceiling']> = {};
      const settledRss: Record<string, ProcessMemory> = {};
      const settledAfter1000: Record<string, SettledAfterLoad> = {};
      for (const scenario of ['B', 'C'] as Scenario[]) {
        ceiling[scenario] = [];
        for (const rate of quick ? [1000, 3000, 5000] : [1000, 2000, 3000, 4000, 5000, 6000, 8000]) {
          const before = await quietEvents(db);
          const envoyBefore = await envoyOf[scenario].stats();
          const incompleteBefore = await sidecarCounter('token_tap_extproc_streams_incomplete_total');
          const spooledBefore = await sidecarCounter('token_tap_spool_captures_total');
          const streamsBefore = await sidecarCounter('token_tap_extproc_streams_total');
          const usageBefore = processUsage(sidecar.child.pid!);
          let peakRss = usageBefore.rssBytes;
          const sampler = setInterval(() => {
            peakRss = Math.max(peakRss, processUsage(sidecar.child.pid!).rssBytes);
          }, 250);
          const result = await drive(scenario, rate, seconds * 1000, 128);
          const loadEnded = Date.now();
          const stored = (await settledEvents(db, before + result.ok, 30_000)) - before;
          clearInterval(sampler);
          const usageAfter = processUsage(sidecar.child.pid!);
          const envoyMisses = envoyMissDeltas(envoyBefore, await envoyOf[scenario].stats());
          const sidecarIncomplete = (await sidecarCounter('token_tap_extproc_streams_incomplete_total')) - incompleteBefore;
          const sidecarSpooled = (await sidecarCounter('token_tap_spool_captures_total')) - spooledBefore;
          const sidecarStreams = (await sidecarCounter('token_tap_extproc_streams_total')) - streamsBefore;
          const streamsOpen = await sidecarCounter('token_tap_extproc_streams_open');
          // Where the sidecar's memory is after the step (prom-client's default process metrics).
          const mb = async (name: string) => ((await sidecarCounter(name)) / 1048576).toFixed(1);
          log(
            `  sidecar CPU in ${scenario} ${rate}/s: ${(usageAfter.cpuSeconds - usageBefore.cpuSeconds).toFixed(2)} s, of which kernel ${(usageAfter.systemSeconds - usageBefore.systemSeconds).toFixed(2)} s, ${((1000 * (usageAfter.cpuSeconds - usageBefore.cpuSeconds)) / Math.max(1, stored)).toFixed(3)} ms per capture`,
          );
          log(
            `  sidecar memory after ${scenario} ${rate}/s: heap used ${await mb('token_tap_nodejs_heap_size_used_bytes')} of ${await mb('token_tap_nodejs_heap_size_total_bytes')} MB, external ${await mb('token_tap_nodejs_external_memory_bytes')} MB, RSS ${await mb('token_tap_process_resident_memory_bytes')} MB`,
          );
          const achieved = result.ok / result.seconds;
          const step: CeilingStep = {
            rate,
            achievedPerSecond: Math.round(achieved),
            ok: result.ok,
            errors: result.errors,
            stored,
            lost: result.ok - stored,
            sidecarCpuPercent: Math.round((100 * (usageAfter.cpuSeconds - usageBefore.cpuSeconds)) / result.seconds),
            sidecarPeakRssMb: Math.round(peakRss / 1024 / 1024),
            p99Ms: Number(ms(result.latencyUs.p99)),
            envoyMisses,
            sidecarIncomplete,
            sidecarSpooled,
            sidecarStreams,
            sidecarCpuMsPerCapture: Number(((1000 * (usageAfter.cpuSeconds - usageBefore.cpuSeconds)) / Math.max(1, stored)).toFixed(3)),
          };
          ceiling[scenario]!.push(step);
          log(
            `ceiling ${scenario} ${rate}/s: achieved ${step.achievedPerSecond}/s, errors ${step.errors}, stored ${stored}/${result.ok}, sidecar CPU ${step.sidecarCpuPercent}%, RSS ${step.sidecarPeakRssMb} MB; streams seen ${sidecarStreams} (open now ${streamsOpen}), spooled ${sidecarSpooled}, streams Envoy cut short ${sidecarIncomplete}; Envoy ${JSON.stringify(envoyMisses)}`,
          );
          if (rate === 1000) {
            // Issue 25: RSS back under its settled goal within 30 s of a 1,000/s load: sampled each second.
            let firstWithinGoalSeconds: number | undefined;
            let last = processMemory(sidecar.child.pid!);
            for (;;) {
              const afterSeconds = Math.round((Date.now() - loadEnded) / 1000);
              last = processMemory(sidecar.child.pid!);
              if (firstWithinGoalSeconds === undefined && last.vmRssMb <= ISSUE_25_GOALS.settledRssMb) firstWithinGoalSeconds = afterSeconds;
              if (Date.now() - loadEnded >= ISSUE_25_GOALS.settledWithinSeconds * 1000) {
                settledAfter1000[scenario] = { afterSeconds, vmRssMb: last.vmRssMb, firstWithinGoalSeconds };
                break;
              }
              await sleep(1_000);
            }
            log(
              `ceiling ${scenario} 1000/s: RSS ${settledAfter1000[scenario]!.afterSeconds} s after the load ${mbText(last)}; first ≤ ${ISSUE_25_GOALS.settledRssMb} MB ${firstWithinGoalSeconds === undefined ? 'never' : `${firstWithinGoalSeconds} s after`}`,
            );
          }
          if (step.errors > 0 || step.lost > 0 || achieved < rate * 0.9) break;
        }
        // After the load: every capture stored, then idle, as at rest.
        await quietEvents(db);
        await sleep(IDLE_MS);
        settledRss[scenario] = processMemory(sidecar.child.pid!);
        log(`ceiling ${scenario}: RSS settled after the load: ${mbText(settledRss[scenario]!)}`);
      }
      const { rows } = await db.pool.query<{ grants: string; events: string; n_grants: number; n_events: number }>(
        `SELECT pg_total_relation_size('grants') AS grants, pg_total_relation_size('capture_events') AS events,
                (SELECT count(*)::int FROM grants) AS n_grants, (SELECT count(*)::int FROM capture_events) AS n_events`,
      );
      const sizes = rows[0]!;
      results.ceiling = ceiling;
      results.settledRss = settledRss;
      results.settledAfter1000 = settledAfter1000;
      results.storage = {
        bytesPerGrant: Math.round(Number(sizes.grants) / Math.max(1, sizes.n_grants)),
        bytesPerEvent: Math.round(Number(sizes.events) / Math.max(1, sizes.n_events)),
        grants: sizes.n_grants,
        events: sizes.n_events,
      };
      log(`storage: ${JSON.stringify(results.storage)}`);
    });

    await timed('growth', async () => {
      const growth: NonNullable<Results['growth']> = [];
      for (const workers of [1, 2, 4]) {
        const [listen, admin] = await freePorts(2);
        const envoy = await startEnvoy(envoyYaml('B', stubIdp.port, listen, sidecarPort, admin), admin, { concurrency: workers });
        try {
          const before = await quietEvents(db);
          const usageBefore = processUsage(sidecar.child.pid!);
          const result = await closedLoop(listen);
          const stored = (await settledEvents(db, before + result.ok, 30_000)) - before;
          const usageAfter = processUsage(sidecar.child.pid!);
          const cpu = usageAfter.cpuSeconds - usageBefore.cpuSeconds;
          const step = {
            envoyWorkers: workers,
            requestsPerSecond: Math.round(result.ok / result.seconds),
            capturesPerSecond: Math.round(stored / result.seconds),
            lost: result.ok - stored,
            sidecarCpuPercent: Math.round((100 * cpu) / result.seconds),
            sidecarCpuMsPerCapture: Number(((1000 * cpu) / Math.max(1, stored)).toFixed(3)),
          };
          growth.push(step);
          log(
            `growth ${workers} Envoy workers: ${step.requestsPerSecond} req/s, ${step.capturesPerSecond} captures/s, lost ${step.lost}, sidecar CPU ${step.sidecarCpuPercent}% (${step.sidecarCpuMsPerCapture} ms per capture)`,
          );
        } finally {
          await envoy.stop();
        }
      }
      results.growth = growth;
      // What the machine and the closed loop offer at 4 workers without the sidecar: Envoy alone (A).
      const [listen, admin] = await freePorts(2);
      const alone = await startEnvoy(envoyYaml('A', stubIdp.port, listen, sidecarPort, admin), admin, { concurrency: 4 });
      try {
        const result = await closedLoop(listen);
        results.growthEnvoyAlone = { envoyWorkers: 4, requestsPerSecond: Math.round(result.ok / result.seconds) };
        log(`growth 4 Envoy workers, Envoy alone (no ext_proc): ${results.growthEnvoyAlone.requestsPerSecond} req/s, errors ${result.errors}`);
      } finally {
        await alone.stop();
      }
    });
  } finally {
    for (const envoy of envoys) await envoy.stop();
    for (const child of children.reverse()) await stopChild(child);
    if (flags['keep-db']) log(`kept database ${db.name}`);
    else await db.drop();
  }
  // Alone on the machine: its own sidecar, floor server, Postgres database and section of RESULTS.md.
  await timed('vault', async () => {
    const options: VaultOptions = {
      rates: [500, 1000],
      seconds: quick ? 4 : 15,
      warmupSeconds: quick ? 2 : 5,
      grantCount: 1000,
      channelCount: 2,
      skipFloor: false,
      logPrefix: path.join(RESULTS_DIR, `${stamp}-token-vault`),
    };
    const run = await measureGetGrant(options);
    results.vault = { seconds: options.seconds, warmupSeconds: options.warmupSeconds, rows: run!.rows };
    if (!flags['dry-run']) writeVaultResults(stamp, vaultMeta(`npm run bench -- --phases vault${quick ? ' --quick' : ''}`), options, run!);
  });
  // Last and alone on the machine: its own sidecar, Postgres database and section of RESULTS.md.
  await timed('exchange', async () => {
    const json = path.join(RESULTS_DIR, `${stamp}-token-exchange.json`);
    const args = [path.join(ROOT, 'dist/bench/token-exchange.js'), '--json', json, ...(quick ? ['--quick'] : []), ...(flags['dry-run'] ? ['--dry-run'] : [])];
    const child = spawn(process.execPath, ['--enable-source-maps', ...args], { stdio: ['ignore', 'inherit', 'inherit'] });
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    if (code !== 0) throw new Error(`bench/token-exchange.ts exited with ${code}`);
    const written = JSON.parse(readFileSync(json, 'utf8')) as { seconds: number; rows: ExchangeRow[] };
    results.exchange = { seconds: written.seconds, rows: written.rows };
  });
  await timed('instructions', async () => {
    // Instructions per GetGrant / exchange / capture and per floor op, counted by callgrind: the
    // figure that does not move with the machine's load. --quick: smaller windows, one round.
    const figures = await measureInstructions(quick ? { reads: 100, captures: 100, runs: 1, warmup: 300 } : {});
    results.instructions = {
      rows: instructionRows(figures).map((row) => Object.fromEntries(INSTRUCTION_COLUMNS.map((column, index) => [column, row[index] ?? '—']))),
      figures,
    };
    for (const row of instructionRows(figures)) log(`instructions: ${row.join(' | ')}`);
    if (!flags['dry-run']) writeInstructionsSection(figures, BENCH_COMMAND);
  });
  const file = path.join(RESULTS_DIR, `${stamp}.json`);
  const meta = {
    date: new Date().toISOString(),
    command: BENCH_COMMAND,
    cpus: `${os.cpus().length} x ${os.cpus()[0]?.model ?? 'unknown'}`,
    memoryGiB: Math.round(os.totalmem() / 1024 ** 3),
    node: process.version,
    sidecarNodeArgs: SIDECAR_NODE_ARGS,
    rounds,
    secondsPerRun: seconds,
    phaseSeconds,
    totalSeconds: Math.round((Date.now() - benchStarted) / 1000),
  };
  writeFileSync(file, JSON.stringify({ meta, results }, null, 2));
  log(`wrote ${path.relative(ROOT, file)}`);
  if (!flags['dry-run']) {
    writeFileSync(path.join(ROOT, 'bench/RESULTS.md'), renderResults(meta, results));
    log('wrote bench/RESULTS.md');
  }
  // Last, to copy after each change: one line per target, issue 25's then issue 14's.
  log(
    `took ${meta.totalSeconds} s (${Object.entries(phaseSeconds)
      .map(([phase, taken]) => `${phase} ${taken} s`)
      .join(', ')})`,
  );
  const targetLine = (target: Target) =>
    `${target.target} ${target.goal} | ${target.measured} | ${target.met === undefined ? 'not measured' : target.met ? 'met' : 'missed'}`;
  log('issue 25 targets (target goal | measured | met/missed):');
  for (const target of computeIssue25Targets(results)) log(targetLine(target));
  log('issue 14 targets (target goal | measured | met/missed):');
  for (const target of computeTargets(results)) log(targetLine(target));
}

await main();
