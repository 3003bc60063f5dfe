// The end-to-end stack, started in the order the data flows back: the IdP (upstream), then the
// sidecar, then Envoy in front of both — as envoyproxy/ai-gateway's data-plane tests do.
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { EnvoyConfigOptions, IdpRoute, ProcessingMode, ProfileRoute } from '../../src/envoyconfig/options.js';
import { tokenRoutePath } from '../../src/contract.js';
import { generateKeySpec } from '../../src/keys/key-ring.js';
import { startEnvoyFront, type RunningEnvoy } from './envoy.js';
import { startTestIdp, type TestIdp } from './oidc-idp.js';
import { freePort, waitFor } from './ports.js';
import { createTestDatabase, type TestDatabase } from './postgres.js';
import { startSidecarProcess, type SidecarProcess } from './sidecar.js';

export const IDP_NAME = 'demo';

export interface Stack {
  idp: TestIdp;
  db: TestDatabase;
  sidecar: SidecarProcess | undefined;
  envoy: RunningEnvoy;
  /** What Okta's IdP "token URL" is set to: Envoy's route for the IdP. */
  tokenUrl: string;
  /** Envoy's listener, http://127.0.0.1:<port> (https with TLS). */
  origin: string;
  /** Envoy's readiness endpoint: 200 only while Envoy sees the sidecar healthy. */
  readyUrl: string;
  sidecarEnv: Record<string, string>;
  restartSidecar(): Promise<SidecarProcess>;
  /**
   * restartSidecar(), then waits until Envoy has health-checked the new sidecar and sees it healthy.
   * A login before that may find it still marked unhealthy from the restart (panic threshold 0) and
   * pass uncaptured, fail open; the slower the sidecar starts (under coverage, say), the likelier.
   */
  restartSidecarSeenByEnvoy(): Promise<SidecarProcess>;
  stop(): Promise<void>;
}

export interface StackOptions {
  label: string;
  idpOptions?: Parameters<typeof startTestIdp>[0];
  /** Serve Envoy's listener over TLS with these files. */
  tls?: { certFile: string; keyFile: string };
  /** More environment and arguments for `token-tap serve` (kept across restartSidecar()); TOKEN_TAP_EXTPROC_TLS_*, say. */
  sidecarEnv?: Record<string, string>;
  sidecarArgs?: string[];
  /** The sidecar's Okta hook port: Envoy gets the route /okta/token-hook to it. */
  oktaHookPort?: number;
  /** The sidecar on this Unix socket instead of a loopback port. */
  sidecarSocket?: string;
  /** Envoy's side of mTLS to the sidecar (the sidecar's side goes in `sidecarEnv`). */
  sidecarTls?: EnvoyConfigOptions['sidecarTls'];
  /** More IdP token routes beside the test IdP's (a fixture IdP's, say), and profile routes. */
  moreIdps?: IdpRoute[];
  profiles?: ProfileRoute[];
}

export async function startStack(mode: ProcessingMode, options: StackOptions): Promise<Stack> {
  const idp = await startTestIdp(options.idpOptions);
  const db = await createTestDatabase(options.label);
  const sidecarPort = await freePort();
  const sidecarEnv = {
    DATABASE_URL: db.url,
    TOKEN_TAP_KEYS: `${generateKeySpec('k1')}`,
    LOG_LEVEL: process.env.TOKEN_TAP_TEST_LOG_LEVEL ?? 'debug',
    // Kept across restartSidecar(), so a restarted sidecar replays what the last one spooled.
    TOKEN_TAP_SPOOL_DIR: mkdtempSync(path.join(os.tmpdir(), 'token-tap-spool-')),
    ...options.sidecarEnv,
  };
  const args = options.sidecarArgs ?? [];
  const listen = options.sidecarSocket ? `unix:${options.sidecarSocket}` : undefined;
  let sidecar: SidecarProcess | undefined = await startSidecarProcess({ port: sidecarPort, env: sidecarEnv, args, ...(listen ? { listen } : {}) });
  const { envoy, origin, readyUrl } = await startEnvoyFront({
    idps: [{ name: IDP_NAME, tokenUrl: new URL(idp.tokenUrl) }, ...(options.moreIdps ?? [])],
    ...(options.profiles ? { profiles: options.profiles } : {}),
    sidecarPort,
    mode,
    ...(options.tls ? { tls: options.tls } : {}),
    ...(options.oktaHookPort ? { oktaHook: { host: '127.0.0.1', port: options.oktaHookPort } } : {}),
    ...(options.sidecarSocket ? { sidecar: { socket: options.sidecarSocket } } : {}),
    ...(options.sidecarTls ? { sidecarTls: options.sidecarTls } : {}),
  });
  const stack: Stack = {
    idp,
    db,
    get sidecar() {
      return sidecar;
    },
    set sidecar(value) {
      sidecar = value;
    },
    envoy,
    tokenUrl: `${origin}${tokenRoutePath(IDP_NAME)}`,
    origin,
    readyUrl,
    sidecarEnv,
    async restartSidecar() {
      await sidecar?.stop();
      sidecar = await startSidecarProcess({ port: sidecarPort, env: sidecarEnv, args, ...(listen ? { listen } : {}) });
      return sidecar;
    },
    async restartSidecarSeenByEnvoy() {
      const restarted = await stack.restartSidecar();
      // The old sidecar has exited: every health check that succeeds from now on reached the new one.
      const checked = async () => (await envoy.stats()).get('cluster.token_tap_sidecar.health_check.success') ?? 0;
      const before = await checked();
      await waitFor(
        'Envoy to health-check the restarted sidecar',
        async () => ((await checked()) > before && (await envoy.stats()).get('cluster.token_tap_sidecar.membership_healthy') === 1 ? true : undefined),
        10_000,
        50,
      );
      return restarted;
    },
    async stop() {
      await envoy.stop();
      await sidecar?.stop();
      await idp.close();
      await db.drop();
      rmSync(sidecarEnv.TOKEN_TAP_SPOOL_DIR, { recursive: true, force: true });
    },
  };
  return stack;
}
