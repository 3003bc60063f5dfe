// Instructions per operation, counted by callgrind (bench/callgrind.ts), for what the sidecar does
// most: GetGrant (durable audit), the token exchange (POST /oauth2/token) and a capture through
// Envoy (observability mode), each beside its floor: the canned-answer gRPC server
// (bench/token-vault-echo.ts) per GetGrant and the ext_proc loop without the capture pipeline
// (bench/extproc-floor.ts) per stream. Unlike a timing, an instruction count does not move with
// what else the machine runs: a change can be judged in one run on a shared 2-core machine.
// Only the measured process runs under valgrind (the sidecar, or a floor server): not Envoy, not
// Postgres, not the load generator. CLI: bench/instructions.ts; also callable as a phase.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse, stringify } from 'yaml';
import { tokenRoutePath } from '../src/contract.js';
import { generateKeySpec } from '../src/keys/key-ring.js';
import { waitFor } from '../src/lib/wait-for.js';
import { type RunningEnvoy, startEnvoy } from '../src/ops/envoy-process.js';
import { SERVE_NODE_FLAGS } from '../src/ops/node-flags.js';
import { migrate } from '../src/store/migrate.js';
import { startOktaAuthorizationServer } from '../test/support/okta-authorization-server.js';
import { freePort, freePorts } from '../test/support/ports.js';
import { createTestDatabase, type TestDatabase } from '../test/support/postgres.js';
import { startSidecarProcess } from '../test/support/sidecar.js';
import { CallgrindProcess, callgrindArgs, VALGRIND } from './callgrind.js';
import { log } from './common.js';
import { envoyYaml, REQUEST, startStubIdp } from './envoy-scenarios.js';
import { exchangeLoad, prepareExchange } from './exchange-fixture.js';
import { answering, outcomeCall } from './grpc-load.js';
import { runLoad } from './load.js';
import { drive, type Outcome, writeSection } from './open-loop.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const RESULTS_FILE = path.join(ROOT, 'bench/RESULTS.md');
const START = '<!-- bench:instructions:start -->';
const END = '<!-- bench:instructions:end -->';
/** Captures a second in a warm-up, whatever warmupRate says (see captureRun). */
const CAPTURE_WARMUP_RATE = 50;
/** Requests in flight in a closed-loop warm-up (warmupRate 0). */
const WARMUP_CONCURRENCY = 4;
/** Operations run instrumented but not counted before each window: valgrind translates all code again. */
const SETTLE_OPS = 20;
/**
 * Postgres timeouts long enough for a process under valgrind, whose first instrumented operations
 * are slow: a timeout only arms a timer, so the count is the same; with the defaults (2 s for the
 * API), a call would fail and its connection be replaced inside a window.
 */
const PATIENT_POSTGRES = Object.fromEntries(
  ['TOKEN_TAP_PG', 'TOKEN_TAP_API_PG'].flatMap((prefix) => [
    [`${prefix}_CONNECT_TIMEOUT_MS`, '30000'],
    [`${prefix}_STATEMENT_TIMEOUT_MS`, '30000'],
    [`${prefix}_QUERY_TIMEOUT_MS`, '32000'],
  ]),
);
/** As the other API benches: GetGrant over two HTTP/2 connections. */
const GRPC_CHANNELS = 2;

export interface InstructionOptions {
  /** GetGrant calls, and token exchanges, per measured window. */
  reads: number;
  /** Captures (token requests through Envoy) per measured window. */
  captures: number;
  /** Measured windows per operation: the spread between them says how stable the figure is. */
  runs: number;
  /** Operations before each window, instrumentation off, so that V8's tiering has settled. */
  warmup: number;
  /** Operations a second in the windows (valgrind's instrumentation slows node 20-50 times). */
  rate: number;
  /**
   * Operations a second in the warm-ups (instrumentation off: a few times slower than native); 0, the
   * default: closed loop, 4 at a time, as fast as the process goes (a fresh process under valgrind
   * cannot keep a fixed rate, and the calls it leaves waiting time out: a warm-up of error paths).
   * Captures warm up at 50/s whatever this says (see captureRun).
   */
  warmupRate: number;
  /** Stored grants (users) that GetGrant and the exchange pick from at random. */
  grants: number;
}

