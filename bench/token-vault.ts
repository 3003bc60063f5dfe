// TokenVault GetGrant under load: the sidecar (`token-tap serve`, its own process) answers GetGrant
// for random users out of N stored grants, with the machine's Postgres, API-key check and the
// access_events write on every call. Open loop: requests go out on a fixed schedule and each
// latency counts from when the request was due, so a stall is not hidden.
//   npm run build && node --enable-source-maps dist/bench/token-vault.js [--rates 250,500,1000] [--seconds 30]
//     [--warmup 5] [--grants 1000] [--channels 2 (HTTP/2 connections)] [--skip-floor] [--dry-run]
// Writes the "TokenVault GetGrant" section of bench/RESULTS.md (other sections are kept) and the
// raw figures to bench/results/<time>-token-vault.json. Also the `vault` phase of `npm run bench`
// (bench/run.ts imports measureGetGrant).
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, openSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import { ApiKeyRepository } from '../src/api/api-keys.js';
import { generateKeySpec, parseKeyRing } from '../src/keys/key-ring.js';
import { migrate } from '../src/store/migrate.js';
import { GrantStore } from '../src/store/grants.js';
import { sealQuarantined } from '../src/ingest/quarantine.js';
import { freePorts } from '../test/support/ports.js';
import { createTestDatabase } from '../test/support/postgres.js';
import { log } from './common.js';
import { login } from './exchange-fixture.js';
import { answering, type GrpcLoad } from './grpc-load.js';
import { cpuSeconds, drive as openLoop, type RunResult, writeSection } from './open-loop.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const RESULTS_FILE = path.join(ROOT, 'bench/RESULTS.md');
const RESULTS_DIR = path.join(ROOT, 'bench/results');
const START = '<!-- bench:token-vault:start -->';
const END = '<!-- bench:token-vault:end -->';
const TARGET_P99_MS = 5;

/** How a GetGrant run is set up: bench/token-vault.ts's flags, or the `vault` phase of bench/run.ts. */
export interface VaultOptions {
  rates: number[];
  seconds: number;
  warmupSeconds: number;
  grantCount: number;
  /** HTTP/2 connections of the load generator. */
  channelCount: number;
  /** No canned-answer floor server beside the sidecar. */
  skipFloor: boolean;
  /** Where the servers' logs go: `${logPrefix}-sidecar.log`, `${logPrefix}-floor.log`. */
  logPrefix: string;
}

/** The raw figures of one GetGrant run, as bench/results/<time>-token-vault.json holds them. */
export interface VaultRun {
  rows: VaultRow[];
  server: Array<{ le: string; share: number }>;
  audited: { rows: number; calls: number };
  load: string;
}

/** `load` at `rate`, open loop. */
function drive(load: GrpcLoad, rate: number, durationSeconds: number): Promise<RunResult> {
  return openLoop(
    async () => {
      const { status, message } = await load.call();
      return status === grpc.status.OK ? { ok: true } : { ok: false, error: grpc.status[status] ?? String(status), message };
    },
    rate,
    durationSeconds,
  );
}

/** The sidecar's own view: token_tap_api_call_seconds, as the share of GetGrant calls within each bucket. */
async function serverHistogram(opsPort: number): Promise<Array<{ le: string; share: number }>> {
  const text = await (await fetch(`http://127.0.0.1:${opsPort}/metrics`)).text();
  const buckets = [...text.matchAll(/^token_tap_api_call_seconds_bucket\{le="([^"]+)",operation="GetGrant"\} (\d+)/gm)].map((match) => ({
    le: match[1]!,
    count: Number(match[2]),
  }));
  const total = buckets.find((bucket) => bucket.le === '+Inf')?.count ?? 0;
  return buckets.map((bucket) => ({ le: bucket.le, share: total ? bucket.count / total : 0 }));
}

export interface VaultRow {
  server: 'sidecar' | 'floor';
  rate: number;
  measured: RunResult;
  cpuPercent: number;
}

