// Verification before storage, through the real Envoy: an id_token is stored only when it verifies
// against the keys of the IdP's pinned issuer and names Okta's client. Forged and misaddressed
// tokens are relayed to Okta unchanged (the sidecar only observes) and recorded `unverified`.
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import { importJWK, SignJWT } from 'jose';
import { tokenRoutePath } from '../../src/contract.js';
import { generateKeySpec } from '../../src/keys/key-ring.js';
import { startEnvoyFront, type RunningEnvoy } from '../support/envoy.js';
import { endToEndHeaders } from '../support/faults.js';
import { canned, sendRaw, startFixtureIdp, type CannedResponse, type FixtureIdp } from '../support/fixture-idp.js';
import { metricValue } from '../support/metrics.js';
import { generateSigningJwk, startTestIdp, type TestIdp } from '../support/oidc-idp.js';
import { loginAsOkta } from '../support/okta-client.js';
import { freePort, waitFor } from '../support/ports.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { createApiKey, startVaultSidecar, tempDir, vaultClient, type VaultClient, type VaultSidecar } from '../support/token-vault.js';

type Jwk = Record<string, unknown>;
const COOLDOWN_MS = 1_000;
const MAX_WAIT_MS = 4_000;
const OTHER_ISSUER_CLIENT = 'okta-at-flood';

function publicJwk(jwk: Jwk): Jwk {
  const { d: _d, p: _p, q: _q, dp: _dp, dq: _dq, qi: _qi, ...rest } = jwk;
  return rest;
}

async function signIdToken(key: Jwk, claims: Record<string, unknown>, kid = key.kid as string): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ iat: now, exp: now + 3600, ...claims }).setProtectedHeader({ alg: 'RS256', kid }).sign(await importJWK(key, 'RS256'));
}

