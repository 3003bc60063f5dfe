// The RFC 8693 token exchange end to end: a login at a real OpenID Provider captured through the
// real Envoy (and its id_token verified), then services exchanging Okta-shaped tokens (RS256, keys
// served from a discovery document and JWKS as Okta's are) for the user's upstream tokens at
// POST /oauth2/token, on two sidecars sharing one Postgres. Every answer and error of the contract,
// the refresh on expiry (20 concurrent callers over both sidecars: one refresh at the IdP), the
// audit rows, the metrics, and no token or key in any log.
import { mkdtempSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { stringify } from 'yaml';
import { TOKEN_EXCHANGE_PATH } from '../../src/contract.js';
import { parseKeyRing } from '../../src/keys/key-ring.js';
import { sealQuarantined } from '../../src/ingest/quarantine.js';
import { GrantStore } from '../../src/store/grants.js';
import { syntheticCapture, syntheticTokens } from '../support/captures.js';
import { fakeJwt } from '../support/jwt.js';
import { startOktaAuthorizationServer, type OktaAuthorizationServer, type OktaUser } from '../support/okta-authorization-server.js';
import { loginAsOkta, type OktaLogin } from '../support/okta-client.js';
import { freePort, waitFor } from '../support/ports.js';
import { startSidecarProcess, type SidecarProcess } from '../support/sidecar.js';
import { IDP_NAME, startStack, type Stack } from '../support/stack.js';
import { createApiKey, userinfoStatus } from '../support/token-vault.js';

const GRANT = 'urn:ietf:params:oauth:grant-type:token-exchange';
const AT = 'urn:ietf:params:oauth:token-type:access_token';
const ID = 'urn:ietf:params:oauth:token-type:id_token';
const IDP_SECRET = 'demo-idp-client-secret-0123456789abcdef';
const ALICE: OktaUser = { id: '00uALICE1', login: 'alice@example.test' };
const BOB: OktaUser = { id: '00uBOB1', login: 'bob@example.test' };
/** The Okta IdP id of each upstream IdP; the hook stamps it into Okta's tokens as upstream_idp. */
const OKTA_IDP: Record<string, string> = { [IDP_NAME]: '0oaDEMO1', 'demo-sub': '0oaDEMOSUB1', 'demo-down': '0oaDEMODOWN1' };
/** Claims of a token whose Okta session came through the upstream IdP `idp`. */
const via = (idp: string, claims: Record<string, unknown> = {}) => ({ claims: { upstream_idp: OKTA_IDP[idp], ...claims } });

/** A raw connection to the listener: what it received, and when (ms after opening) the server closed it. */
function rawConnection(port: number): { socket: net.Socket; received: () => string; closedAfter: Promise<number> } {
  const opened = Date.now();
  const socket = net.connect(port, '127.0.0.1');
  let text = '';
  socket.on('data', (chunk) => (text += chunk.toString('latin1')));
  socket.on('error', () => undefined);
  const closedAfter = new Promise<number>((resolve) => socket.on('close', () => resolve(Date.now() - opened)));
  return { socket, received: () => text, closedAfter };
}

const within = <T>(promise: Promise<T>, ms: number): Promise<T | 'timeout'> =>
  Promise.race([promise, new Promise<'timeout'>((resolve) => setTimeout(() => resolve('timeout'), ms).unref())]);

interface Answer {
  status: number;
  headers: Headers;
  body: Record<string, any>;
}

type Auth = { basic: [string, string] } | { post: [string, string] } | { none: true } | { header: string };

async function post(port: number, form: Record<string, string>, auth: Auth): Promise<Answer> {
  const headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded' };
  const body = new URLSearchParams(form);
  if ('basic' in auth) headers.authorization = `Basic ${Buffer.from(auth.basic.map(encodeURIComponent).join(':')).toString('base64')}`;
  if ('post' in auth) {
    body.set('client_id', auth.post[0]);
    body.set('client_secret', auth.post[1]);
  }
  if ('header' in auth) headers.authorization = auth.header;
  const response = await fetch(`http://127.0.0.1:${port}${TOKEN_EXCHANGE_PATH}`, { method: 'POST', headers, body: body.toString() });
  const text = await response.text();
  return { status: response.status, headers: response.headers, body: text ? JSON.parse(text) : {} };
}

describe('RFC 8693 token exchange (POST /oauth2/token) through a real capture', function () {
  this.timeout(120_000);
  let stack: Stack;
  let okta: OktaAuthorizationServer;
  let second: SidecarProcess;
  let login: OktaLogin;
  let portA: number;
  let portB: number;
  let key: { id: string; token: string };
  let getOnly: { id: string; token: string };
  let subOnly: { id: string; token: string };
  const secrets: string[] = [];

  const exchange = (form: Record<string, string>, options: { auth?: Auth; port?: number } = {}) =>
    post(options.port ?? portA, form, options.auth ?? { basic: [key.id, key.token] });
  const request = (subjectToken: string, more: Record<string, string> = {}) => ({
    grant_type: GRANT,
    subject_token: subjectToken,
    subject_token_type: AT,
    audience: IDP_NAME,
    ...more,
  });
  const lastAudit = async () => (await stack.db.pool.query("SELECT * FROM access_events WHERE operation = 'exchange' ORDER BY id DESC LIMIT 1")).rows[0];

  before(async () => {
    okta = await startOktaAuthorizationServer();
    const dir = mkdtempSync(path.join(os.tmpdir(), 'token-tap-exchange-'));
    const idpPort = await freePort();
    const deadPort = await freePort();
    const idpIssuer = `http://127.0.0.1:${idpPort}`;
    const client = { client_id: 'okta-test-client', token_url: `${idpIssuer}/token`, client_secret_env: 'DEMO_IDP_SECRET', timeout_ms: 3000 };
    writeFileSync(
      path.join(dir, 'idps.yaml'),
      stringify({
        idps: { [IDP_NAME]: { issuer: idpIssuer, ...client }, 'demo-sub': client, 'demo-down': { ...client, token_url: `http://127.0.0.1:${deadPort}/token` } },
      }),
    );
    writeFileSync(
      path.join(dir, 'exchange.yaml'),
      stringify({
        subject_issuers: [{ issuer: okta.issuer, audiences: [okta.audience], client_ids: [okta.clientId] }],
        providers: [
          { idp: IDP_NAME, okta_idp_id: OKTA_IDP[IDP_NAME], idp_claim: 'upstream_idp', match: 'email' },
          { idp: 'demo-sub', okta_idp_id: OKTA_IDP['demo-sub'], idp_claim: 'upstream_idp', match: 'claim:upstream_sub' },
          { idp: 'demo-down', okta_idp_id: OKTA_IDP['demo-down'], idp_claim: 'upstream_idp', match: 'claim:upstream_down_sub' },
        ],
      }),
    );
    portA = await freePort();
    portB = await freePort();
    stack = await startStack('observability', {
      label: 'token_exchange',
      idpOptions: { port: idpPort, clientSecret: IDP_SECRET, accessTokenTtlSeconds: 600 },
      sidecarEnv: {
        TOKEN_TAP_IDP_CONFIG: path.join(dir, 'idps.yaml'),
        DEMO_IDP_SECRET: IDP_SECRET,
        TOKEN_TAP_EXCHANGE_CONFIG: path.join(dir, 'exchange.yaml'),
        TOKEN_TAP_API_LISTEN: 'off',
      },
      sidecarArgs: ['--exchange-listen', `127.0.0.1:${portA}`],
    });
    const { TOKEN_TAP_SPOOL_DIR: _own, ...shared } = stack.sidecarEnv;
    second = await startSidecarProcess({
      port: await freePort(),
      env: { ...shared, TOKEN_TAP_EXCHANGE_MAX_CONNECTIONS: '24' },
      args: ['--exchange-listen', `127.0.0.1:${portB}`],
    });
    for (const sidecar of [stack.sidecar!, second])
      await waitFor('the exchange listener', async () => (sidecar.logs().includes('token exchange ready') ? true : undefined), 20_000);
    login = await loginAsOkta(stack.idp, stack.tokenUrl, { loginHint: 'alice' });
    await waitFor(
      'the verified grant',
      async () => ((await stack.db.pool.query('SELECT 1 FROM grants WHERE idp = $1 AND verified', [IDP_NAME])).rowCount ? true : undefined),
      20_000,
    );
    secrets.push(login.tokens.access_token, login.tokens.id_token!, login.tokens.refresh_token!, IDP_SECRET);
    key = await createApiKey(stack.db, 'billing-service', [IDP_NAME, 'demo-sub', 'demo-down'], ['exchange']);
    getOnly = await createApiKey(stack.db, 'reader', [IDP_NAME], ['get']);
    subOnly = await createApiKey(stack.db, 'sub-only', ['demo-sub'], ['exchange']);
    secrets.push(key.token, getOnly.token, subOnly.token);
    // Grants of the claim-matched IdPs, upstream subject "alice"; their refresh tokens are not the IdP's.
    const store = new GrantStore(stack.db.pool, parseKeyRing(stack.sidecarEnv.TOKEN_TAP_KEYS!), sealQuarantined);
    for (const idp of ['demo-sub', 'demo-down']) {
      const tokens = syntheticTokens({ idToken: fakeJwt({ sub: 'alice' }), claims: { sub: 'alice' } });
      secrets.push(tokens.accessToken!, tokens.refreshToken!);
      await store.recordCaptures([syntheticCapture(idp, 'alice', { verified: true, clientId: 'okta-test-client', tokens })]);
    }
  });

  after(async () => {
    await second?.stop();
    await stack?.stop();
    await okta?.close();
  });

  it("answers the user's upstream access token for their Okta access token (client_secret_basic), with no-store", async () => {
    const subject = await okta.accessToken(ALICE, via(IDP_NAME));
    secrets.push(subject);
    const answer = await exchange(request(subject));
    expect(answer.status, JSON.stringify(answer.body)).to.equal(200);
    expect(answer.headers.get('cache-control')).to.equal('no-store');
    expect(answer.body).to.include({ access_token: login.tokens.access_token, issued_token_type: AT, token_type: 'Bearer' });
    expect(answer.body.expires_in).to.be.within(500, 600);
    expect(answer.body.scope).to.include('openid');
    expect(await userinfoStatus(stack.idp, answer.body.access_token)).to.equal(200);
    const audit = await lastAudit();
    expect(audit).to.include({ outcome: 'ok', api_key_id: key.id, caller: 'billing-service', idp: IDP_NAME, subject: 'alice' });
    expect(audit.detail).to.include(`okta user ${ALICE.id}`);
  });

  it('answers the upstream id_token for an Okta id_token (client_secret_post), token_type N_A; its email only when verified', async () => {
    const subject = await okta.idToken(ALICE, via(IDP_NAME));
    secrets.push(subject);
    const answer = await exchange(request(subject, { subject_token_type: ID, requested_token_type: ID }), { auth: { post: [key.id, key.token] } });
    expect(answer.status, JSON.stringify(answer.body)).to.equal(200);
    expect(answer.body).to.include({ access_token: login.tokens.id_token, issued_token_type: ID, token_type: 'N_A' });
    const both = await exchange(request(subject, { subject_token_type: ID }));
    expect(both.body).to.include({ access_token: login.tokens.access_token, issued_token_type: AT });
    // An Okta id_token's email counts only with email_verified: true (its sub is the user id, no address).
    const unverified = await okta.idToken(ALICE, via(IDP_NAME, { email_verified: false }));
    secrets.push(unverified);
    const refused = await exchange(request(unverified, { subject_token_type: ID }));
    expect([refused.status, refused.body.error]).to.deep.equal([400, 'invalid_grant']);
    expect(await lastAudit()).to.include({ outcome: 'no_user', idp: IDP_NAME });
  });

  it('matches claim:upstream_sub (put into Okta tokens through the hook) and takes a token within the 60 s skew', async () => {
    const subject = await okta.accessToken({ id: '00uOTHER', login: 'someone@example.test' }, { ...via('demo-sub', { upstream_sub: 'alice' }), expIn: -30 });
    const answer = await exchange(request(subject, { audience: 'demo-sub' }));
    expect(answer.status, JSON.stringify(answer.body)).to.equal(200);
    expect((await lastAudit()).subject).to.equal('alice');
  });

  it("refuses (400 invalid_grant, wrong_idp) a valid token of the victim's address or upstream subject from a session through another IdP", async () => {
    // An Okta account with the victim's login made through self-registration (Okta's own IdP) or a
    // hostile customer IdP, or one whose mapped upstream_sub another IdP set: the token verifies,
    // its email or claim matches the victim's grant, but the session did not come through this IdP.
    const cases: Array<[string, string, string]> = [
      ['self-registered (no upstream_idp)', await okta.accessToken(ALICE), IDP_NAME],
      ['through a hostile IdP', await okta.accessToken(ALICE, { claims: { upstream_idp: '0oaHOSTILE1' } }), IDP_NAME],
      ["through demo-sub, for demo's grant", await okta.accessToken(ALICE, via('demo-sub')), IDP_NAME],
      [
        'upstream_sub set through a hostile IdP',
        await okta.accessToken({ id: '00uMALLORY', login: 'mallory@example.test' }, { claims: { upstream_idp: '0oaHOSTILE1', upstream_sub: 'alice' } }),
        'demo-sub',
      ],
      ['an Okta id_token through Okta itself', await okta.idToken(ALICE), IDP_NAME],
    ];
    for (const [name, subject, audience] of cases) {
      secrets.push(subject);
      const type: Record<string, string> = name.includes('id_token') ? { subject_token_type: ID } : {};
      const answer = await exchange(request(subject, { audience, ...type }));
      expect([answer.status, answer.body.error], name).to.deep.equal([400, 'invalid_grant']);
      expect(answer.body.error_description, name).to.match(/does not show a sign-in through this IdP/);
      const audit = await lastAudit();
      expect(audit, name).to.include({ outcome: 'wrong_idp', idp: audience, subject: null });
    }
  });

  it('answers 401 invalid_client for missing or wrong client credentials, with WWW-Authenticate for Basic, and summarises them', async () => {
    const subject = await okta.accessToken(ALICE, via(IDP_NAME));
    const cases: Array<[Auth, boolean]> = [
      [{ none: true }, true],
      [{ basic: [key.id, `${key.token.slice(0, -1)}x`] }, true],
      [{ basic: [getOnly.id, key.token] }, true],
      [{ post: [key.id, 'not-a-key'] }, false],
      [{ header: 'Bearer whatever' }, true],
    ];
    for (const [auth, basic] of cases) {
      const answer = await exchange(request(subject), { auth });
      expect(answer.status, JSON.stringify(auth)).to.equal(401);
      expect(answer.body.error).to.equal('invalid_client');
      expect(answer.headers.get('www-authenticate') !== null, JSON.stringify(auth)).to.equal(basic);
    }
    // The first of the interval gets a row at once (written after its answer); the others are counted into a summary row later.
    const unauthenticated = async () =>
      (await stack.db.pool.query("SELECT count FROM access_events WHERE operation = 'exchange' AND outcome = 'unauthenticated'")).rows;
    await waitFor('the refusal row', async () => ((await unauthenticated()).length > 0 ? true : undefined), 5_000);
    expect(await unauthenticated()).to.deep.equal([{ count: 1 }]);
  });

  it('answers 400 unauthorized_client to a key without the exchange operation, audited', async () => {
    const answer = await exchange(request(await okta.accessToken(ALICE, via(IDP_NAME))), { auth: { basic: [getOnly.id, getOnly.token] } });
    expect([answer.status, answer.body.error]).to.deep.equal([400, 'unauthorized_client']);
    expect(await lastAudit()).to.include({ outcome: 'unauthorized_client', api_key_id: getOnly.id });
  });

  it('answers 400 invalid_request for missing or unsupported parameters, and unsupported_grant_type', async () => {
    const subject = await okta.accessToken(ALICE, via(IDP_NAME));
    const { subject_token: _token, ...noToken } = request(subject);
    const cases: Array<Record<string, string>> = [
      noToken,
      request(subject, { subject_token_type: 'urn:ietf:params:oauth:token-type:saml2' }),
      request(subject, { requested_token_type: 'urn:ietf:params:oauth:token-type:refresh_token' }),
      request(subject, { actor_token: subject, actor_token_type: AT }),
    ];
    for (const form of cases) {
      const answer = await exchange(form);
      expect([answer.status, answer.body.error], JSON.stringify(Object.keys(form))).to.deep.equal([400, 'invalid_request']);
    }
    const wrongGrant = await exchange(request(subject, { grant_type: 'client_credentials' }));
    expect([wrongGrant.status, wrongGrant.body.error]).to.deep.equal([400, 'unsupported_grant_type']);
  });

  it('answers 400 invalid_request for a subject token that does not verify (signature, issuer, audience, expiry, not yet valid, type)', async () => {
    const tokens = {
      forged: await okta.forged(ALICE, via(IDP_NAME)),
      issuer: await okta.accessToken(ALICE, via(IDP_NAME, { iss: 'https://evil.example/oauth2/default' })),
      audience: await okta.accessToken(ALICE, via(IDP_NAME, { aud: 'api://somebody-else' })),
      expired: await okta.accessToken(ALICE, { ...via(IDP_NAME), iatIn: -3600, expIn: -120 }),
      notYet: await okta.accessToken(ALICE, { ...via(IDP_NAME), nbfIn: 300 }),
      idAsAccess: await okta.idToken(ALICE, via(IDP_NAME)),
      clientCredentials: await okta.accessToken({ id: '', login: okta.clientId }, via(IDP_NAME, { uid: undefined })),
      unsigned: fakeJwt({ iss: okta.issuer, aud: okta.audience, sub: ALICE.login, exp: Math.floor(Date.now() / 1000) + 600 }),
    };
    for (const [name, token] of Object.entries(tokens)) {
      secrets.push(token);
      const answer = await exchange(request(token));
      expect([answer.status, answer.body.error], name).to.deep.equal([400, 'invalid_request']);
      expect(answer.body.error_description, name).to.match(/subject_token does not verify/);
      expect(await lastAudit(), name).to.include({ outcome: 'invalid_subject_token', api_key_id: key.id });
    }
  });

  it('answers 400 invalid_target for an audience that is no IdP, or one the key may not use', async () => {
    const subject = await okta.accessToken(ALICE, via(IDP_NAME));
    for (const [audience, auth] of [
      ['nosuch', undefined],
      [IDP_NAME, { basic: [subOnly.id, subOnly.token] }],
    ] as Array<[string, Auth | undefined]>) {
      const answer = await exchange(request(subject, { audience }), auth ? { auth } : {});
      expect([answer.status, answer.body.error], audience).to.deep.equal([400, 'invalid_target']);
    }
  });

  it('answers 400 invalid_grant when no grant matches, when the email is on two upstream users, and when the IdP refuses the refresh', async () => {
    const none = await exchange(request(await okta.accessToken(BOB, via(IDP_NAME))));
    expect([none.status, none.body.error]).to.deep.equal([400, 'invalid_grant']);
    expect(await lastAudit()).to.include({ outcome: 'no_grant', idp: IDP_NAME });
    const store = new GrantStore(stack.db.pool, parseKeyRing(stack.sidecarEnv.TOKEN_TAP_KEYS!), sealQuarantined);
    for (const twin of ['twin-1', 'twin-2']) {
      const claims = { sub: twin, email: 'twin@example.test', email_verified: true };
      await store.recordCaptures([
        syntheticCapture(IDP_NAME, twin, { email: 'twin@example.test', verified: true, tokens: syntheticTokens({ idToken: fakeJwt(claims), claims }) }),
      ]);
    }
    const twins = await exchange(request(await okta.accessToken({ id: '00uTWIN', login: 'twin@example.test' }, via(IDP_NAME))));
    expect([twins.status, twins.body.error]).to.deep.equal([400, 'invalid_grant']);
    expect((await lastAudit()).outcome).to.equal('ambiguous');
    await stack.db.pool.query("UPDATE grants SET access_token_expires_at = now() - interval '1 minute' WHERE idp = 'demo-sub'");
    const refused = await exchange(request(await okta.accessToken(ALICE, via('demo-sub', { upstream_sub: 'alice' })), { audience: 'demo-sub' }));
    expect([refused.status, refused.body.error], JSON.stringify(refused.body)).to.deep.equal([400, 'invalid_grant']);
    expect((await lastAudit()).outcome).to.equal('refresh_refused');
  });

  it('matches addresses as ASCII only: a Kelvin-sign look-alike login is no user, and a look-alike upstream account does not make the real one ambiguous', async () => {
    const store = new GrantStore(stack.db.pool, parseKeyRing(stack.sidecarEnv.TOKEN_TAP_KEYS!), sealQuarantined);
    const kelvin = '\u212Aate@example.test';
    for (const [subject, email] of [
      ['kate', 'kate@example.test'],
      ['kelvin-kate', kelvin],
    ] as const) {
      const claims = { sub: subject, email, email_verified: true };
      const tokens = syntheticTokens({ idToken: fakeJwt(claims), claims });
      secrets.push(tokens.accessToken!);
      await store.recordCaptures([syntheticCapture(IDP_NAME, subject, { email, verified: true, tokens })]);
    }
    // As a sidecar of an earlier release recorded it: the fold of the look-alike as the vouched address.
    await stack.db.pool.query("UPDATE grants SET vouched_email = 'kate@example.test' WHERE idp = $1 AND subject = 'kelvin-kate'", [IDP_NAME]);
    const lookAlike = await exchange(request(await okta.accessToken({ id: '00uKELVIN', login: kelvin }, via(IDP_NAME))));
    expect([lookAlike.status, lookAlike.body.error]).to.deep.equal([400, 'invalid_grant']);
    expect(await lastAudit()).to.include({ outcome: 'no_user', subject: null });
    const real = await exchange(request(await okta.accessToken({ id: '00uKATE', login: 'Kate@Example.test' }, via(IDP_NAME))));
    expect(real.status, JSON.stringify(real.body)).to.equal(200);
    expect(await lastAudit()).to.include({ outcome: 'ok', subject: 'kate' });
  });

  it('answers 500 server_error to an authenticated client, audited internal, when its grant cannot be opened (a key rollout)', async () => {
    // Sealed under a key this sidecar's ring lacks, as by a pod already running the next ring.
    const rolled = new GrantStore(stack.db.pool, parseKeyRing(`k-next:${Buffer.alloc(32, 9).toString('base64')}`), sealQuarantined);
    const tokens = syntheticTokens({ idToken: fakeJwt({ sub: 'rolled' }), claims: { sub: 'rolled' } });
    secrets.push(tokens.accessToken!, tokens.refreshToken!);
    await rolled.recordCaptures([syntheticCapture('demo-sub', 'rolled', { verified: true, clientId: 'okta-test-client', tokens })]);
    const answer = await exchange(request(await okta.accessToken(ALICE, via('demo-sub', { upstream_sub: 'rolled' })), { audience: 'demo-sub' }));
    expect([answer.status, answer.body.error]).to.deep.equal([500, 'server_error']);
    const audit = await lastAudit();
    expect(audit).to.include({ outcome: 'internal', api_key_id: key.id, caller: 'billing-service' });
    expect(audit.detail).to.match(/internal error \(DecryptError/);
    await stack.db.pool.query("DELETE FROM grants WHERE idp = 'demo-sub' AND subject = 'rolled'");
  });

  it('answers 503 temporarily_unavailable when the IdP cannot be reached for an expired token', async () => {
    await stack.db.pool.query("UPDATE grants SET access_token_expires_at = now() - interval '1 minute' WHERE idp = 'demo-down'");
    const answer = await exchange(request(await okta.accessToken(ALICE, via('demo-down', { upstream_down_sub: 'alice' })), { audience: 'demo-down' }));
    expect([answer.status, answer.body.error], JSON.stringify(answer.body)).to.deep.equal([503, 'temporarily_unavailable']);
    expect((await lastAudit()).outcome).to.equal('unavailable');
  });

  it('refreshes an access token about to expire once at the IdP for 20 concurrent callers over two sidecars, and answers the new one', async () => {
    await stack.db.pool.query("UPDATE grants SET access_token_expires_at = now() + interval '10 seconds' WHERE idp = $1 AND subject = 'alice'", [IDP_NAME]);
    const before = stack.idp.tokenResponses.length;
    const subjects = await Promise.all(Array.from({ length: 20 }, () => okta.accessToken(ALICE, via(IDP_NAME))));
    const answers = await Promise.all(subjects.map((subject, index) => exchange(request(subject), { port: index % 2 === 0 ? portA : portB })));
    for (const answer of answers) expect(answer.status, JSON.stringify(answer.body)).to.equal(200);
    const tokens = new Set(answers.map((answer) => answer.body.access_token as string));
    expect(tokens.size).to.equal(1);
    const [fresh] = [...tokens];
    secrets.push(fresh!);
    expect(fresh).to.not.equal(login.tokens.access_token);
    expect(stack.idp.tokenResponses.length - before).to.equal(1);
    expect(await userinfoStatus(stack.idp, fresh!)).to.equal(200);
    for (const answer of answers) expect(answer.body.expires_in).to.be.above(500);
    const audits = (await stack.db.pool.query("SELECT outcome, detail FROM access_events WHERE operation = 'exchange' ORDER BY id DESC LIMIT 20")).rows;
    expect(audits.map((row) => row.outcome)).to.deep.equal(Array(20).fill('ok'));
    expect(audits.filter((row) => /refreshed at the IdP first/.test(row.detail)).length).to.equal(1);
  });

  it('closes the connection after refusing a body over the limit, without reading the rest (Connection: close)', async () => {
    for (const declared of [10_000_000, 1_000]) {
      // Declared too large, or declared small and sent on beyond the limit (never ending).
      const connection = rawConnection(portA);
      connection.socket.write(
        `POST ${TOKEN_EXCHANGE_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: ${declared}\r\n\r\n`,
      );
      connection.socket.write('a'.repeat(100 * 1024));
      expect(await within(connection.closedAfter, 4_000), String(declared)).to.be.a('number');
      expect(connection.received()).to.match(/^HTTP\/1\.1 400 /);
      expect(connection.received().toLowerCase()).to.include('connection: close');
    }
  });

  it('answers 408 and closes a connection whose body does not arrive within 5 s', async () => {
    const connection = rawConnection(portA);
    connection.socket.write(
      `POST ${TOKEN_EXCHANGE_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ngrant_type=`,
    );
    const closedAfter = await within(connection.closedAfter, 9_000);
    expect(closedAfter).to.be.a('number');
    expect(closedAfter as number).to.be.within(4_500, 8_000);
    expect(connection.received()).to.match(/^HTTP\/1\.1 408 /);
  });

  it('takes at most TOKEN_TAP_EXCHANGE_MAX_CONNECTIONS open connections, and serves again once they go', async () => {
    const connections = Array.from({ length: 25 }, () => rawConnection(portB));
    const closed = await Promise.all(connections.map((connection) => within(connection.closedAfter, 1_500)));
    expect(closed.filter((after) => after !== 'timeout').length).to.be.at.least(1);
    for (const connection of connections) connection.socket.destroy();
    await waitFor('a served request', async () => ((await exchange(request('not-a-jwt'), { port: portB })).status === 400 ? true : undefined), 5_000);
  });

  it('counts requests by outcome in the metrics, and logs no token, key or secret', async () => {
    const metrics = await (await fetch(`http://127.0.0.1:${stack.sidecar!.opsPort}/metrics`)).text();
    expect(metrics).to.match(/token_tap_exchange_requests_total\{idp="demo",outcome="ok"\} [1-9]/);
    expect(metrics).to.match(/token_tap_exchange_requests_total\{idp="",outcome="unauthenticated"\} [1-9]/);
    const logs = stack.sidecar!.logs() + second.logs();
    expect(logs).to.include('"outcome":"invalid_subject_token"');
    for (const secret of secrets) expect(logs.includes(secret), `a secret of ${secret.length} characters is in the logs`).to.equal(false);
    const rows = JSON.stringify((await stack.db.pool.query("SELECT * FROM access_events WHERE operation = 'exchange'")).rows);
    for (const secret of secrets) expect(rows.includes(secret)).to.equal(false);
  });
});
