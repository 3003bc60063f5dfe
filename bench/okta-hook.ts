// The Okta token inline hook under load, through Envoy: `token-tap serve --hook-listen` (its own
// process) behind the real Envoy, answering Okta-shaped com.okta.oauth2.tokens.transform calls for
// random users out of N stored grants (header secret, lookup by email, grant decrypted, patch
// built, access_events row written before each answer). Open loop: requests go out on a fixed
// schedule and each latency counts from when it was due, so a stall is not hidden. Loopback only.
//   npm run build && node --enable-source-maps dist/bench/okta-hook.js [--rates 50,200] [--seconds 20] [--warmup 3] [--grants 1000]
// Writes the "Okta token inline hook" section of bench/RESULTS.md (other sections are kept).
import { randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { stringify } from 'yaml';
import type { Capture } from '../src/capture/types.js';
import { OKTA_HOOK_PATH } from '../src/contract.js';
import { generateKeySpec, parseKeyRing } from '../src/keys/key-ring.js';
import { waitFor } from '../src/lib/wait-for.js';
import { GrantStore } from '../src/store/grants.js';
import { sealQuarantined } from '../src/ingest/quarantine.js';
import { migrate } from '../src/store/migrate.js';
import { startEnvoyFront } from '../test/support/envoy.js';
import { freePorts } from '../test/support/ports.js';
import { createTestDatabase } from '../test/support/postgres.js';
import { startSidecarProcess } from '../test/support/sidecar.js';
import { fakeJwt, log } from './common.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const RESULTS_FILE = path.join(ROOT, 'bench/RESULTS.md');
const START = '<!-- bench:okta-hook:start -->';
const END = '<!-- bench:okta-hook:end -->';
const TARGET_P99_MS = 100;
const SECRET = randomUUID();
const OKTA_IDP_ID = '0oaBENCHIDP';

const { values: flags } = parseArgs({
  options: {
    rates: { type: 'string', default: '50,200' },
    seconds: { type: 'string', default: '20' },
    warmup: { type: 'string', default: '3' },
    grants: { type: 'string', default: '1000' },
  },
});
const rates = flags.rates!.split(',').map(Number);
const seconds = Number(flags.seconds);
const warmupSeconds = Number(flags.warmup);
const grantCount = Number(flags.grants);

function login(index: number): Capture {
  const subject = `user-${index}`;
  const email = `${subject}@bench.example`;
  const claims = { sub: subject, email, email_verified: true, groups: ['a', 'b', 'c'], tid: `tenant-${index % 7}`, iat: 1_700_000_000, exp: 1_900_000_000 };
  // The grant's claims are read from its id_token, so the id_token carries them (unsigned: the bench stores it as captured).
  const idToken = [
    'eyJhbGciOiJSUzI1NiJ9',
    Buffer.from(JSON.stringify(claims)).toString('base64url'),
    Buffer.alloc(256, randomUUID()).toString('base64url'),
  ].join('.');
  return {
    captureId: randomUUID(),
    idp: 'bench',
    observedAt: new Date(Date.now() - 60_000),
    httpStatus: 200,
    outcome: 'stored',
    subject,
    issuer: 'https://bench.example',
    clientId: 'okta-bench',
    email,
    tokens: {
      accessToken: fakeJwt(600),
      refreshToken: randomUUID(),
      idToken,
      tokenType: 'Bearer',
      expiresIn: 3600,
      refreshExpiresIn: undefined,
      scope: ['openid', 'email', 'profile'],
      extras: {},
      claims,
    },
    errorCode: undefined,
    detail: undefined,
  };
}

function hookBody(index: number): string {
  const email = `user-${index}@bench.example`;
  return JSON.stringify({
    eventType: 'com.okta.oauth2.tokens.transform',
    eventTypeVersion: '1.0',
    contentType: 'application/json',
    data: {
      context: {
        session: { login: email, createdAt: new Date(Date.now() - 1_000).toISOString(), idp: { id: OKTA_IDP_ID, type: 'OIDC' } },
        user: { id: '00uBENCH', profile: { login: email } },
      },
      identity: { claims: { sub: '00uBENCH', email, idp: OKTA_IDP_ID } },
      access: { claims: { sub: email, scp: ['openid'] } },
    },
  });
}

function percentile(sorted: number[], fraction: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(fraction * sorted.length))] ?? NaN;
}