/** The "TokenVault GetGrant" section of bench/RESULTS.md. */
export function renderVaultSection(meta: Record<string, string>, options: VaultOptions, run: VaultRun): string {
  const { rows, server, audited } = run;
  const { grantCount, channelCount, seconds, warmupSeconds } = options;
  const f = (value: number) => value.toFixed(2);
  const within = (le: string) => `${(100 * (server.find((bucket) => bucket.le === le)?.share ?? 0)).toFixed(2)} %`;
  const names = { sidecar: 'token-tap sidecar', floor: 'floor: canned answer' };
  return [
    START,
    '## TokenVault GetGrant',
    '',
    `Run ${meta.date} with \`${meta.command}\` on ${meta.cpus}, ${meta.memoryGiB} GiB, Node ${meta.node}, Postgres on the same machine (1-minute load average ${run.load}).`,
    `The sidecar (\`token-tap serve\`, its own process, API pool of 4 connections) answers GetGrant for a random user out of ${grantCount} stored grants`,
    '(~1 KB id_token and access token, AES-256-GCM, decrypted per call). Every call checks the API key and reads the grant in one Postgres query,',
    'decrypts the grant, and writes its access_events row (group commit) before answering. The "floor" rows are a gRPC server in its own process',
    '(bench/token-vault-echo.ts) that answers every GetGrant with a canned grant and does nothing else: what this machine and generator allow at all.',
    `Open loop over ${channelCount} HTTP/2 connections (gRPC over node:http2, requests encoded beforehand), ${seconds} s measured after ${warmupSeconds} s of warm-up,`,
    'latency counted from when each request was due. The load generator, the server and Postgres share the machine.',
    '',
    '| server | rate | sent | achieved/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | errors | server CPU | p99 ≤ 5 ms |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|',
    ...rows.map(({ server: which, rate: at, measured, cpuPercent }) => {
      const errors =
        Object.entries(measured.errors)
          .map(([code, count]) => `${count} ${code}`)
          .join(', ') || 'none';
      const { p50, p90, p99, p999, max } = measured.latencyMs;
      return `| ${names[which]} | ${at}/s | ${measured.sent} | ${f(measured.ok / measured.seconds)} | ${f(p50)} | ${f(p90)} | ${f(p99)} | ${f(p999)} | ${f(max)} | ${errors} | ${cpuPercent.toFixed(0)} % | ${p99 <= TARGET_P99_MS ? 'met' : '**missed**'} |`;
    }),
    '',
    `Inside the sidecar (its token_tap_api_call_seconds histogram, all runs and warm-ups): ${within('0.001')} of GetGrant calls took ≤ 1 ms, ${within('0.0025')} ≤ 2.5 ms, ${within('0.005')} ≤ 5 ms.`,
    `access_events rows written: ${audited.rows} for ${audited.calls} sidecar calls (warm-ups included; one per call).`,
    END,
  ].join('\n');
}

