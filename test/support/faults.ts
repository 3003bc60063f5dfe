// Helpers for the fault tests: logins driven through the real Envoy and checked byte for byte,
// Envoy's view of the sidecar, the sidecar's own /metrics, and the rig the spool fault tests share.
import { mkdtempSync, rmSync } from 'node:fs';
import type pg from 'pg';
import os from 'node:os';
import path from 'node:path';
import type { ProcessingMode } from '../../src/envoyconfig/render.js';
import type { IdpRoute, ProfileRoute } from '../../src/envoyconfig/options.js';
import { tokenRoutePath } from '../../src/contract.js';
import { fingerprint, generateKeySpec, type KeyRing } from '../../src/keys/key-ring.js';
import { startEnvoyFront, type RunningEnvoy } from './envoy.js';
import { startTestIdp, type RawHttpResponse, type TestIdp } from './oidc-idp.js';
import { loginAsOkta, type ReceivedResponse } from './okta-client.js';
import { freePort, waitFor } from './ports.js';
import { createTestDatabase, type TestDatabase } from './postgres.js';
import { startSidecarProcess, type SidecarProcess } from './sidecar.js';

const FAULT_IDP = 'demo';

// Connection-level headers belong to each hop, not to the response (RFC 9110 7.6.1).
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'proxy-connection']);

/** Header fields as [lower-case name, value], hop-by-hop ones left out, sorted: comparable across hops. */
export function endToEndHeaders(headers: Array<[string, string]>): Array<[string, string]> {
  return headers
    .map(([name, value]): [string, string] => [name.toLowerCase(), value])
    .filter(([name]) => !HOP_BY_HOP.has(name))
    .sort();
}

/** What Okta received is what the IdP sent: status, end-to-end headers and body bytes. */
export function relayedUnchanged(sent: RawHttpResponse, received: ReceivedResponse): boolean {
  return (
    sent.status === received.status &&
    sent.body.equals(received.body) &&
    JSON.stringify(endToEndHeaders(sent.headers)) === JSON.stringify(endToEndHeaders(received.headers))
  );
}

export interface LoginTally {
  total: number;
  ok: number;
  /** The slowest login, in milliseconds. */
  slowestMs: number;
  /** Logins whose token response reached the client exactly as the IdP sent it. */
  unchanged: number;
  accessTokens: string[];
  failures: string[];
}

function emptyTally(): LoginTally {
  return { total: 0, ok: 0, slowestMs: 0, unchanged: 0, accessTokens: [], failures: [] };
}

async function oneLogin(idp: TestIdp, tokenUrl: string, tally: LoginTally): Promise<void> {
  tally.total += 1;
  const started = Date.now();
  try {
    const login = await loginAsOkta(idp, tokenUrl);
    tally.slowestMs = Math.max(tally.slowestMs, Date.now() - started);
    tally.ok += 1;
    tally.accessTokens.push(login.tokens.access_token);
    const sent = idp.tokenResponses.find((response) => response.body.equals(login.received.body));
    if (sent && relayedUnchanged(sent, login.received)) tally.unchanged += 1;
    else tally.failures.push(`login ${tally.total}: response differs from what the IdP sent`);
  } catch (error) {
    tally.failures.push(`login ${tally.total}: ${(error as Error).message}`);
  }
}

/**
 * Logins as Okta through Envoy, `concurrency` at a time, until `count` have run or `until()` says
 * stop; `onLogin` runs after each (a test's moment to inject its fault).
 */
export async function driveLogins(
  idp: TestIdp,
  tokenUrl: string,
  options: { count?: number; until?: () => boolean; concurrency?: number; onLogin?: (tally: LoginTally) => void | Promise<void> },
  tally: LoginTally = emptyTally(),
): Promise<LoginTally> {
  const more = () => (options.count === undefined || tally.total < options.count) && !(options.until?.() ?? false);
  const worker = async () => {
    while (more()) {
      await oneLogin(idp, tokenUrl, tally);
      await options.onLogin?.(tally);
    }
  };
  await Promise.all(Array.from({ length: options.concurrency ?? 4 }, worker));
  return tally;
}

export interface FaultEnvoy {
  envoy: RunningEnvoy;
  tokenUrl: string;
  /** Envoy's listener, http://127.0.0.1:<port>: the other routes' base. */
  origin: string;
  /** Envoy's readiness listener's /ready (it also serves /stats/prometheus). */
  readyUrl: string;
  stop(): Promise<void>;
}

/** More routes beside the fault IdP's token route (a fixture IdP's token and profile routes, say). */
export interface MoreRoutes {
  moreIdps?: IdpRoute[];
  profiles?: ProfileRoute[];
}

export async function startFaultEnvoy(mode: ProcessingMode, idp: TestIdp, sidecarPort: number, routes: MoreRoutes = {}): Promise<FaultEnvoy> {
  const idps = [{ name: FAULT_IDP, tokenUrl: new URL(idp.tokenUrl) }, ...(routes.moreIdps ?? [])];
  const { envoy, origin, readyUrl } = await startEnvoyFront({ idps, ...(routes.profiles ? { profiles: routes.profiles } : {}), sidecarPort, mode });
  return { envoy, tokenUrl: `${origin}${tokenRoutePath(FAULT_IDP)}`, origin, readyUrl, stop: () => envoy.stop() };
}

export async function envoyStat(envoy: RunningEnvoy, name: string): Promise<number> {
  return (await envoy.stats()).get(name) ?? 0;
}

