// Issue 12: the optional Envoy-side guards envoy-config renders, through the real Envoy: a source
// allow-list (RBAC, 403 before anything else) and a rate limit on the token routes (429); and the
// rate limit on the Okta hook route, on by default (429 before the sidecar's hook listener), a
// bucket per client address: one client's flood never gets another (Okta) refused.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { expect } from 'chai';
import { OKTA_HOOK_PATH, tokenRoutePath } from '../../src/contract.js';
import { parseCidr } from '../../src/envoyconfig/flags.js';
import { parseHookRateLimit, type RateLimit } from '../../src/envoyconfig/rate-limit.js';
import { startEnvoyFront, type EnvoyFront } from '../support/envoy.js';
import { loginAsOkta } from '../support/okta-client.js';
import { startTestIdp, type TestIdp } from '../support/oidc-idp.js';
import { freePort } from '../support/ports.js';
import { postFrom } from '../support/post-from.js';

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
  async function front(options: {
    allowSources?: string[];
    tokenRateLimit?: { requests: number; perSeconds: number };
    hookPort?: number;
    hookRateLimit?: RateLimit | false;
    xffTrustedHops?: number;
  }): Promise<EnvoyFront> {
    const started = await startEnvoyFront({
      idps: [{ name: IDP, tokenUrl: new URL(idp.tokenUrl) }],
      sidecarPort: await freePort(),
      mode: 'observability',
      ...(options.allowSources ? { allowSources: options.allowSources.map(parseCidr) } : {}),
      ...(options.tokenRateLimit ? { tokenRateLimit: options.tokenRateLimit } : {}),
      ...(options.hookPort ? { oktaHook: { host: '127.0.0.1', port: options.hookPort } } : {}),
      ...(options.hookRateLimit !== undefined ? { oktaHookRateLimit: options.hookRateLimit } : {}),
      ...(options.xffTrustedHops !== undefined ? { xffTrustedHops: options.xffTrustedHops } : {}),
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
    let lastHeaders: http.IncomingHttpHeaders = {};
    before(async () => {
      hook = http.createServer((request, response) => {
        hookCalls += 1;
        lastHeaders = request.headers;
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
      (
        await fetch(`${limited.origin}${OKTA_HOOK_PATH}`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: 'wrong' },
          body: '{}',
        })
      ).status;
    // A call from a given client address: the socket bound to it.
    const postHookFrom = (limited: EnvoyFront, localAddress: string, headers: Record<string, string> = {}) =>
      postFrom(`${limited.origin}${OKTA_HOOK_PATH}`, localAddress, {
        headers: { 'content-type': 'application/json', authorization: 'wrong', ...headers },
        body: '{}',
      });
    const OTHER_CLIENT = '127.0.0.2';

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

    it('per client address: while 127.0.0.1 is refused (429), a call from 127.0.0.2 still reaches the hook listener', async () => {
      const limited = await front({ hookPort: hookPort(), hookRateLimit: parseHookRateLimit('3/m:3') });
      const before = hookCalls;
      const flood: number[] = [];
      for (let call = 0; call < 5; call += 1) flood.push(await postHookFrom(limited, '127.0.0.1'));
      expect(flood).to.deep.equal([401, 401, 401, 429, 429]);
      // The other client's bucket is its own: full, though the first one's is empty.
      expect(await postHookFrom(limited, OTHER_CLIENT), 'the other client').to.equal(401);
      expect(await postHookFrom(limited, '127.0.0.1'), 'the first client, still refused').to.equal(429);
      expect(hookCalls - before, 'calls that reached the hook listener').to.equal(4);
      expect((await limited.envoy.stats()).get('okta_hook_rate_limit.http_local_rate_limit.rate_limited')).to.equal(3);
      // Envoy judges the client's address itself (use_remote_address) but tells the upstream nothing new.
      expect(lastHeaders).to.not.have.any.keys('x-envoy-external-address', 'x-envoy-internal', 'x-forwarded-for');
    });

    it("keeps many clients' buckets at once: 25 other addresses calling do not free a refused client", async () => {
      const limited = await front({ hookPort: hookPort(), hookRateLimit: parseHookRateLimit('3/m:3') });
      for (let call = 0; call < 3; call += 1) await postHookFrom(limited, '127.0.0.1');
      expect(await postHookFrom(limited, '127.0.0.1')).to.equal(429);
      // More addresses than Envoy's default of 20 dynamic buckets: with it, 127.0.0.1's would be dropped and start full.
      for (let host = 3; host < 28; host += 1) expect(await postHookFrom(limited, `127.0.0.${host}`), `127.0.0.${host}`).to.equal(401);
      expect(await postHookFrom(limited, '127.0.0.1'), 'the refused client, after them').to.equal(429);
    });

    it("a caller's X-Forwarded-For is not its address: no fresh bucket per value, and no emptying another client's", async () => {
      const limited = await front({ hookPort: hookPort(), hookRateLimit: parseHookRateLimit('3/m:3') });
      // The flood names the other client (say, Okta's address) and ever new ones in X-Forwarded-For.
      const flood: number[] = [];
      for (let call = 0; call < 6; call += 1)
        flood.push(await postHookFrom(limited, '127.0.0.1', { 'x-forwarded-for': call % 2 === 0 ? OTHER_CLIENT : `10.0.0.${call}` }));
      expect(flood).to.deep.equal([401, 401, 401, 429, 429, 429]);
      expect(await postHookFrom(limited, OTHER_CLIENT), 'the client the flood named').to.equal(401);
    });

    it('--xff-trusted-hops 1 (behind a proxy that appends the client): the client is the last X-Forwarded-For address', async () => {
      const limited = await front({ hookPort: hookPort(), hookRateLimit: parseHookRateLimit('2/m:2'), xffTrustedHops: 1 });
      // All from one connection address, as through a load balancer.
      const viaProxy = (client: string) => postHookFrom(limited, '127.0.0.1', { 'x-forwarded-for': `203.0.113.66, ${client}` });
      expect([await viaProxy('198.51.100.1'), await viaProxy('198.51.100.1'), await viaProxy('198.51.100.1')]).to.deep.equal([401, 401, 429]);
      expect(await viaProxy('198.51.100.2'), 'another client behind the proxy').to.equal(401);
      // Without the header: the connection's own address, a bucket of its own.
      expect(await postHookFrom(limited, '127.0.0.1'), 'no X-Forwarded-For').to.equal(401);
    });

    it('by default (100/s, 200 at once, per client): a flood from one address is cut to its bucket, and another address gets through all the while', async () => {
      const limited = await front({ hookPort: hookPort() });
      const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
      const before = hookCalls;
      const started = Date.now();
      // 50 callers at once from 127.0.0.1, each calling again as soon as it is answered.
      const flood: number[] = [];
      let flooding = true;
      const callers = Promise.all(
        Array.from({ length: 50 }, async () => {
          while (flooding) flood.push(await postHook(limited));
        }),
      );
      const refusals = () => flood.filter((status) => status === 429).length;
      while (refusals() === 0 && Date.now() - started < 10_000) await sleep(5);
      // Okta (another address) calls five times over a second while the flood is being refused.
      const refusedBefore = refusals();
      const other: number[] = [];
      for (let call = 0; call < 5; call += 1) {
        other.push(await postHookFrom(limited, OTHER_CLIENT));
        await sleep(200);
      }
      const refusedMeanwhile = refusals() - refusedBefore;
      flooding = false;
      await callers;
      const seconds = (Date.now() - started) / 1000;
      expect(refusedBefore, 'the flood was refused').to.be.greaterThan(0);
      expect(refusedMeanwhile, 'the flood was refused while the other address called').to.be.greaterThan(0);
      expect(other, 'the other address').to.deep.equal([401, 401, 401, 401, 401]);
      const passed = hookCalls - before - other.length;
      expect(flood.filter((status) => status === 401).length).to.equal(passed);
      expect(
        flood.filter((status) => status !== 401 && status !== 429),
        'only 401 (the hook) and 429 (Envoy)',
      ).to.deep.equal([]);
      // 200 at once, then 100 more each second the flood lasted.
      console.log(`      ${passed} of the flood's ${flood.length} calls passed in ${seconds.toFixed(2)} s; the other address: ${other.join(', ')}`);
      expect(passed, `${passed} passed in ${seconds.toFixed(2)} s`)
        .to.be.at.least(200)
        .and.at.most(200 + 100 * Math.ceil(seconds + 1));
      expect(flood.length / seconds, 'the flood must be quicker than the bucket refills').to.be.above(300);
    });

    it('"off": no bucket on the hook route', async () => {
      const open = await front({ hookPort: hookPort(), hookRateLimit: false });
      const statuses = await Promise.all(Array.from({ length: 50 }, () => postHook(open)));
      expect(new Set(statuses)).to.deep.equal(new Set([401]));
    });
  });
});
