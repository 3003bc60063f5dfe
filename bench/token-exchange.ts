// The RFC 8693 token exchange under load, against the TokenVault GetGrant floor: one sidecar
// (`token-tap serve`, its own process) with both listeners on, N stored grants, and services
// exchanging Okta-shaped access tokens (RS256, signed once beforehand per user by a stand-in Okta
// authorization server whose keys the sidecar fetches once) for a random user's upstream access
// token at POST /oauth2/token. Each exchange checks the API key (client_secret_basic), verifies the
// subject token, finds the grant by its upstream_sub claim, decrypts it and writes its
// access_events row before answering; GetGrant, at the same rates on the same sidecar, does all of
// that but the subject token and the form. Open loop (bench/open-loop.ts, as bench/token-vault.ts).
//   npm run build && node --enable-source-maps dist/bench/token-exchange.js [--rates 250,500] [--seconds 15]
//     [--warmup 5] [--grants 1000] [--quick (5 s runs, 2 s warm-up)] [--dry-run (do not rewrite RESULTS.md)]
//     [--json FILE (the rows, for bench/run.ts: its issue 25 target judges the exchange at 500/s)]
//   Node flags for the sidecar (e.g. --cpu-prof --cpu-prof-dir=bench/results): BENCH_SIDECAR_NODE_ARGS.
// Also the `exchange` phase of `npm run bench` (bench/run.ts). Writes the "Token exchange" section of
// bench/RESULTS.md (other sections are kept).
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { generateKeySpec } from '../src/keys/key-ring.js';
import { waitFor } from '../src/lib/wait-for.js';
import { migrate } from '../src/store/migrate.js';
import { startOktaAuthorizationServer } from '../test/support/okta-authorization-server.js';
import { freePorts } from '../test/support/ports.js';
import { createTestDatabase } from '../test/support/postgres.js';
import { startSidecarProcess } from '../test/support/sidecar.js';
import { log } from './common.js';
import { exchangeLoad, prepareExchange } from './exchange-fixture.js';
import { answering, outcomeCall } from './grpc-load.js';
import { cpuSeconds, drive, type Outcome, type RunResult, writeSection } from './open-loop.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const RESULTS_FILE = path.join(ROOT, 'bench/RESULTS.md');
const START = '<!-- bench:token-exchange:start -->';
const END = '<!-- bench:token-exchange:end -->';

const { values: flags } = parseArgs({
  options: {
    rates: { type: 'string', default: '250,500' },
    seconds: { type: 'string' },
    warmup: { type: 'string' },
    grants: { type: 'string', default: '1000' },
    quick: { type: 'boolean', default: false },
    'dry-run': { type: 'boolean', default: false },
    /** Also write the rows (endpoint, rate, measured, cpuPercent) to this JSON file: how bench/run.ts reads them back. */
    json: { type: 'string' },
  },
});
const rates = flags.rates!.split(',').map(Number);
const seconds = Number(flags.seconds ?? (flags.quick ? 5 : 15));
const warmupSeconds = Number(flags.warmup ?? (flags.quick ? 2 : 5));
const grantCount = Number(flags.grants);
/** Node flags for the sidecar only (--cpu-prof, say): BENCH_SIDECAR_NODE_ARGS, as the other benches. */
const sidecarNodeArgs = process.env.BENCH_SIDECAR_NODE_ARGS?.split(' ').filter(Boolean) ?? [];
const shellQuote = (word: string) => `'${word.replaceAll("'", `'\\''`)}'`;
/** As GetGrant's load in bench/token-vault.ts: two HTTP/2 connections. */
const GRPC_CHANNELS = 2;

export interface ExchangeRow {
  endpoint: 'exchange' | 'getgrant';
  rate: number;
  measured: RunResult;
  cpuPercent: number;
}

async function measure(call: () => Promise<Outcome>, pid: number, rate: number, what: string): Promise<{ measured: RunResult; cpuPercent: number }> {
  log(`${what}: warm-up ${warmupSeconds} s at ${rate}/s`);
  await drive(call, rate, warmupSeconds);
  log(`${what}: measuring ${seconds} s at ${rate}/s`);
  const cpuBefore = cpuSeconds(pid);
  const measured = await drive(call, rate, seconds);
  const cpuPercent = (100 * (cpuSeconds(pid) - cpuBefore)) / measured.seconds;
  log(
    `${what} ${rate}/s: p50 ${measured.latencyMs.p50.toFixed(2)} ms, p99 ${measured.latencyMs.p99.toFixed(2)} ms, errors ${JSON.stringify(measured.errors)}, sidecar CPU ${cpuPercent.toFixed(0)} %`,
  );
  return { measured, cpuPercent };
}

function renderSection(meta: Record<string, string>, rows: ExchangeRow[], audited: { rows: number; calls: number }): string {
  const f = (value: number) => value.toFixed(2);
  const names = { exchange: 'token exchange (POST /oauth2/token)', getgrant: 'floor: TokenVault GetGrant' };
  return [
    START,
    '## Token exchange (RFC 8693)',
    '',
    `Run ${meta.date} with \`${meta.command}\` on ${meta.cpus}, ${meta.memoryGiB} GiB, Node ${meta.node}, Postgres on the same machine (1-minute load average ${meta.load}; the machine is shared, others' work shows in the tail).`,
    `One sidecar (\`token-tap serve\`, its own process, one pool of 4 connections for the API and the exchange) with ${grantCount} stored grants (~1 KB tokens, AES-256-GCM).`,
    'Each exchange: HTTP Basic client credentials (the API key) checked, the Okta-shaped access token (RS256, signed once beforehand per user; the stand-in Okta',
    "authorization server's keys fetched once) verified, the grant found by its `upstream_sub` claim, decrypted, and its access_events row written (group commit)",
    'before the answer. The floor is GetGrant on the same sidecar at the same rates: key, read, decrypt and audit, without the subject token and the form.',
    `Open loop (bench/open-loop.ts): exchanges over keep-alive HTTP/1.1 (at most 64 connections), GetGrant over ${GRPC_CHANNELS} HTTP/2 connections, requests encoded beforehand,`,
    `${seconds} s measured after ${warmupSeconds} s of warm-up, latency counted from when each request was due; the load generator, the sidecar and Postgres share the machine.`,
    '',
    '| endpoint | rate | sent | achieved/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | errors | sidecar CPU |',
    '|---|---|---|---|---|---|---|---|---|---|---|',
    ...rows.map(({ endpoint, rate, measured, cpuPercent }) => {
      const errors =
        Object.entries(measured.errors)
          .map(([code, count]) => `${count} ${code}`)
          .join(', ') || 'none';
      const { p50, p90, p99, p999, max } = measured.latencyMs;
      return `| ${names[endpoint]} | ${rate}/s | ${measured.sent} | ${f(measured.ok / measured.seconds)} | ${f(p50)} | ${f(p90)} | ${f(p99)} | ${f(p999)} | ${f(max)} | ${errors} | ${cpuPercent.toFixed(0)} % |`;
    }),
    '',
    `access_events rows written by exchanges: ${audited.rows} for ${audited.calls} exchange requests (warm-ups included; one per request).`,
    END,
  ].join('\n');
}

