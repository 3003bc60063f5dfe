// Issue 12: the optional Envoy-side guards envoy-config renders, through the real Envoy: a source
// allow-list (RBAC, 403 before anything else) and a rate limit on the token routes (429); and the
// rate limit on the Okta hook route, on by default (429 before the sidecar's hook listener).
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { expect } from 'chai';
import { OKTA_HOOK_PATH, tokenRoutePath } from '../../src/contract.js';
import { parseCidr, parseHookRateLimit, type RateLimit } from '../../src/envoyconfig/render.js';
import { startEnvoyFront, type EnvoyFront } from '../support/envoy.js';
import { loginAsOkta } from '../support/okta-client.js';
import { startTestIdp, type TestIdp } from '../support/oidc-idp.js';
import { freePort } from '../support/ports.js';

const IDP = 'demo';

async function postToken(front: EnvoyFront): Promise<{ status: number; body: string }> {
  const response = await fetch(`${front.origin}${tokenRoutePath(IDP)}`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: 'grant_type=authorization_code&code=not-a-code',
  });
  return { status: response.status, body: await response.text() };
}

describe('Envoy-side guards (real Envoy)', function () {
  this.timeout(60_000);
  let idp: TestIdp;
  const fronts: EnvoyFront[] = [];

  before(async () => {
    idp = await startTestIdp();
  });
  after(async () => {
    for (const front of fronts) await front.envoy.stop();
    await idp?.close();
  });

  // No sidecar runs: Envoy fails open, which these guards do not depend on.
  async function front(options: { allowSources?: string[]; tokenRateLimit?: { requests: number; perSeconds: number }; hookPort?: number; hookRateLimit?: RateLimit | false }): Promise<EnvoyFront> {
    const started = await startEnvoyFront({
      idps: [{ name: IDP, tokenUrl: new URL(idp.tokenUrl) }],
      sidecarPort: await freePort(),
      mode: 'observability',
      ...(options.allowSources ? { allowSources: options.allowSources.map(parseCidr) } : {}),
      ...(options.tokenRateLimit ? { tokenRateLimit: options.tokenRateLimit } : {}),
      ...(options.hookPort ? { oktaHook: { host: '127.0.0.1', port: options.hookPort } } : {}),
      ...(options.hookRateLimit !== undefined ? { oktaHookRateLimit: options.hookRateLimit } : {}),
    });
    fronts.push(started);
    return started;
  }

  it('allow-list 10.0.0.0/8: a call from 127.0.0.1 gets 403 and never reaches the IdP', async () => {
    const guarded = await front({ allowSources: ['10.0.0.0/8'] });
    const before = idp.tokenResponses.length;
    const refused = await postToken(guarded);
    expect(refused.status).to.equal(403);
    expect(refused.body).to.contain('RBAC');
    // Every route, not only the token routes.
    expect((await fetch(`${guarded.origin}/anything`)).status).to.equal(403);
    expect(idp.tokenResponses.length, 'calls that reached the IdP').to.equal(before);
    expect((await guarded.envoy.stats()).get('http.okta_ingress.rbac.denied')).to.be.greaterThan(0);
  });

  it('allow-list 127.0.0.0/8: the login passes', async () => {
    const guarded = await front({ allowSources: ['10.0.0.0/8', '127.0.0.0/8'] });
    const login = await loginAsOkta(idp, `${guarded.origin}${tokenRoutePath(IDP)}`);
    expect(login.claims.sub).to.equal('alice');
    expect(login.received.status).to.equal(200);
  });

  it('rate limit 3 per 60 s: the fourth call gets 429 from Envoy, not from the IdP', async () => {
    const limited = await front({ tokenRateLimit: { requests: 3, perSeconds: 60 } });
    const before = idp.tokenResponses.length;
    const statuses: number[] = [];
    for (let call = 0; call < 5; call += 1) statuses.push((await postToken(limited)).status);
    // The IdP's own answer to a bad code is 400.
    expect(statuses).to.deep.equal([400, 400, 400, 429, 429]);
    expect(idp.tokenResponses.length - before, 'calls that reached the IdP').to.equal(3);
    // Other routes are not limited.
    expect((await fetch(`${limited.origin}/anything`)).status).to.equal(404);
  });

  describe('the Okta hook route', () => {
    // Stands in for the sidecar's hook listener: counts the calls Envoy lets through, refuses them all.
    let hook: http.Server;
    let hookCalls = 0;
    before(async () => {
      hook = http.createServer((request, response) => {
        hookCalls += 1;
        request.resume();
        request.on('end', () => response.writeHead(401, { 'content-length': 0 }).end());
      });
      await new Promise<void>((resolve) => hook.listen(0, '127.0.0.1', resolve));
    });
    after(async () => {
      hook.closeAllConnections();
      await new Promise((resolve) => hook.close(resolve));
    });
    const hookPort = () => (hook.address() as AddressInfo).port;
    const postHook = async (limited: EnvoyFront) =>
      (await fetch(`${limited.origin}${OKTA_HOOK_PATH}`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: 'wrong' }, body: '{}' })).status;

    it('--okta-hook-rate-limit 3/m:3: the fourth call gets 429 from Envoy and never reaches the hook listener', async () => {
      const limited = await front({ hookPort: hookPort(), hookRateLimit: parseHookRateLimit('3/m:3') });
      const before = hookCalls;
      const statuses: number[] = [];
      for (let call = 0; call < 5; call += 1) statuses.push(await postHook(limited));
      expect(statuses).to.deep.equal([401, 401, 401, 429, 429]);
      expect(hookCalls - before, 'calls that reached the hook listener').to.equal(3);
      expect((await limited.envoy.stats()).get('okta_hook_rate_limit.http_local_rate_limit.rate_limited')).to.equal(2);
      // The token routes are not limited by it.
      expect((await postToken(limited)).status).to.equal(400);
    });

    it('by default (100/s, 200 at once): a flood of 600 calls at once is cut to the bucket', async () => {
      const limited = await front({ hookPort: hookPort() });
      const before = hookCalls;
      const started = Date.now();
      const statuses = await Promise.all(Array.from({ length: 600 }, () => postHook(limited)));
      const seconds = (Date.now() - started) / 1000;
      const passed = hookCalls - before;
      expect(statuses.filter((status) => status === 401).length).to.equal(passed);
      expect(statuses.filter((status) => status !== 401 && status !== 429), 'only 401 (the hook) and 429 (Envoy)').to.deep.equal([]);
      // 200 at once, then 100 more each second the flood lasted (it lasts well under a second here).
      console.log(`      ${passed} of 600 passed in ${seconds.toFixed(2)} s`);
      expect(passed, `${passed} passed in ${seconds.toFixed(2)} s`).to.be.at.least(200).and.at.most(200 + 100 * Math.ceil(seconds + 1));
      expect(seconds, 'the flood must be quicker than the bucket refills').to.be.below(3);
    });

    it('"off": no bucket on the hook route', async () => {
      const open = await front({ hookPort: hookPort(), hookRateLimit: false });
      const statuses = await Promise.all(Array.from({ length: 50 }, () => postHook(open)));
      expect(new Set(statuses)).to.deep.equal(new Set([401]));
    });
  });
});