interface RunResult {
  rate: number;
  sent: number;
  latencies: number[];
  errors: number;
  achieved: number;
}

async function run(url: URL, rate: number, durationS: number, agent: http.Agent): Promise<RunResult> {
  const total = Math.round(rate * durationS);
  const latencies: number[] = [];
  let errors = 0;
  const started = performance.now();
  const pending: Array<Promise<void>> = [];
  for (let index = 0; index < total; index += 1) {
    const due = started + (index * 1000) / rate;
    const wait = due - performance.now();
    if (wait > 1) await new Promise((resolve) => setTimeout(resolve, wait));
    const body = hookBody(Math.floor(Math.random() * grantCount));
    pending.push(
      new Promise<void>((resolve) => {
        const request = http.request(
          url,
          { method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), authorization: SECRET } },
          (response) => {
            const chunks: Buffer[] = [];
            response.on('data', (chunk: Buffer) => chunks.push(chunk));
            response.on('end', () => {
              latencies.push(performance.now() - due);
              // Right answer: both patches, with the user's groups.
              const text = Buffer.concat(chunks).toString();
              if (response.statusCode !== 200 || !text.includes('com.okta.access.patch') || !text.includes('upstream_groups')) errors += 1;
              resolve();
            });
          },
        );
        request.on('error', () => {
          errors += 1;
          resolve();
        });
        request.end(body);
      }),
    );
  }
  await Promise.all(pending);
  const elapsed = (performance.now() - started) / 1000;
  return { rate, sent: total, latencies: latencies.sort((a, b) => a - b), errors, achieved: total / elapsed };
}