/**
 * 10/s: under callgrind the sidecar does about 15 GetGrant calls a second on the 2-core bench machine;
 * above that, calls queue and GetGrant's 4.5 s deadline fails them.
 */
export const DEFAULT_INSTRUCTION_OPTIONS: InstructionOptions = { reads: 150, captures: 150, runs: 2, warmup: 1500, rate: 10, warmupRate: 0, grants: 200 };

/** One operation's windows on one process. */
export interface Measured {
  /** Operations done (answered OK; captures: stored) in each window. */
  ops: number[];
  /** Instructions (Ir, all threads) in each window. */
  instructions: number[];
  perOp: number[];
  /** Of perOp, V8's concurrent optimizing compiler (TurboFan's compile task, inclusive): tiering, not the operation's own work. */
  compilerPerOp: number[];
  /** Of perOp, V8's major (mark-compact) GCs: a window has one or none. */
  majorGcPerOp: number[];
}

export type Operation = 'getgrant' | 'exchange' | 'capture';

export interface InstructionFigures {
  meta: { date: string; cpus: string; memoryGiB: string; node: string; valgrind: string; load: string; seconds: number };
  options: InstructionOptions;
  sidecar: Record<Operation, Measured>;
  /** Sidecar instructions per second when idle (5 s windows): the background work in every window.  */
  idlePerSecond: number[];
  floors: { echoGetGrant: Measured; extprocStream: Measured };
  /** Where the callgrind dumps are. */
  outDir: string;
}

/**
 * An Envoy scenario (envoyYaml) patient with a process under valgrind: its health check (0.5 s
 * timeout) and ext_proc's deadlines (1 s gRPC timeout, 2 s deferred close) would otherwise take the
 * slowed sidecar out of service, and Envoy would fail open: token requests answered, nothing captured.
 * The checks still run once a second, as in production, and are in the count.
 */
function patientEnvoy(configYaml: string): string {
  const config = parse(configYaml);
  for (const cluster of config.static_resources.clusters) {
    for (const check of cluster.health_checks ?? []) Object.assign(check, { timeout: '10s', unhealthy_threshold: 10 });
  }
  for (const listener of config.static_resources.listeners) {
    for (const filter of listener.filter_chains[0].filters[0].typed_config.http_filters) {
      if (filter.name !== 'envoy.filters.http.ext_proc') continue;
      filter.typed_config.grpc_service.timeout = '10s';
      if (filter.typed_config.deferred_close_timeout) filter.typed_config.deferred_close_timeout = '10s';
    }
  }
  return stringify(config);
}

const mean = (values: readonly number[]) => values.reduce((sum, value) => sum + value, 0) / Math.max(1, values.length);
/** Half the range between the runs, as a share of their mean: ±x %. */
export const spreadPercent = (values: readonly number[]) => (values.length < 2 ? 0 : (50 * (Math.max(...values) - Math.min(...values))) / mean(values));
const count = (value: number) => Math.round(value).toLocaleString('en-US');
const sleep = (milliseconds: number) => new Promise((resolve) => setTimeout(resolve, milliseconds));

/** A node program under callgrind, instrumentation off; killed when this process exits. */
function spawnUnderCallgrind(outDir: string, name: string, args: string[], logFile: string): { child: ChildProcess; callgrind: CallgrindProcess } {
  const fd = openSync(logFile, 'a');
  const child = spawn(VALGRIND, [...callgrindArgs(outDir, name), process.execPath, ...SERVE_NODE_FLAGS, ...args], { stdio: ['ignore', fd, fd] });
  process.once('exit', () => child.kill('SIGKILL'));
  // valgrind execs its tool in place: the pid is the measured process's.
  return { child, callgrind: new CallgrindProcess(child.pid!, outDir, name) };
}

