// Issue 12: the optional Envoy-side guards envoy-config renders, through the real Envoy: a source
// allow-list (RBAC, 403 before anything else) and a rate limit on the token routes (429).
import { expect } from 'chai';
import { tokenRoutePath } from '../../src/contract.js';
import { parseCidr } from '../../src/envoyconfig/render.js';
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
  async function front(options: { allowSources?: string[]; tokenRateLimit?: { requests: number; perSeconds: number } }): Promise<EnvoyFront> {
    const started = await startEnvoyFront({
      idps: [{ name: IDP, tokenUrl: new URL(idp.tokenUrl) }],
      sidecarPort: await freePort(),
      mode: 'observability',
      ...(options.allowSources ? { allowSources: options.allowSources.map(parseCidr) } : {}),
      ...(options.tokenRateLimit ? { tokenRateLimit: options.tokenRateLimit } : {}),
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
});
