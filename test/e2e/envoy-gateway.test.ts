// Proof on the real Envoy that the sidecar captures behind Envoy Gateway: Envoy runs a bootstrap
// shaped like Envoy Gateway's translation of what `token-tap envoy-gateway` renders (ext_proc
// disabled on the listener, enabled per targeted rule with an empty per-route config, response
// attributes, no initial metadata), and the sidecar names the IdP from the attributes alone; and
// that the hook rule's rate limit is per client address there too.
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { renderGatewayResources } from '../../src/envoyconfig/envoy-gateway.js';
import type { ProcessingMode } from '../../src/envoyconfig/options.js';
import { parseHookRateLimit } from '../../src/envoyconfig/rate-limit.js';
import { OKTA_HOOK_PATH, tokenRoutePath } from '../../src/contract.js';
import { generateKeySpec } from '../../src/keys/key-ring.js';
import { startEnvoy, type RunningEnvoy } from '../support/envoy.js';
import { envoyGatewayShapedBootstrap } from '../support/envoy-gateway-shape.js';
import { loginAsOkta } from '../support/okta-client.js';
import { startTestIdp, type TestIdp } from '../support/oidc-idp.js';
import { freePort, freePorts, waitFor } from '../support/ports.js';
import { postFrom } from '../support/post-from.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { runCli, startSidecarProcess, type SidecarProcess } from '../support/sidecar.js';

async function metric(sidecar: SidecarProcess, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${sidecar.opsPort}/metrics`)).text();
  const line = text.split('\n').find((row) => row.startsWith(`${name} `) || row.startsWith(`${name}{`));
  return line ? Number(line.split(' ').at(-1)) : 0;
}

for (const mode of ['observability', 'buffered'] as ProcessingMode[]) {
  describe(`behind Envoy Gateway (an Envoy Gateway shaped bootstrap, ${mode} mode)`, function () {
    this.timeout(60_000);
    let idp: TestIdp;
    let db: TestDatabase;
    let sidecar: SidecarProcess;
    let envoy: RunningEnvoy;
    let origin: string;
    let env: Record<string, string>;
    let resources: Array<Record<string, any>>;

    before(async () => {
      idp = await startTestIdp();
      db = await createTestDatabase(`eg_${mode}`);
      // Two rules; the sidecar is told about "demo" only, so "stray" is a route it cannot name.
      resources = renderGatewayResources({
        idps: [
          { name: 'demo', tokenUrl: new URL(idp.tokenUrl) },
          { name: 'stray', tokenUrl: new URL(idp.tokenUrl) },
        ],
        mode,
        namespace: 'token-tap',
        gateway: { name: 'eg', namespace: 'envoy-gateway-system' },
        hostnames: [],
        image: 'idp-token-tap:test',
      });
      const container = resources.find((resource) => resource.kind === 'StatefulSet')!.spec.template.spec.containers[0];
      const routeIdps = (container.env as Array<{ name: string; value?: string }>).find((entry) => entry.name === 'TOKEN_TAP_ROUTE_IDPS')!.value!;
      expect(routeIdps).to.equal('httproute/token-tap/token-tap-idps/demo=demo,httproute/token-tap/token-tap-idps/stray=stray');
      const sidecarPort = await freePort();
      env = {
        DATABASE_URL: db.url,
        TOKEN_TAP_KEYS: generateKeySpec('k1'),
        LOG_LEVEL: 'debug',
        TOKEN_TAP_SPOOL_DIR: mkdtempSync(path.join(os.tmpdir(), 'token-tap-spool-')),
        TOKEN_TAP_ROUTE_IDPS: routeIdps
          .split(',')
          .filter((entry) => !entry.endsWith('=stray'))
          .join(','),
      };
      sidecar = await startSidecarProcess({ port: sidecarPort, env });
      const [listenPort, adminPort] = await freePorts(2);
      const bootstrap = envoyGatewayShapedBootstrap({ resources, listenPort, adminPort, sidecarPort, hookPort: sidecar.opsPort });
      expect(bootstrap).to.not.contain('grpc_initial_metadata');
      envoy = await startEnvoy(bootstrap, adminPort);
      origin = `http://127.0.0.1:${listenPort}`;
    });
    after(async () => {
      await envoy?.stop();
      await sidecar?.stop();
      await idp?.close();
      await db?.drop();
      if (env?.TOKEN_TAP_SPOOL_DIR) rmSync(env.TOKEN_TAP_SPOOL_DIR, { recursive: true, force: true });
    });

    it('identifies the IdP from the response attributes and captures the login', async () => {
      const login = await loginAsOkta(idp, `${origin}${tokenRoutePath('demo')}`);
      expect(login.claims.sub).to.equal('alice');
      const grant = await waitFor('the grant', async () => {
        const result = await runCli(['grants', 'show', '--idp', 'demo', '--subject', 'alice'], env);
        return result.code === 0 ? (JSON.parse(result.stdout) as Record<string, unknown>) : undefined;
      });
      expect(grant).to.include({ idp: 'demo', subject: 'alice', refresh_token: login.tokens.refresh_token, id_token: login.tokens.id_token });
      const { rows } = await db.pool.query('SELECT idp, subject, outcome FROM capture_events');
      expect(rows).to.deep.equal([{ idp: 'demo', subject: 'alice', outcome: 'stored' }]);
      const stats = await envoy.stats();
      expect(stats.get('http.eg.ext_proc.streams_started'), 'one ext_proc stream, for the token call').to.equal(1);
    });

    it('runs ext_proc only on the targeted rules: the hook rule gets no stream', async () => {
      const before = (await envoy.stats()).get('http.eg.ext_proc.streams_started') ?? 0;
      const response = await fetch(`${origin}/okta/token-hook`, { method: 'POST', body: '{}' });
      await response.arrayBuffer();
      expect(response.status).to.not.equal(503);
      expect((await envoy.stats()).get('http.eg.ext_proc.streams_started') ?? 0).to.equal(before);
    });

    it('a route the sidecar cannot name is counted and logged, not stored', async () => {
      const login = await loginAsOkta(idp, `${origin}${tokenRoutePath('stray')}`);
      expect(login.claims.sub).to.equal('alice');
      await waitFor('the unnamed route count', async () => ((await metric(sidecar, 'token_tap_unnamed_route_responses_total')) >= 1 ? true : undefined));
      expect(sidecar.logs()).to.contain('httproute/token-tap/token-tap-idps/stray');
      const { rows } = await db.pool.query<{ idp: string }>('SELECT idp FROM capture_events');
      expect(rows.map((row) => row.idp)).to.deep.equal(['demo']);
    });
  });
}