/** SIGTERM, and SIGKILL 5 s later: a floor server under valgrind may not end on its own (its final dump is not needed). */
async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  const hard = setTimeout(() => child.kill('SIGKILL'), 5_000);
  await exited;
  clearTimeout(hard);
}

/** `ops` calls, `concurrency` at a time, each as soon as one ends: a warm-up as fast as the slowed process goes, and no faster. */
async function closedLoop(call: () => Promise<Outcome>, ops: number, concurrency: number): Promise<number> {
  let started = 0;
  let ok = 0;
  const worker = async () => {
    while (started < ops) {
      started += 1;
      if ((await call()).ok) ok += 1;
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return ok;
}

/** Calls `call` `ops` times at `rate` a second, open loop (rate 0: closed loop, WARMUP_CONCURRENCY at a time); throws on a failure (a failure path is other instructions), but for a few connection resets. */
async function fixedRun(call: () => Promise<Outcome>, ops: number, rate: number, what: string): Promise<number> {
  if (rate === 0) return closedLoop(call, ops, WARMUP_CONCURRENCY);
  const result = await drive(call, rate, ops / rate);
  // A keep-alive connection reset as the request went out never reached a handler: the others count.
  const { connection: resets = 0, ...failures } = result.errors;
  if (Object.keys(failures).length > 0 || resets > ops / 50)
    throw new Error(`${what}: ${result.sent - result.ok} of ${result.sent} failed: ${JSON.stringify(result.errors)}`);
  return result.ok;
}

async function captureEvents(db: TestDatabase): Promise<number> {
  return (await db.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM capture_events')).rows[0]!.n;
}

/** Envoy's count of ext_proc streams it failed open (the processor not called, or cut off). */
async function failedOpen(envoy: RunningEnvoy): Promise<number> {
  let total = 0;
  for (const [name, value] of await envoy.stats()) if (/\.ext_proc\..*\.(streams_failed|failure_mode_allowed)$/.test(name)) total += value;
  return total;
}

/**
 * Token requests through `envoy` (listening at `port`); every ext_proc stream must have reached the
 * processor (else Envoy failed it open, and a login was not processed at all). With `db`, waits
 * until each one's capture is stored and returns those; without, the streams.
 */
async function captureRun(envoy: RunningEnvoy, port: number, ops: number, rate: number, db: TestDatabase | undefined): Promise<number> {
  const before = db ? await captureEvents(db) : 0;
  const failedBefore = await failedOpen(envoy);
  const result = await runLoad({
    origin: `http://127.0.0.1:${port}`,
    path: tokenRoutePath('bench'),
    ...REQUEST,
    // Not closed loop in a warm-up (rate 0): in observability mode Envoy does not wait for the sidecar,
    // so a closed loop is not paced by it (38,588 requests in 20 s, most failed open): 50/s instead.
    rate: rate || CAPTURE_WARMUP_RATE,
    durationMs: (1000 * ops) / (rate || CAPTURE_WARMUP_RATE),
    connections: 16,
  });
  if (result.errors > 0) throw new Error(`captures: ${result.errors} of ${result.sent} token requests failed`);
  const failed = (await failedOpen(envoy)) - failedBefore;
  if (failed > 0) throw new Error(`captures: Envoy failed ${failed} of ${result.sent} ext_proc streams open (processor unhealthy or too slow)`);
  if (!db) return result.ok;
  return waitFor(
    `${result.ok} captures stored`,
    async () => {
      const stored = (await captureEvents(db)) - before;
      return stored >= result.ok ? stored : undefined;
    },
    60_000,
    100,
  );
}

/** One operation to count: `run(ops, rate)` does `ops` of them and returns how many were done. */
interface Workload {
  what: string;
  ops: number;
  run: (ops: number, rate: number) => Promise<number>;
}

/**
 * Each workload's `warmup` operations uninstrumented, all before the first window, so that V8's tiering has
 * settled; then `runs` rounds of one window per workload (round-major, so that a round's figures
 * come from the same stretch of the process's life).
 */
async function measure(callgrind: CallgrindProcess, workloads: Workload[], options: InstructionOptions): Promise<Measured[]> {
  for (const { what, run } of workloads) {
    log(
      `${what}: warm-up, ${options.warmup} ${options.warmupRate ? `at ${options.warmupRate}/s` : `closed loop, ${WARMUP_CONCURRENCY} at a time (captures: ${CAPTURE_WARMUP_RATE}/s)`}, uninstrumented`,
    );
    // A fresh process under valgrind is slow until translated and tiered: a warm-up call may time out, and that is no matter.
    await run(options.warmup, options.warmupRate).catch((error: Error) => log(`${what}: during the warm-up: ${error.message}`));
  }
  const figures = workloads.map((): Measured => ({ ops: [], instructions: [], perOp: [], compilerPerOp: [], majorGcPerOp: [] }));
  for (let index = 0; index < options.runs; index += 1) {
    for (const [at, { what, ops, run }] of workloads.entries()) {
      await sleep(500);
      log(`${what} ${index + 1}/${options.runs}: counting ${ops} at ${options.rate}/s`);
      const settle = () => run(Math.min(SETTLE_OPS, ops), options.rate).catch((error: Error) => log(`${what}: while settling: ${error.message}`));
      const windowStarted = Date.now();
      const window = await callgrind.window(() => run(ops, options.rate), settle);
      const took = ((Date.now() - windowStarted) / 1000).toFixed(0);
      const measured = figures[at]!;
      measured.ops.push(window.result);
      measured.instructions.push(window.instructions);
      measured.perOp.push(window.instructions / window.result);
      measured.compilerPerOp.push(window.compiler / window.result);
      measured.majorGcPerOp.push(window.majorGc / window.result);
      log(
        `${what} ${index + 1}/${options.runs}: ${count(window.instructions)} instructions / ${window.result} = ${count(window.instructions / window.result)} per op, of which V8's optimizing compiler ${count(window.compiler / window.result)}, major GC ${count(window.majorGc / window.result)} (${took} s)`,
      );
    }
  }
  return figures;
}

function valgrindVersion(): string {
  try {
    return execFileSync(VALGRIND, ['--version'], { encoding: 'utf8' }).trim();
  } catch {
    return 'valgrind (version unknown)';
  }
}

export async function measureInstructions(overrides: Partial<InstructionOptions> = {}): Promise<InstructionFigures> {
  const options = { ...DEFAULT_INSTRUCTION_OPTIONS, ...overrides };
  const started = Date.now();
  const loadBefore = os.loadavg()[0]!;
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const outDir = path.join(ROOT, 'bench/results', `${stamp}-callgrind`);
  mkdirSync(outDir, { recursive: true });
  const logFile = (name: string) => path.join(outDir, `${name}.log`);
  const keys = generateKeySpec('bench1');
  const db = await createTestDatabase('bench_instructions');
  const okta = await startOktaAuthorizationServer();
  const children: ChildProcess[] = [];
  const envoys: RunningEnvoy[] = [];
  const closers: Array<() => void> = [];
  let sidecar: Awaited<ReturnType<typeof startSidecarProcess>> | undefined;
  try {
    await migrate(db.pool);
    const { apiKey, bodies, exchangeFile } = await prepareExchange(db.pool, keys, okta, options.grants);
    const stubIdp = await startStubIdp(logFile('stub-idp'));
    children.push(stubIdp.child);
    const [extprocPort, apiPort, exchangePort] = await freePorts(3);
    const valgrindThenNode = [VALGRIND, ...callgrindArgs(outDir, 'sidecar')].map((word) => `'${word.replaceAll("'", `'\\''`)}'`).join(' ');
    log('starting the sidecar under callgrind (instrumentation off until a window opens)');
    sidecar = await startSidecarProcess({
      port: extprocPort,
      env: {
        DATABASE_URL: db.url,
        TOKEN_TAP_KEYS: keys,
        TOKEN_TAP_EXCHANGE_CONFIG: exchangeFile,
        LOG_LEVEL: 'info',
        // As bench/run.ts: format 3 (session keys), the format the next release seals by default.
        TOKEN_TAP_SEAL_FORMAT: process.env.TOKEN_TAP_SEAL_FORMAT ?? '3',
        ...PATIENT_POSTGRES,
      },
      args: ['--api-listen', `127.0.0.1:${apiPort}`, '--exchange-listen', `127.0.0.1:${exchangePort}`],
      // valgrind, then node with the flags serve always runs with (SERVE_NODE_FLAGS), through a shell that execs.
      wrap: ['sh', '-c', `exec ${valgrindThenNode} "$0" ${SERVE_NODE_FLAGS.join(' ')} "$@"`],
      readyTimeoutMs: 120_000,
    });
    const sidecarCallgrind = new CallgrindProcess(sidecar.pid, outDir, 'sidecar');

    const getGrant = await answering(apiPort, apiKey.token, GRPC_CHANNELS, options.grants);
    closers.push(() => getGrant.close());
    const getGrantCall = outcomeCall(getGrant);
    const exchange = exchangeLoad(exchangePort, apiKey, bodies);
    closers.push(exchange.close);
    const [envoyPort, envoyAdmin] = await freePorts(2);
    const envoy = await startEnvoy(patientEnvoy(envoyYaml('B', stubIdp.port, envoyPort, extprocPort, envoyAdmin)), envoyAdmin);
    envoys.push(envoy);

    const [getgrant, exchangeFigures, capture] = await measure(
      sidecarCallgrind,
      [
        { what: 'GetGrant', ops: options.reads, run: (ops, rate) => fixedRun(getGrantCall, ops, rate, 'GetGrant') },
        { what: 'token exchange', ops: options.reads, run: (ops, rate) => fixedRun(exchange.call, ops, rate, 'token exchange') },
        { what: 'capture', ops: options.captures, run: (ops, rate) => captureRun(envoy, envoyPort, ops, rate, db) },
      ],
      options,
    );
    const sidecarFigures = { getgrant: getgrant!, exchange: exchangeFigures!, capture: capture! };
    const idlePerSecond: number[] = [];
    const idleSeconds = 5;
    for (let index = 0; index < options.runs; index += 1) {
      log(`idle sidecar ${index + 1}/${options.runs}: ${idleSeconds} s`);
      const idle = await sidecarCallgrind.window(
        () => sleep(1000 * idleSeconds),
        () => sleep(1000),
      );
      idlePerSecond.push(idle.instructions / idleSeconds);
    }
    writeFileSync(logFile('sidecar'), sidecar.logs());
    await sidecar.stop();
    sidecar = undefined;

    log('starting the GetGrant floor (bench/token-vault-echo.ts) under callgrind');
    const echoPort = await freePort();
    const echo = spawnUnderCallgrind(outDir, 'echo', [path.join(ROOT, 'dist/bench/token-vault-echo.js'), String(echoPort)], logFile('echo'));
    children.push(echo.child);
    const echoLoad = await answering(echoPort, apiKey.token, GRPC_CHANNELS, options.grants);
    closers.push(() => echoLoad.close());
    const echoCall = outcomeCall(echoLoad);
    const [echoGetGrant] = await measure(
      echo.callgrind,
      [{ what: 'floor GetGrant', ops: options.reads, run: (ops, rate) => fixedRun(echoCall, ops, rate, 'floor GetGrant') }],
      options,
    );
    await stop(echo.child);

    log('starting the ext_proc floor (bench/extproc-floor.ts) under callgrind');
    const floorPort = await freePort();
    const floorLog = logFile('extproc-floor');
    const floor = spawnUnderCallgrind(outDir, 'extproc-floor', [path.join(ROOT, 'dist/bench/extproc-floor.js'), String(floorPort)], floorLog);
    children.push(floor.child);
    await waitFor(
      'the ext_proc floor server',
      async () => (readFileSync(floorLog, 'utf8').includes(`"listen":"127.0.0.1:${floorPort}"`) ? true : undefined),
      120_000,
      100,
    );
    const [floorEnvoyPort, floorEnvoyAdmin] = await freePorts(2);
    const floorEnvoy = await startEnvoy(patientEnvoy(envoyYaml('B0', stubIdp.port, floorEnvoyPort, floorPort, floorEnvoyAdmin)), floorEnvoyAdmin);
    envoys.push(floorEnvoy);
    const [extprocStream] = await measure(
      floor.callgrind,
      [{ what: 'floor ext_proc stream', ops: options.captures, run: (ops, rate) => captureRun(floorEnvoy, floorEnvoyPort, ops, rate, undefined) }],
      options,
    );
    await stop(floor.child);

    const cpus = os.cpus();
    return {
      meta: {
        date: `${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC`,
        cpus: `${cpus.length} × ${cpus[0]?.model.trim() ?? 'CPU'}`,
        memoryGiB: (os.totalmem() / 2 ** 30).toFixed(0),
        node: process.version,
        valgrind: valgrindVersion(),
        load: `${loadBefore.toFixed(2)} before, ${os.loadavg()[0]!.toFixed(2)} after`,
        seconds: Math.round((Date.now() - started) / 1000),
      },
      options,
      sidecar: sidecarFigures,
      idlePerSecond,
      floors: { echoGetGrant: echoGetGrant!, extprocStream: extprocStream! },
      outDir,
    };
  } finally {
    for (const close of closers) close();
    for (const envoy of envoys) await envoy.stop();
    if (sidecar) writeFileSync(logFile('sidecar'), sidecar.logs());
    await sidecar?.stop();
    for (const child of children.reverse()) await stop(child);
    await okta.close();
    await db.drop();
  }
}

/** The table's rows: operation, its figure per op (and without V8's compiler), its floor, the difference, the spread between runs. */
export function instructionRows(figures: InstructionFigures): string[][] {
  const { sidecar, floors } = figures;
  const own = (measured: Measured) => measured.perOp.map((perOp, index) => perOp - measured.compilerPerOp[index]! - measured.majorGcPerOp[index]!);
  const row = (name: string, measured: Measured, floorName: string, floor: Measured) => [
    name,
    count(mean(measured.perOp)),
    count(mean(own(measured))),
    `${count(mean(floor.perOp))} (${count(mean(own(floor)))}; ${floorName})`,
    `${count(mean(measured.perOp) - mean(floor.perOp))} (${count(mean(own(measured)) - mean(own(floor)))})`,
    `±${spreadPercent(measured.perOp).toFixed(1)} % (${measured.perOp.map(count).join(', ')}); own work ±${spreadPercent(own(measured)).toFixed(1)} % (${own(measured).map(count).join(', ')}); floor ±${spreadPercent(floor.perOp).toFixed(1)} %, own ±${spreadPercent(own(floor)).toFixed(1)} %`,
  ];
  return [
    row('GetGrant (durable audit)', sidecar.getgrant, 'canned-answer GetGrant', floors.echoGetGrant),
    row('token exchange (POST /oauth2/token)', sidecar.exchange, "the sidecar's GetGrant", sidecar.getgrant),
    row('capture through Envoy (observability)', sidecar.capture, 'ext_proc stream, no capture', floors.extprocStream),
  ];
}

export const INSTRUCTION_COLUMNS = [
  'operation',
  'instructions per op',
  "own work (less V8's compiler, major GC)",
  'floor per op (own work)',
  'beyond floor (own work)',
  'runs spread (per-run figures)',
];

/** The table for a terminal. */
export function instructionsTable(figures: InstructionFigures): string {
  const rows = [INSTRUCTION_COLUMNS, ...instructionRows(figures)];
  const widths = INSTRUCTION_COLUMNS.map((_, column) => Math.max(...rows.map((row) => row[column]!.length)));
  return rows.map((row) => row.map((cell, column) => cell.padEnd(widths[column]!)).join(' | ')).join('\n');
}

function renderInstructionsSection(figures: InstructionFigures, command: string): string {
  const { meta, options } = figures;
  const idle = mean(figures.idlePerSecond);
  return [
    START,
    '## Instructions per operation (callgrind)',
    '',
    `Run ${meta.date} with \`${command}\` on ${meta.cpus}, ${meta.memoryGiB} GiB, Node ${meta.node}, ${meta.valgrind}, Postgres on the same machine (1-minute load average ${meta.load}; an instruction count does not move with it). Took ${meta.seconds} s.`,
    'Counted: the instructions (callgrind Ir, user space) of every thread of the measured process (main thread, libuv pool, V8 helper; callgrind sums them)',
    `from zeroing to dump, divided by the operations answered OK in that window (captures: stored in Postgres). Only the measured process runs under valgrind`,
    `(\`--tool=callgrind --instr-atstart=no\`, node with the serve flags ${SERVE_NODE_FLAGS.join(' ')}): not Envoy, Postgres, the stub IdP or the load generator.`,
    `First ${options.warmup} of each operation uninstrumented (${options.warmupRate ? `at ${options.warmupRate}/s` : `closed loop, ${WARMUP_CONCURRENCY} at a time; captures at ${CAPTURE_WARMUP_RATE}/s`}; V8's tiering settles); then ${options.runs} rounds of one window per operation: ${SETTLE_OPS} operations`,
    `instrumented but not counted, then ${options.reads} GetGrant calls or exchanges, or ${options.captures} captures, counted, at ${options.rate}/s open loop.`,
    `Envoy's health check and ext_proc deadlines are lengthened for the slowed process (patientEnvoy). The Postgres timeouts too (the API's would fail calls).`,
    `The sidecar (\`token-tap serve\`, API and exchange on, seal format 3, ${options.grants} stored grants)`,
    'is the one process for all three; the floors are bench/token-vault-echo.ts (GetGrant answered with a canned grant) and bench/extproc-floor.ts',
    "(the sidecar's ext_proc loop with the capture pipeline cut off, behind the same Envoy), each under callgrind alike. The exchange's floor is the sidecar's GetGrant,",
    'as in bench/token-exchange.ts. "Own work": less V8\'s bursts, which do not follow the operations and make most of the difference between two windows',
    "(bench/callgrind.ts v8Bursts, inclusive costs from `callgrind_annotate --inclusive=yes`): TurboFan's concurrent compile task (tiering, still 25-40 % of a",
    'window after the warm-ups) and major GCs (concurrent marking, sweeping, the mark-compact pause: one in a window or none). Scavenges stay in.',
    'Compare a change by its own-work figures; the totals say what the bursts cost at this rate.',
    'Background work in a window (timers, pool keep-alive, GC) is in the figures: the idle sidecar ran',
    `${count(idle)} instructions a second, ${count(idle / options.rate)} per operation at ${options.rate}/s.`,
    '',
    `| ${INSTRUCTION_COLUMNS.join(' | ')} |`,
    `|${INSTRUCTION_COLUMNS.map(() => '---').join('|')}|`,
    ...instructionRows(figures).map((row) => `| ${row.join(' | ')} |`),
    '',
    `callgrind dumps (callgrind_annotate them for where the instructions go): ${path.relative(ROOT, figures.outDir)}/ (gitignored).`,
    END,
  ].join('\n');
}

/** Keeps the figures beside the dumps (figures.json). */
export function saveFigures(figures: InstructionFigures): string {
  const file = path.join(figures.outDir, 'figures.json');
  writeFileSync(file, JSON.stringify(figures, null, 2));
  return file;
}

/** Replaces the "Instructions per operation" section of bench/RESULTS.md, keeping the others. */
export function writeInstructionsSection(figures: InstructionFigures, command: string): void {
  writeSection(RESULTS_FILE, START, END, renderInstructionsSection(figures, command));
}