/** Waits until Envoy's health check sees the sidecar as `healthy` (or not). */
export async function waitForSidecarHealth(envoy: RunningEnvoy, healthy: boolean, timeoutMs = 10_000): Promise<void> {
  await waitFor(
    `Envoy to see the sidecar ${healthy ? 'healthy' : 'unhealthy'}`,
    async () => ((await envoyStat(envoy, 'cluster.token_tap_sidecar.membership_healthy')) === (healthy ? 1 : 0) ? true : undefined),
    timeoutMs,
    50,
  );
}

/** The sidecar's /metrics, as `name{labels}` → value. */
export async function scrapeMetrics(opsPort: number): Promise<{ text: string; values: Map<string, number> }> {
  const text = await (await fetch(`http://127.0.0.1:${opsPort}/metrics`)).text();
  const values = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line.startsWith('#') || line.trim() === '') continue;
    const at = line.lastIndexOf(' ');
    values.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return { text, values };
}

/** Sums a metric over all its label sets. */
/** One metric of a sidecar process (its /metrics), summed over its series. */
export async function sidecarMetric(opsPort: number, name: string): Promise<number> {
  return metricSum((await scrapeMetrics(opsPort)).values, name);
}

/** The access-token fingerprints of every capture event; none before a sidecar made the schema. */
export async function storedFingerprints(pool: pg.Pool): Promise<string[]> {
  const { rows: exists } = await pool.query<{ table: string | null }>("SELECT to_regclass('capture_events')::text AS table");
  if (!exists[0]!.table) return [];
  const { rows } = await pool.query<{ access_token_fp: string }>('SELECT access_token_fp FROM capture_events');
  return rows.map((row) => row.access_token_fp);
}

export function metricSum(values: Map<string, number>, name: string): number {
  let sum = 0;
  for (const [key, value] of values) if (key === name || key.startsWith(`${name}{`)) sum += value;
  return sum;
}

/** Capture events in Postgres for these access tokens: found once, found more than once, missing. */
export function tallyFingerprints(
  ring: KeyRing,
  accessTokens: string[],
  storedFingerprints: string[],
): { stored: number; duplicated: number; missing: number } {
  const counts = new Map<string, number>();
  for (const fp of storedFingerprints) counts.set(fp, (counts.get(fp) ?? 0) + 1);
  let stored = 0;
  let duplicated = 0;
  let missing = 0;
  for (const token of accessTokens) {
    const seen = counts.get(fingerprint(ring, token)) ?? 0;
    if (seen === 0) missing += 1;
    else stored += 1;
    if (seen > 1) duplicated += 1;
  }
  return { stored, duplicated, missing };
}

/**
 * What the spool fault tests share: an IdP, a database, Envoy in front of one sidecar port, and a
 * spool folder and key ring kept across sidecar restarts, so a restarted sidecar replays it.
 */
export interface SpoolRig {
  idp: TestIdp;
  db: TestDatabase;
  front: FaultEnvoy;
  spoolDir: string;
  keys: string;
  /** The sidecar running now, if any. */
  sidecar: SidecarProcess | undefined;
  /** Starts the sidecar against `databaseUrl` (extra env on top) and waits until Envoy sees it healthy. */
  start(databaseUrl: string, env?: Record<string, string>, options?: { unreaped?: boolean }): Promise<SidecarProcess>;
  /** Stops the running sidecar with `signal` and forgets it; resolves to its exit code. */
  stopSidecar(signal: NodeJS.Signals): Promise<number | null>;
  close(): Promise<void>;
}

export async function startSpoolRig(
  mode: ProcessingMode,
  label: string,
  idpOptions?: Parameters<typeof startTestIdp>[0],
  routes?: MoreRoutes,
): Promise<SpoolRig> {
  const idp = await startTestIdp(idpOptions);
  const db = await createTestDatabase(label);
  const port = await freePort();
  const spoolDir = mkdtempSync(path.join(os.tmpdir(), 'token-tap-spool-'));
  const front = await startFaultEnvoy(mode, idp, port, routes);
  const started: SidecarProcess[] = [];
  const rig: SpoolRig = {
    idp,
    db,
    front,
    spoolDir,
    keys: generateKeySpec('k1'),
    sidecar: undefined,
    async start(databaseUrl, env = {}, options = {}) {
      rig.sidecar = await startSidecarProcess({
        port,
        env: { DATABASE_URL: databaseUrl, TOKEN_TAP_KEYS: rig.keys, TOKEN_TAP_SPOOL_DIR: spoolDir, LOG_LEVEL: 'info', ...env },
        unreaped: options.unreaped,
      });
      started.push(rig.sidecar);
      await waitForSidecarHealth(front.envoy, true);
      return rig.sidecar;
    },
    async stopSidecar(signal) {
      const running = rig.sidecar;
      rig.sidecar = undefined;
      return running ? running.stop(signal) : null;
    },
    async close() {
      await rig.stopSidecar('SIGKILL');
      for (const sidecar of started) await sidecar.stopParent();
      await front.stop();
      await idp.close();
      await db.drop();
      rmSync(spoolDir, { recursive: true, force: true });
    },
  };
  return rig;
}

/** A database URL nothing listens on: Postgres away. */
export async function unreachableDatabaseUrl(): Promise<string> {
  return `postgres://postgres@127.0.0.1:${await freePort()}/nowhere`;
}
