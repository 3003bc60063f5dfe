// `token-tap demo`: the whole stack on one machine — a demo IdP (oidc-provider), the sidecar, the
// real Envoy in front — then one login as Okta performs it, and what was captured.
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { pino } from 'pino';
import { loadSidecarConfig } from '../config/sidecar.js';
import type { ProcessingMode } from '../envoyconfig/options.js';
import { renderEnvoyYaml } from '../envoyconfig/render.js';
import { OKTA_HOOK_PATH, tokenRoutePath } from '../contract.js';
import { startSidecar, type Sidecar } from '../sidecar.js';
import { startEnvoy, type RunningEnvoy } from '../ops/envoy-process.js';
import { createLogger } from '../ops/log.js';
import { waitFor } from '../lib/wait-for.js';
import { describeDatabaseUrl } from '../store/pool.js';
import { generateKeySpec } from '../keys/key-ring.js';
import type { GrantRecord } from '../store/grants.js';
import { startEmbeddedPostgres, type EmbeddedPostgres } from './embedded-postgres.js';
import { startDemoIdp, type DemoIdp } from './oidc-idp.js';
import { loginAsOkta } from './okta-client.js';

export interface DemoOptions {
  mode: ProcessingMode;
  /** Exit after the first login instead of serving until Ctrl-C. */
  once: boolean;
  envoyPort: number;
  sidecarPort: number;
  adminPort: number;
  stateDir: string;
}

const IDP_NAME = 'demo';
/** The Okta IdP id the demo's hook file maps to the demo IdP (a real one comes from Okta's admin console). */
const DEMO_OKTA_IDP_ID = '0oaDEMOIDP';

/** The hook's file for the demo: header secret, the demo IdP's groups and tid into Okta's tokens. */
function demoHookFile(stateDir: string): string {
  const file = path.join(stateDir, 'okta-hook.yaml');
  writeFileSync(
    file,
    [
      '# Written by token-tap demo: what TOKEN_TAP_HOOK_CONFIG looks like (docs/okta-hook.md).',
      'authentication:',
      '  header: { name: Authorization, value_env: TOKEN_TAP_DEMO_HOOK_SECRET }',
      'providers:',
      `  - okta_idp_id: ${DEMO_OKTA_IDP_ID}`,
      `    idp: ${IDP_NAME}`,
      '    match: email',
      '    identity_claims: { upstream_groups: groups, upstream_tid: tid }',
      '    access_claims: { upstream_tid: tid }',
      "    allow_unverified: true   # the demo's grants are stored before id_token verification exists",
      '',
    ].join('\n'),
  );
  return file;
}

/** The parts of Okta's com.okta.oauth2.tokens.transform request the hook reads (DESIGN §6a). */
function demoHookRequest(login: string): Record<string, unknown> {
  return {
    eventType: 'com.okta.oauth2.tokens.transform',
    eventTypeVersion: '1.0',
    contentType: 'application/json',
    data: {
      context: {
        session: { login, createdAt: new Date().toISOString(), idp: { id: DEMO_OKTA_IDP_ID, type: 'OIDC' }, amr: ['FEDERATED'] },
        user: { id: '00uDEMOUSER', profile: { login } },
        protocol: { type: 'OAUTH2.0', issuer: { uri: 'https://example.okta.com/oauth2/default' } },
      },
      identity: { claims: { sub: '00uDEMOUSER', email: login, idp: DEMO_OKTA_IDP_ID } },
      access: { claims: { sub: login, uid: '00uDEMOUSER', scp: ['openid', 'email'] } },
    },
  };
}

function shorten(value: string | null | undefined): string {
  if (!value) return '(none)';
  return value.length <= 16 ? `${value.slice(0, 4)}…` : `${value.slice(0, 10)}…${value.slice(-4)} (${value.length} chars)`;
}