/** Starts a node process that serves on `port`; killed when this process exits, whatever happens. */
function startServer(args: string[], env: Record<string, string>, logFile: string): ChildProcess {
  // For profiling: BENCH_SIDECAR_NODE_ARGS="--cpu-prof --cpu-prof-dir=bench/results"
  const nodeArgs = process.env.BENCH_SIDECAR_NODE_ARGS?.split(' ').filter(Boolean) ?? [];
  const fd = openSync(logFile, 'a');
  const child = spawn(process.execPath, [...nodeArgs, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', fd, fd] });
  process.once('exit', () => child.kill('SIGKILL'));
  return child;
}

async function stopServer(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  await exited;
}

async function measure(load: GrpcLoad, pid: number, at: number, options: VaultOptions): Promise<{ measured: RunResult; cpuPercent: number }> {
  log(`warm-up: ${options.warmupSeconds} s at ${at}/s`);
  await drive(load, at, options.warmupSeconds);
  log(`measuring: ${options.seconds} s at ${at}/s`);
  const cpuBefore = cpuSeconds(pid);
  const measured = await drive(load, at, options.seconds);
  const cpuPercent = (100 * (cpuSeconds(pid) - cpuBefore)) / measured.seconds;
  log(
    `p50 ${measured.latencyMs.p50.toFixed(2)} ms, p99 ${measured.latencyMs.p99.toFixed(2)} ms, errors ${JSON.stringify(measured.errors)}, server CPU ${cpuPercent.toFixed(0)} %`,
  );
  return { measured, cpuPercent };
}

/**
 * GetGrant on a fresh sidecar (and the canned-answer floor beside it, unless skipFloor) at each of
 * `rates`, sidecar then floor at each rate; its own database, dropped after. answerOnly: start
 * everything, check both answer, measure nothing (undefined).
 */
export async function measureGetGrant(options: VaultOptions & { answerOnly?: boolean }): Promise<VaultRun | undefined> {
  const { grantCount, channelCount } = options;
  const keys = generateKeySpec('bench1');
  const db = await createTestDatabase('bench_vault');
  let sidecar: ChildProcess | undefined;
  let floor: ChildProcess | undefined;
  const loads: GrpcLoad[] = [];
  try {
    await migrate(db.pool);
    const store = new GrantStore(db.pool, parseKeyRing(keys), sealQuarantined);
    for (let first = 0; first < grantCount; first += 200) {
      await store.recordCaptures(Array.from({ length: Math.min(200, grantCount - first) }, (_, index) => login(first + index)));
    }
    const apiKey = (await new ApiKeyRepository(db.pool).create('bench', ['bench'], ['get'])).token;
    log(`${grantCount} grants stored`);

    const [listen, apiPort, opsPort, floorPort] = await freePorts(4);
    sidecar = startServer(
      [path.join(ROOT, 'bin/token-tap.js'), 'serve', '--listen', `127.0.0.1:${listen}`, '--api-listen', `127.0.0.1:${apiPort}`],
      {
        DATABASE_URL: db.url,
        TOKEN_TAP_KEYS: keys,
        TOKEN_TAP_OPS_LISTEN: `127.0.0.1:${opsPort}`,
        TOKEN_TAP_SPOOL_DIR: mkdtempSync(path.join(os.tmpdir(), 'token-tap-bench-spool-')),
        LOG_LEVEL: 'warn',
      },
      `${options.logPrefix}-sidecar.log`,
    );
    const sidecarLoad = await answering(apiPort, apiKey, channelCount, grantCount);
    loads.push(sidecarLoad);
    let floorLoad: GrpcLoad | undefined;
    if (!options.skipFloor) {
      floor = startServer([path.join(ROOT, 'dist/bench/token-vault-echo.js'), String(floorPort)], {}, `${options.logPrefix}-floor.log`);
      floorLoad = await answering(floorPort, apiKey, channelCount, grantCount);
      loads.push(floorLoad);
    }
    if (options.answerOnly) {
      log('dry run: the servers answer; not measuring');
      return undefined;
    }
    const countEvents = async () => (await db.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM access_events')).rows[0]!.n;
    const eventsBefore = await countEvents();
    const loadBefore = os.loadavg()[0]!;
    const rows: VaultRow[] = [];
    for (const at of options.rates) {
      rows.push({ server: 'sidecar', rate: at, ...(await measure(sidecarLoad, sidecar.pid!, at, options)) });
      if (floorLoad) rows.push({ server: 'floor', rate: at, ...(await measure(floorLoad, floor!.pid!, at, options)) });
    }
    const sidecarRows = rows.filter((row) => row.server === 'sidecar');
    const audited = {
      rows: (await countEvents()) - eventsBefore,
      calls: sidecarRows.reduce((total, row) => total + row.measured.sent + Math.round(row.rate * options.warmupSeconds), 0),
    };
    const server = await serverHistogram(opsPort);
    // Others' work on the machine shows in the tail; the 1-minute load average says how much there was.
    return { rows, server, audited, load: `${loadBefore.toFixed(2)} before, ${os.loadavg()[0]!.toFixed(2)} after` };
  } finally {
    for (const load of loads) load.close();
    await stopServer(sidecar);
    await stopServer(floor);
    await db.drop();
  }
}

/** Date, command and machine, as the section's first line names them. */
export function vaultMeta(command: string): Record<string, string> {
  return {
    date: new Date().toISOString().slice(0, 16).replace('T', ' ') + ' UTC',
    command,
    cpus: `${os.cpus().length} × ${os.cpus()[0]?.model.trim() ?? 'CPU'}`,
    memoryGiB: (os.totalmem() / 2 ** 30).toFixed(0),
    node: process.version,
  };
}

/** Writes the run's raw figures to bench/results/<stamp>-token-vault.json and its section of RESULTS.md. */
export function writeVaultResults(stamp: string, meta: Record<string, string>, options: VaultOptions, run: VaultRun): void {
  const { seconds, warmupSeconds, grantCount } = options;
  writeFileSync(path.join(RESULTS_DIR, `${stamp}-token-vault.json`), JSON.stringify({ meta, seconds, warmupSeconds, grantCount, ...run }, null, 2));
  writeSection(RESULTS_FILE, START, END, renderVaultSection(meta, options, run));
  log(`wrote the "TokenVault GetGrant" section of ${RESULTS_FILE}`);
}

async function main(): Promise<void> {
  const { values: flags } = parseArgs({
    options: {
      rates: { type: 'string', default: '1000' },
      seconds: { type: 'string', default: '30' },
      warmup: { type: 'string', default: '5' },
      grants: { type: 'string', default: '1000' },
      channels: { type: 'string', default: '2' },
      'dry-run': { type: 'boolean', default: false },
      'skip-floor': { type: 'boolean', default: false },
    },
  });
  mkdirSync(RESULTS_DIR, { recursive: true });
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const options: VaultOptions = {
    rates: flags.rates!.split(',').map(Number),
    seconds: Number(flags.seconds),
    warmupSeconds: Number(flags.warmup),
    grantCount: Number(flags.grants),
    channelCount: Number(flags.channels),
    skipFloor: flags['skip-floor']!,
    logPrefix: path.join(RESULTS_DIR, `${stamp}-token-vault`),
  };
  const run = await measureGetGrant({ ...options, answerOnly: flags['dry-run']! });
  if (run) writeVaultResults(stamp, vaultMeta(`node --enable-source-maps dist/bench/token-vault.js ${process.argv.slice(2).join(' ')}`.trim()), options, run);
}

// A script when run, a library when bench/run.ts imports it (its `vault` phase).
if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) await main();