async function main(): Promise<void> {
  const keys = generateKeySpec('bench1');
  const db = await createTestDatabase('bench_exchange');
  const okta = await startOktaAuthorizationServer();
  let sidecar: Awaited<ReturnType<typeof startSidecarProcess>> | undefined;
  const closers: Array<() => void> = [];
  try {
    await migrate(db.pool);
    const { apiKey, bodies, exchangeFile } = await prepareExchange(db.pool, keys, okta, grantCount);
    const [extprocPort, apiPort, exchangePort] = await freePorts(3);
    sidecar = await startSidecarProcess({
      port: extprocPort,
      env: { DATABASE_URL: db.url, TOKEN_TAP_KEYS: keys, TOKEN_TAP_EXCHANGE_CONFIG: exchangeFile, LOG_LEVEL: 'info' },
      args: ['--api-listen', `127.0.0.1:${apiPort}`, '--exchange-listen', `127.0.0.1:${exchangePort}`],
      // For profiling, as bench/token-vault.ts: BENCH_SIDECAR_NODE_ARGS="--cpu-prof --cpu-prof-dir=bench/results".
      // Node refuses --cpu-prof in NODE_OPTIONS, so the flags go on the command line through a shell that execs node.
      ...(sidecarNodeArgs.length > 0 ? { wrap: ['sh', '-c', `exec "$0" ${sidecarNodeArgs.map(shellQuote).join(' ')} "$@"`] } : {}),
    });
    const exchange = exchangeLoad(exchangePort, apiKey, bodies);
    closers.push(exchange.close);
    await waitFor('the token exchange', async () => ((await exchange.call().catch(() => undefined))?.ok ? true : undefined), 20_000, 100);
    const getGrant = await answering(apiPort, apiKey.token, GRPC_CHANNELS, grantCount);
    closers.push(() => getGrant.close());
    const getGrantCall = outcomeCall(getGrant);

    const countExchanges = async () =>
      (await db.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM access_events WHERE operation = 'exchange'")).rows[0]!.n;
    const exchangesBefore = await countExchanges();
    const loadBefore = os.loadavg()[0]!;
    const rows: ExchangeRow[] = [];
    for (const rate of rates) {
      rows.push({ endpoint: 'exchange', rate, ...(await measure(exchange.call, sidecar.pid, rate, 'exchange')) });
      rows.push({ endpoint: 'getgrant', rate, ...(await measure(getGrantCall, sidecar.pid, rate, 'GetGrant')) });
    }
    const audited = {
      rows: (await countExchanges()) - exchangesBefore,
      calls: rows.filter((row) => row.endpoint === 'exchange').reduce((total, row) => total + row.measured.sent + Math.round(row.rate * warmupSeconds), 0),
    };
    const cpus = os.cpus();
    const meta = {
      date: `${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC`,
      command: `node --enable-source-maps dist/bench/token-exchange.js ${process.argv.slice(2).join(' ')}`.trim(),
      cpus: `${cpus.length} × ${cpus[0]?.model.trim() ?? 'CPU'}`,
      memoryGiB: (os.totalmem() / 2 ** 30).toFixed(0),
      node: process.version,
      load: `${loadBefore.toFixed(2)} before, ${os.loadavg()[0]!.toFixed(2)} after`,
    };
    if (flags.json) writeFileSync(flags.json, JSON.stringify({ meta, seconds, warmupSeconds, rows, audited }, null, 2));
    const section = renderSection(meta, rows, audited);
    if (flags['dry-run']) process.stdout.write(`${section}\n`);
    else {
      writeSection(RESULTS_FILE, START, END, section);
      log(`wrote the "Token exchange" section of ${RESULTS_FILE}`);
    }
  } finally {
    for (const close of closers) close();
    await sidecar?.stop();
    await okta.close();
    await db.drop();
  }
}

await main();