/** The demo's key ring lives in the state folder, so `grants show` can read what the demo stored. */
function demoEnvFile(stateDir: string, databaseUrl: string | undefined): { file: string; keys: string } {
  const file = path.join(stateDir, 'demo.env');
  const existing = existsSync(file) ? /^TOKEN_TAP_KEYS=(.+)$/m.exec(readFileSync(file, 'utf8'))?.[1] : undefined;
  const keys = process.env.TOKEN_TAP_KEYS || existing || generateKeySpec('demo1');
  const lines = [`TOKEN_TAP_KEYS=${keys}`, ...(databaseUrl ? [`DATABASE_URL=${databaseUrl}`] : [])];
  writeFileSync(file, `${lines.join('\n')}\n`, { mode: 0o600 });
  return { file, keys };
}

export async function runDemo(options: DemoOptions, out: (line: string) => void = (line) => process.stdout.write(`${line}\n`)): Promise<void> {
  mkdirSync(options.stateDir, { recursive: true });
  const cleanups: Array<() => Promise<unknown>> = [];
  const stopAll = async () => {
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
  };
  try {
    let databaseUrl = process.env.DATABASE_URL;
    let embedded: EmbeddedPostgres | undefined;
    if (!databaseUrl) {
      out('1/5  Postgres: DATABASE_URL is not set, starting the embedded default (PGlite)');
      embedded = await startEmbeddedPostgres(path.join(options.stateDir, 'pgdata'));
      cleanups.push(() => embedded!.stop());
      databaseUrl = embedded.databaseUrl;
      out(`     data in ${embedded.dataDir}, served at ${describeDatabaseUrl(databaseUrl)}`);
    } else {
      out(`1/5  Postgres: ${describeDatabaseUrl(databaseUrl)}`);
    }
    const { file: envFile, keys } = demoEnvFile(options.stateDir, embedded ? undefined : databaseUrl);

    out('2/5  Demo IdP: starting a real OpenID Provider (oidc-provider)');
    const idp: DemoIdp = await startDemoIdp({
      accounts: { alice: { email: 'alice@example.test', name: 'Alice Example', claims: { groups: ['engineering', 'demo-admins'], tid: 'demo-tenant-1' } } },
    });
    cleanups.push(() => idp.close());
    out(`     issuer ${idp.issuer}, token endpoint ${idp.tokenUrl}`);

    const hookSecret = randomBytes(24).toString('base64url');
    out(`3/5  Sidecar: ext_proc on 127.0.0.1:${options.sidecarPort}, logs in ${path.join(options.stateDir, 'sidecar.log')}`);
    // The demo IdP's issuer and Okta's client there: its id_tokens are verified before they are stored.
    const idpConfig = path.join(options.stateDir, 'idps.yaml');
    writeFileSync(idpConfig, `idps:\n  ${IDP_NAME}:\n    issuer: ${idp.issuer}\n    client_id: ${idp.clientId}\n`);
    const config = loadSidecarConfig(
      {
        TOKEN_TAP_SPOOL_DIR: path.join(options.stateDir, 'spool'),
        ...process.env,
        TOKEN_TAP_IDP_CONFIG: idpConfig,
        DATABASE_URL: databaseUrl,
        TOKEN_TAP_KEYS: keys,
        ...(embedded ? { TOKEN_TAP_PG_POOL_SIZE: '1' } : {}),
        TOKEN_TAP_HOOK_CONFIG: demoHookFile(options.stateDir),
        TOKEN_TAP_DEMO_HOOK_SECRET: hookSecret,
      },
      // The hook on a free port: Envoy is rendered after the sidecar, with the port it got.
      { listen: `127.0.0.1:${options.sidecarPort}`, hookListen: '127.0.0.1:0' },
    );
    const logger = createLogger('info', pino.destination({ dest: path.join(options.stateDir, 'sidecar.log'), sync: false }));
    const sidecar: Sidecar = await startSidecar(config, { logger });
    cleanups.push(() => sidecar.close(3_000));

    const tokenUrl = `http://127.0.0.1:${options.envoyPort}${tokenRoutePath(IDP_NAME)}`;
    out(`4/5  Envoy: ${options.mode} mode, listening on 127.0.0.1:${options.envoyPort}, admin on 127.0.0.1:${options.adminPort}`);
    const envoy: RunningEnvoy = await startEnvoy(
      renderEnvoyYaml({
        idps: [{ name: IDP_NAME, tokenUrl: new URL(idp.tokenUrl) }],
        listen: { host: '127.0.0.1', port: options.envoyPort },
        sidecar: { host: '127.0.0.1', port: options.sidecarPort },
        admin: { host: '127.0.0.1', port: options.adminPort },
        mode: options.mode,
        ...(sidecar.hook ? { oktaHook: sidecar.hook.address } : {}),
      }),
      options.adminPort,
    );
    cleanups.push(() => envoy.stop());
    out(`     Okta's IdP token URL would be: ${tokenUrl}`);

    out('5/5  Signing in as Okta does: browser leg to the IdP, token call through Envoy');
    const login = await loginAsOkta(idp, tokenUrl, { loginHint: 'alice' });
    out(`     Okta got HTTP ${login.received.status}, ${login.received.body.length} bytes, id_token for sub=${String(login.claims.sub)}`);
    const grant: GrantRecord = await waitFor('the capture to reach Postgres', () => sidecar.store.findGrant(IDP_NAME, String(login.claims.sub)), 10_000);
    out('');
    out('Captured (tokens shortened; stored AES-256-GCM encrypted):');
    out(`  idp            ${grant.idp}`);
    out(`  subject        ${grant.subject}   email ${grant.email ?? '(none)'}`);
    out(`  issuer         ${grant.issuer ?? '(none)'}   verified ${grant.verified ? "yes (signature against the issuer's JWKS, iss, aud)" : 'NO'}`);
    out(`  access_token   ${shorten(grant.accessToken)}   expires ${grant.accessTokenExpiresAt?.toISOString() ?? '(unknown)'}`);
    out(`  refresh_token  ${shorten(grant.refreshToken)}`);
    out(`  id_token       ${shorten(grant.idToken)}`);
    out(`  scope          ${grant.scope.join(' ')}`);
    out(
      `  same tokens Okta received: ${grant.accessToken === login.tokens.access_token && grant.refreshToken === login.tokens.refresh_token && grant.idToken === login.tokens.id_token ? 'yes' : 'NO'}`,
    );
    if (sidecar.hook) {
      const hookUrl = `http://127.0.0.1:${options.envoyPort}${OKTA_HOOK_PATH}`;
      const response = await fetch(hookUrl, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: hookSecret },
        body: JSON.stringify(demoHookRequest(grant.email ?? 'alice@example.test')),
      });
      out('');
      out(`Okta's token inline hook (POST ${hookUrl}, as Okta calls it when minting tokens for alice) answered HTTP ${response.status}:`);
      for (const line of JSON.stringify(await response.json(), null, 2).split('\n')) out(`  ${line}`);
      out(`  (the hook's file: ${path.join(options.stateDir, 'okta-hook.yaml')})`);
    }
    out('');
    out('Look further:');
    out(`  set -a; . ${envFile}; set +a${embedded ? '   # while the demo runs (the embedded database lives in this process)' : ''}`);
    if (embedded) out(`  export DATABASE_URL='${databaseUrl}'`);
    out(`  npx token-tap grants show --idp ${IDP_NAME} --subject ${grant.subject}`);
    out(`  curl -s ${envoy.adminUrl}/stats | grep ext_proc`);

    if (!options.once) {
      out('');
      out('Running. Press Ctrl-C to stop.');
      await new Promise<void>((resolve) => {
        const stop = () => {
          process.off('SIGINT', stop).off('SIGTERM', stop);
          resolve();
        };
        process.on('SIGINT', stop).on('SIGTERM', stop);
      });
      out('Stopping…');
    }
  } finally {
    await stopAll();
  }
  out('Stopped.');
}