const db = await createTestDatabase('bench_okta_hook');
const keys = generateKeySpec('k1');
await migrate(db.pool);
const store = new GrantStore(db.pool, parseKeyRing(keys), sealQuarantined);
for (let start = 0; start < grantCount; start += 200) {
  await store.recordCaptures(Array.from({ length: Math.min(200, grantCount - start) }, (_, offset) => login(start + offset)));
}
log(`${grantCount} grants stored`);
const dir = mkdtempSync(path.join(os.tmpdir(), 'token-tap-bench-hook-'));
const hookFile = path.join(dir, 'hook.yaml');
writeFileSync(
  hookFile,
  stringify({
    authentication: { header: { name: 'Authorization', value_env: 'OKTA_HOOK_SECRET' } },
    providers: [
      {
        okta_idp_id: OKTA_IDP_ID,
        idp: 'bench',
        match: 'email',
        identity_claims: { upstream_groups: 'groups', upstream_tid: 'tid' },
        access_claims: { upstream_tid: 'tid' },
        allow_unverified: true,
      },
    ],
  }),
);
const [sidecarPort, hookPort] = await freePorts(2);
const sidecar = await startSidecarProcess({
  port: sidecarPort,
  env: {
    DATABASE_URL: db.url,
    TOKEN_TAP_KEYS: keys,
    LOG_LEVEL: 'info',
    TOKEN_TAP_API_LISTEN: 'off',
    TOKEN_TAP_HOOK_CONFIG: hookFile,
    OKTA_HOOK_SECRET: SECRET,
  },
  args: ['--hook-listen', `127.0.0.1:${hookPort}`],
});
const { envoy, origin } = await startEnvoyFront({
  idps: [{ name: 'bench', tokenUrl: new URL('http://127.0.0.1:9/token') }],
  sidecarPort,
  mode: 'observability',
  oktaHook: { host: '127.0.0.1', port: hookPort },
});
const url = new URL(`${origin}${OKTA_HOOK_PATH}`);
const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
const results: RunResult[] = [];
try {
  await waitFor(
    'the hook through Envoy',
    async () => {
      const response = await fetch(url, { method: 'POST', headers: { authorization: SECRET, 'content-type': 'application/json' }, body: hookBody(0) }).catch(
        () => undefined,
      );
      return response?.status === 200 ? true : undefined;
    },
    20_000,
  );
  const loadBefore = os.loadavg()[0]!;
  for (const rate of rates) {
    log(`warm-up at ${rate}/s for ${warmupSeconds} s`);
    await run(url, rate, warmupSeconds, agent);
    log(`measuring at ${rate}/s for ${seconds} s`);
    const result = await run(url, rate, seconds, agent);
    results.push(result);
    log(`${rate}/s: p50 ${percentile(result.latencies, 0.5).toFixed(2)} ms, p99 ${percentile(result.latencies, 0.99).toFixed(2)} ms, errors ${result.errors}`);
  }
  const loadAfter = os.loadavg()[0]!;
  const { rows } = await db.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM access_events WHERE operation = 'okta_hook'");
  const cpu = os.cpus();
  const section = [
    START,
    '## Okta token inline hook',
    '',
    `Run ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC with \`node --enable-source-maps dist/bench/okta-hook.js --rates ${rates.join(',')} --seconds ${seconds} --warmup ${warmupSeconds} --grants ${grantCount}\` on ${cpu.length} × ${cpu[0]?.model.trim()}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, Node ${process.version}, Postgres on the same machine (1-minute load average ${loadBefore.toFixed(2)} before, ${loadAfter.toFixed(2)} after; other work shared the machine).`,
    `Okta-shaped com.okta.oauth2.tokens.transform calls through the real Envoy (route POST ${OKTA_HOOK_PATH}, no ext_proc) to \`token-tap serve --hook-listen\` (its own process, hook pool of 4 connections),`,
    `for a random user out of ${grantCount} stored grants: header secret checked, user found by email, grant read and decrypted, identity and access patches built, access_events row written (group commit) before each answer.`,
    'Open loop over keep-alive HTTP/1.1 connections (at most 64), latency counted from when each request was due; the load generator, Envoy, the sidecar and Postgres share the machine.',
    '',
    `| rate | sent | achieved/s | p50 ms | p90 ms | p99 ms | max ms | errors | p99 ≤ ${TARGET_P99_MS} ms |`,
    '|---|---|---|---|---|---|---|---|---|',
    ...results.map((result) => {
      const p99 = percentile(result.latencies, 0.99);
      return `| ${result.rate}/s | ${result.sent} | ${result.achieved.toFixed(2)} | ${percentile(result.latencies, 0.5).toFixed(2)} | ${percentile(result.latencies, 0.9).toFixed(2)} | ${p99.toFixed(2)} | ${(result.latencies.at(-1) ?? NaN).toFixed(2)} | ${result.errors || 'none'} | ${p99 <= TARGET_P99_MS ? 'met' : '**missed**'} |`;
    }),
    '',
    `access_events rows written: ${rows[0]!.n} (warm-ups and the readiness probe included; one per call).`,
    END,
  ].join('\n');
  const current = existsSync(RESULTS_FILE) ? readFileSync(RESULTS_FILE, 'utf8') : '# Benchmark results\n';
  const startAt = current.indexOf(START);
  const endAt = current.indexOf(END);
  const next =
    startAt >= 0 && endAt > startAt ? `${current.slice(0, startAt)}${section}${current.slice(endAt + END.length)}` : `${current.trimEnd()}\n\n${section}\n`;
  writeFileSync(RESULTS_FILE, next);
  log(`written to ${RESULTS_FILE}`);
} finally {
  agent.destroy();
  await envoy.stop();
  await sidecar.stop();
  await db.drop();
}
