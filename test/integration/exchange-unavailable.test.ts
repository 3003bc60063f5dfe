// The token exchange while Postgres stops answering (a blackhole proxy between the sidecar and
// Postgres, a partition as a client sees it): every request is answered 503 temporarily_unavailable
// with Retry-After and no token, within the API's Postgres timeouts, never 401 (the key check
// cannot run) nor 500; and once Postgres answers again, exchanges are answered again.
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import { stringify } from 'yaml';
import type { Capture } from '../../src/capture/types.js';
import { TOKEN_EXCHANGE_PATH } from '../../src/contract.js';
import { generateKeySpec } from '../../src/keys/key-ring.js';
import { startBlackholeProxy, type BlackholeProxy } from '../support/blackhole-proxy.js';
import { startOktaAuthorizationServer, type OktaAuthorizationServer } from '../support/okta-authorization-server.js';
import { startTestIdp, type TestIdp } from '../support/oidc-idp.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { createApiKey, loginIntoVault, startVaultSidecar, tempDir, type VaultSidecar } from '../support/token-vault.js';

describe('token exchange with Postgres not answering (blackhole proxy)', function () {
  this.timeout(60_000);
  let idp: TestIdp;
  let okta: OktaAuthorizationServer;
  let db: TestDatabase;
  let proxy: BlackholeProxy;
  let vault: VaultSidecar;
  let capture: Capture;

  before(async () => {
    idp = await startTestIdp({ accounts: { alice: { email: 'alice@example.test' } } });
    okta = await startOktaAuthorizationServer();
    db = await createTestDatabase('exchange_unavailable');
    const direct = new URL(db.url);
    proxy = await startBlackholeProxy({ host: direct.hostname, port: Number(direct.port || 5432) });
    const proxied = new URL(db.url);
    proxied.host = `127.0.0.1:${proxy.port}`;
    const file = path.join(tempDir('exchange-unavailable'), 'exchange.yaml');
    writeFileSync(
      file,
      stringify({
        subject_issuers: [{ issuer: okta.issuer, audiences: [okta.audience] }],
        providers: [{ idp: 'entra', okta_idp_id: '0oaENTRA1', idp_claim: 'upstream_idp', match: 'claim:upstream_sub', allow_unverified: true }],
      }),
    );
    vault = await startVaultSidecar(
      { ...db, url: proxied.toString() },
      { TOKEN_TAP_KEYS: generateKeySpec('k1'), TOKEN_TAP_EXCHANGE_LISTEN: '127.0.0.1:0', TOKEN_TAP_EXCHANGE_CONFIG: file },
    );
    if (!vault.sidecar.exchange) throw new Error(`the token exchange did not start:\n${vault.logs()}`);
    ({ capture } = await loginIntoVault(idp, vault.sidecar, 'entra'));
  });
  after(async () => {
    await vault?.close();
    await proxy?.close();
    await okta?.close();
    await idp?.close();
    await db?.drop();
  });

  it('answers 503 temporarily_unavailable with Retry-After and no token while Postgres does not answer, and the token again once it does', async () => {
    const key = await createApiKey(db, 'billing-service', ['entra'], ['exchange']);
    const subjectToken = await okta.accessToken(
      { id: '00uALICE1', login: 'alice@example.test' },
      { claims: { upstream_idp: '0oaENTRA1', upstream_sub: capture.subject } },
    );
    const exchange = async () => {
      const response = await fetch(`http://127.0.0.1:${vault.sidecar.exchange!.address.port}${TOKEN_EXCHANGE_PATH}`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from(`${key.id}:${key.token}`).toString('base64')}` },
        body: new URLSearchParams({
          grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
          subject_token: subjectToken,
          subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
          audience: 'entra',
        }),
      });
      return {
        status: response.status,
        retryAfter: response.headers.get('retry-after'),
        cacheControl: response.headers.get('cache-control'),
        text: await response.text(),
      };
    };
    const before = await exchange();
    expect(before.status, before.text).to.equal(200);
    expect(JSON.parse(before.text).access_token).to.equal(capture.tokens!.accessToken);

    proxy.blackhole();
    const started = Date.now();
    const during = await Promise.all([exchange(), exchange(), exchange()]);
    const tookMs = Date.now() - started;
    for (const answer of during) {
      expect([answer.status, JSON.parse(answer.text).error], answer.text).to.deep.equal([503, 'temporarily_unavailable']);
      expect(answer.retryAfter).to.equal('1');
      expect(answer.cacheControl).to.equal('no-store');
      expect(answer.text).to.not.contain(capture.tokens!.accessToken!);
    }
    // Within the API's Postgres timeouts (connect 2 s, query 2.25 s): a caller is not left hanging.
    expect(tookMs).to.be.below(10_000);

    proxy.heal();
    let after = await exchange();
    for (let attempt = 0; after.status !== 200 && attempt < 20; attempt += 1) {
      await new Promise((resolve) => setTimeout(resolve, 250));
      after = await exchange();
    }
    expect(after.status, after.text).to.equal(200);
    expect(JSON.parse(after.text).access_token).to.equal(capture.tokens!.accessToken);
    expect(vault.logs()).to.not.contain(capture.tokens!.accessToken!).and.not.contain(key.token);
  });
});