describe("behind Envoy Gateway: the Okta hook rule's BackendTrafficPolicy (an Envoy Gateway shaped bootstrap)", function () {
  this.timeout(60_000);
  let hook: http.Server;
  let hookCalls = 0;
  let envoy: RunningEnvoy;
  let hookUrl: string;

  before(async () => {
    // Stands in for the sidecar's hook listener: counts the calls the gateway lets through, refuses them all.
    hook = http.createServer((request, response) => {
      hookCalls += 1;
      request.resume();
      request.on('end', () => response.writeHead(401, { 'content-length': 0 }).end());
    });
    await new Promise<void>((resolve) => hook.listen(0, '127.0.0.1', resolve));
    const resources = renderGatewayResources({
      idps: [{ name: 'demo', tokenUrl: new URL('http://127.0.0.1:9/token') }],
      mode: 'observability',
      namespace: 'token-tap',
      gateway: { name: 'eg', namespace: 'envoy-gateway-system' },
      hostnames: [],
      image: 'idp-token-tap:test',
      oktaHookRateLimit: parseHookRateLimit('3/m'),
    });
    const [listenPort, adminPort, sidecarPort] = await freePorts(3);
    envoy = await startEnvoy(
      envoyGatewayShapedBootstrap({ resources, listenPort, adminPort, sidecarPort, hookPort: (hook.address() as AddressInfo).port }),
      adminPort,
    );
    hookUrl = `http://127.0.0.1:${listenPort}${OKTA_HOOK_PATH}`;
  });
  after(async () => {
    await envoy?.stop();
    hook?.closeAllConnections();
    if (hook) await new Promise((resolve) => hook.close(resolve));
  });

  it('limits each client address on its own: while 127.0.0.1 is refused (429), 127.0.0.2 still reaches the hook', async () => {
    const before = hookCalls;
    const post = (from: string, headers: Record<string, string> = {}) =>
      postFrom(hookUrl, from, { headers: { 'content-type': 'application/json', ...headers }, body: '{}' });
    const flood: number[] = [];
    for (let call = 0; call < 5; call += 1) flood.push(await post('127.0.0.1', { 'x-forwarded-for': '127.0.0.2' }));
    expect(flood, 'the flood, naming the other client in X-Forwarded-For').to.deep.equal([401, 401, 401, 429, 429]);
    expect(await post('127.0.0.2'), 'the other client').to.equal(401);
    expect(await post('127.0.0.1'), 'the first client, still refused').to.equal(429);
    expect(hookCalls - before, 'calls that reached the hook').to.equal(4);
  });
});