function tokenResponse(idToken: string): CannedResponse {
  const body = JSON.stringify({
    access_token: randomBytes(24).toString('base64url'),
    token_type: 'Bearer',
    expires_in: 3600,
    refresh_token: randomBytes(24).toString('base64url'),
    id_token: idToken,
  });
  return canned(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store' }, body);
}

function jwksResponse(...keys: Jwk[]): CannedResponse {
  return canned(200, { 'Content-Type': 'application/json' }, JSON.stringify({ keys: keys.map(publicJwk) }));
}

describe('verification before storage, through Envoy', function () {
  this.timeout(90_000);
  let idp: TestIdp;
  let idpPort: number;
  let stub: FixtureIdp;
  let db: TestDatabase;
  let vault: VaultSidecar;
  let envoy: RunningEnvoy;
  let origin: string;
  let client: VaultClient;
  let apiKey: string;
  let keyA: Jwk;
  let keyB: Jwk;
  let forger: Jwk;
  let floodKey: Jwk;

  const events = async (idpName: string) =>
    (
      await db.pool.query<{ outcome: string; detail: string | null; subject: string | null }>(
        'SELECT outcome, detail, subject FROM capture_events WHERE idp = $1 ORDER BY id',
        [idpName],
      )
    ).rows;
  const eventsOnce = (idpName: string, count: number, timeoutMs = 15_000) =>
    waitFor(`${count} capture events for ${idpName}`, async () => ((await events(idpName)).length >= count ? events(idpName) : undefined), timeoutMs);
  const grantCount = async (idpName: string) =>
    (await db.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM grants WHERE idp = $1', [idpName])).rows[0]!.n;

  /** Okta's token call on the stub route of `idpName`, answered with `response`; relayed unchanged. */
  async function tokenCall(idpName: string, response: CannedResponse): Promise<void> {
    stub.serve(`/${idpName}/token`, response);
    const received = await sendRaw(`${origin}${tokenRoutePath(idpName)}`, {
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: 'Basic b2t0YTpjbGllbnQtc2VjcmV0' },
      body: 'grant_type=authorization_code&code=abc&redirect_uri=https%3A%2F%2Fexample.okta.com%2Fcallback',
    });
    expect(received.status).to.equal(response.status);
    expect(received.body.equals(response.body), 'body bytes').to.equal(true);
    expect(endToEndHeaders(received.headers)).to.deep.equal(endToEndHeaders(response.headers));
  }

  before(async () => {
    [keyA, keyB, forger, floodKey] = await Promise.all([
      generateSigningJwk('key-a'),
      generateSigningJwk('key-b'),
      generateSigningJwk('key-a'),
      generateSigningJwk('flood-1'),
    ]);
    idpPort = await freePort();
    idp = await startTestIdp({ port: idpPort, signingKey: keyA });
    stub = await startFixtureIdp();
    db = await createTestDatabase('verification');
    const configFile = path.join(tempDir('idp-config'), 'idps.yaml');
    // `stub` claims to be the real IdP (same issuer and client): what an attacker's responses would say.
    writeFileSync(
      configFile,
      [
        'idps:',
        `  demo: { issuer: "${idp.issuer}", client_id: "${idp.clientId}" }`,
        `  stub: { issuer: "${idp.issuer}", client_id: "${idp.clientId}" }`,
        `  flood: { issuer: "https://flood.example", jwks_uri: "${stub.url('/flood/jwks')}", client_id: "${OTHER_ISSUER_CLIENT}" }`,
        `  down: { issuer: "https://down.example", jwks_uri: "${stub.url('/down/jwks')}", client_id: "${OTHER_ISSUER_CLIENT}" }`,
        '',
      ].join('\n'),
    );
    vault = await startVaultSidecar(db, {
      TOKEN_TAP_KEYS: generateKeySpec('k1'),
      TOKEN_TAP_IDP_CONFIG: configFile,
      TOKEN_TAP_JWKS_COOLDOWN_MS: String(COOLDOWN_MS),
      TOKEN_TAP_VERIFY_MAX_WAIT_MS: String(MAX_WAIT_MS),
    });
    ({ envoy, origin } = await startEnvoyFront({
      idps: [
        { name: 'demo', tokenUrl: new URL(idp.tokenUrl) },
        ...['stub', 'flood', 'down', 'plain'].map((name) => ({ name, tokenUrl: new URL(stub.url(`/${name}/token`)) })),
      ],
      sidecarPort: vault.sidecar.address.port,
      mode: 'observability',
    }));
    client = vaultClient(vault.apiPort);
    apiKey = (await createApiKey(db, 'reader', ['*'], ['get', 'list'])).token;
  });
  after(async () => {
    client?.close();
    await envoy?.stop();
    await vault?.close();
    await stub?.close();
    await idp?.close();
    await db?.drop();
  });

  it('a forged id_token (the real issuer, signed by another key) is relayed byte for byte, not stored, recorded unverified', async () => {
    const forged = await signIdToken(forger, { iss: idp.issuer, aud: idp.clientId, sub: 'alice', email: 'alice@example.test' });
    await tokenCall('stub', tokenResponse(forged));
    expect(await eventsOnce('stub', 1)).to.deep.equal([{ outcome: 'unverified', detail: 'bad_signature', subject: 'alice' }]);
    expect(await grantCount('stub')).to.equal(0);
    expect(await metricValue(vault.sidecar.metrics, 'captures', { idp: 'stub', outcome: 'unverified' })).to.equal(1);
    const warning = vault
      .logs()
      .split('\n')
      .find((line) => line.includes('"outcome":"unverified"'));
    expect(warning, 'an unverified capture is logged').to.be.a('string');
    expect(JSON.parse(warning!)).to.include({ idp: 'stub', detail: 'bad_signature', level: 40 });
    expect(vault.logs()).to.not.contain(forged).and.not.contain(forged.split('.')[2]!);
  });

  it('a real login to the IdP on the same sidecar is stored, and GetGrant and ListGrants say verified', async () => {
    const login = await loginAsOkta(idp, `${origin}${tokenRoutePath('demo')}`, { loginHint: 'alice' });
    const { grant } = await waitFor('the verified grant', async () =>
      client.call('GetGrant', { idp: 'demo', subject: 'alice' }, apiKey).catch(() => undefined),
    );
    expect(grant).to.include({ subject: 'alice', id_token: login.tokens.id_token, verified: true });
    const listed = await client.call('ListGrants', { idp: 'demo' }, apiKey);
    expect(listed.grants.map((summary: { subject: string; verified: boolean }) => [summary.subject, summary.verified])).to.deep.equal([['alice', true]]);
    expect((await events('demo')).map((event) => event.outcome)).to.deep.equal(['stored']);
  });

  it('an id_token signed by the IdP for another client (aud, or azp among several audiences) is not stored', async () => {
    await tokenCall('stub', tokenResponse(await signIdToken(keyA, { iss: idp.issuer, aud: 'another-client', sub: 'bob' })));
    await tokenCall(
      'stub',
      tokenResponse(await signIdToken(keyA, { iss: idp.issuer, aud: [idp.clientId, 'another-client'], azp: 'another-client', sub: 'carol' })),
    );
    const recorded = await eventsOnce('stub', 3);
    expect(recorded.slice(1)).to.deep.equal([
      { outcome: 'unverified', detail: 'audience_mismatch', subject: 'bob' },
      { outcome: 'unverified', detail: 'azp_mismatch', subject: 'carol' },
    ]);
    expect(await grantCount('stub')).to.equal(0);
    // The check is the claims, not the key: the same key and claims naming Okta's client are stored.
    await tokenCall('stub', tokenResponse(await signIdToken(keyA, { iss: idp.issuer, aud: [idp.clientId, 'another-client'], azp: idp.clientId, sub: 'dave' })));
    expect((await eventsOnce('stub', 4))[3]).to.deep.equal({ outcome: 'stored', detail: null, subject: 'dave' });
    expect((await client.call('GetGrant', { idp: 'stub', subject: 'dave' }, apiKey)).grant.verified).to.equal(true);
  });

  it('an IdP without an issuer in the config keeps working: stored, verified false, named in a warning', async () => {
    await tokenCall('plain', tokenResponse(await signIdToken(forger, { iss: 'https://plain.example', aud: 'whoever', sub: 'erin' })));
    expect(await eventsOnce('plain', 1)).to.deep.equal([{ outcome: 'stored', detail: null, subject: 'erin' }]);
    expect((await client.call('GetGrant', { idp: 'plain', subject: 'erin' }, apiKey)).grant.verified).to.equal(false);
    expect(vault.logs()).to.match(/"idp":"plain"[^\n]*its id_tokens are stored unverified/);
  });

  it('the IdP rotates its signing key: the next login verifies, without a sidecar restart', async () => {
    await idp.close();
    idp = await startTestIdp({ port: idpPort, signingKey: keyB });
    // This process's fetch may first pick a kept-alive socket the old IdP closed: one retry.
    const signIn = () => loginAsOkta(idp, `${origin}${tokenRoutePath('demo')}`, { loginHint: 'alice' });
    const login = await signIn().catch((error: Error) => (error.message === 'fetch failed' ? signIn() : Promise.reject(error)));
    expect(JSON.parse(Buffer.from(login.tokens.id_token!.split('.')[0]!, 'base64url').toString()).kid).to.equal('key-b');
    const recorded = await eventsOnce('demo', 2);
    expect(recorded[1]).to.deep.equal({ outcome: 'stored', detail: null, subject: 'alice' });
    const { grant } = await client.call('GetGrant', { idp: 'demo', subject: 'alice' }, apiKey);
    expect(grant).to.include({ id_token: login.tokens.id_token, verified: true });
    // The new key came from a second fetch of the same issuer's JWKS.
    expect(await metricValue(vault.sidecar.metrics, 'jwksFetches', { idp: 'demo', result: 'ok' })).to.be.at.least(2);
  });

  it('a flood of tokens naming unknown keys fetches the JWKS at most once per cooldown', async () => {
    stub.serve('/flood/jwks', jwksResponse(floodKey));
    const jwksFetches = () => stub.requests.filter((request) => request.path === '/flood/jwks').length;
    const flood = 30;
    const started = Date.now();
    for (let index = 0; index < flood; index += 1) {
      await tokenCall(
        'flood',
        tokenResponse(await signIdToken(floodKey, { iss: 'https://flood.example', aud: OTHER_ISSUER_CLIENT, sub: `user-${index}` }, `unknown-${index}`)),
      );
    }
    const recorded = await eventsOnce('flood', flood);
    const elapsed = Date.now() - started;
    expect(
      recorded.every((event) => event.outcome === 'unverified' && event.detail === 'unknown_key'),
      JSON.stringify(recorded),
    ).to.equal(true);
    expect(await grantCount('flood')).to.equal(0);
    console.log(`      ${flood} unknown kids in ${elapsed} ms: ${jwksFetches()} JWKS fetches (cooldown ${COOLDOWN_MS} ms)`);
    expect(jwksFetches())
      .to.be.at.least(1)
      .and.at.most(1 + Math.ceil(elapsed / COOLDOWN_MS));
    expect(await metricValue(vault.sidecar.metrics, 'jwksFetches', { idp: 'flood' })).to.equal(jwksFetches());
    // The key the JWKS does hold still verifies, from the cached set.
    const before = jwksFetches();
    await tokenCall('flood', tokenResponse(await signIdToken(floodKey, { iss: 'https://flood.example', aud: OTHER_ISSUER_CLIENT, sub: 'known' })));
    expect((await eventsOnce('flood', flood + 1))[flood]).to.deep.equal({ outcome: 'stored', detail: null, subject: 'known' });
    expect(jwksFetches()).to.equal(before);
  });

  it('keys that cannot be fetched: the capture waits in the spool and is stored once they can, else recorded unverified (jwks_unavailable)', async () => {
    const downKey = floodKey;
    const claims = { iss: 'https://down.example', aud: OTHER_ISSUER_CLIENT };
    stub.serve('/down/jwks', canned(503, { 'Content-Type': 'text/plain' }, 'down for maintenance'));
    const fetches = () => stub.requests.filter((request) => request.path === '/down/jwks').length;

    // The IdP comes back within the wait: the capture is stored, verified.
    await tokenCall('down', tokenResponse(await signIdToken(downKey, { ...claims, sub: 'frank' })));
    await waitFor('a failed JWKS fetch', async () => (fetches() >= 1 ? true : undefined));
    await new Promise((resolve) => setTimeout(resolve, COOLDOWN_MS + 200));
    expect(await events('down'), 'nothing recorded while the keys are unavailable').to.deep.equal([]);
    expect(vault.sidecar.pump.depth, 'the capture waits in the spool').to.be.at.least(1);
    stub.serve('/down/jwks', jwksResponse(downKey));
    expect(await eventsOnce('down', 1)).to.deep.equal([{ outcome: 'stored', detail: null, subject: 'frank' }]);
    expect((await client.call('GetGrant', { idp: 'down', subject: 'frank' }, apiKey)).grant.verified).to.equal(true);

    // Down for longer than the wait: recorded unverified, counted. (A new key: the cached set lacks it.)
    stub.serve('/down/jwks', canned(503, { 'Content-Type': 'text/plain' }, 'down again'));
    const sentAt = Date.now();
    await tokenCall('down', tokenResponse(await signIdToken(downKey, { ...claims, sub: 'grace' }, 'rotated-while-down')));
    const recorded = await eventsOnce('down', 2, MAX_WAIT_MS + 10_000);
    expect(Date.now() - sentAt, 'it waited').to.be.at.least(MAX_WAIT_MS - 500);
    expect(recorded[1]).to.deep.equal({ outcome: 'unverified', detail: 'jwks_unavailable', subject: 'grace' });
    expect(await metricValue(vault.sidecar.metrics, 'captures', { idp: 'down', outcome: 'unverified' })).to.equal(1);
    // Lost tokens, not a forgery: the drop alert hears of them too.
    expect(await metricValue(vault.sidecar.metrics, 'capturesDropped', { reason: 'jwks_unavailable' })).to.equal(1);
    expect(await grantCount('down')).to.equal(1);
    expect(await metricValue(vault.sidecar.metrics, 'jwksFetches', { idp: 'down', result: 'failed' })).to.be.at.least(2);
  });
});
