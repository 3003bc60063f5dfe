// Okta's token inline hook through the real Envoy: a login captured from a real OpenID Provider
// (with groups and tid in its id_token), then Okta-shaped com.okta.oauth2.tokens.transform calls
// to /okta/token-hook, authenticated by header secret and by a bearer JWT from a second real
// OpenID Provider playing Okta's authorization server (client credentials).
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import pg from 'pg';
import { importJWK, SignJWT } from 'jose';
import { stringify } from 'yaml';
import { OKTA_HOOK_PATH } from '../../src/contract.js';
import { parseKeyRing } from '../../src/keys/key-ring.js';
import { GrantStore } from '../../src/store/grants.js';
import { sealQuarantined } from '../../src/ingest/quarantine.js';
import { syntheticCapture, syntheticTokens } from '../support/captures.js';
import { loginAsOkta, type OktaLogin } from '../support/okta-client.js';
import { generateSigningJwk, startTestIdp, type TestAccount, type TestIdp } from '../support/oidc-idp.js';
import { freePort, waitFor } from '../support/ports.js';
import { runCli } from '../support/sidecar.js';
import { IDP_NAME, startStack, type Stack } from '../support/stack.js';

const SECRET = 'hook-secret-5d1f0a7c9e3b4a21';
const TID = 'tid-7c41e9a2';
const HOOK_AUDIENCE = 'api://token-tap-hook';
const HOOK_SCOPE = 'token_tap.hook';
const CALLER = { clientId: 'okta-hook-caller', clientSecret: 'okta-hook-caller-secret-0123456789' };

interface HookCall {
  idpId?: string;
  login?: string;
  identity?: Record<string, unknown> | undefined;
  access?: Record<string, unknown> | undefined;
  createdAt?: Date;
}

/** A com.okta.oauth2.tokens.transform request as Okta sends it (DESIGN §6a), with the fields the hook reads. */
function oktaRequest(call: HookCall): Record<string, unknown> {
  const idpId = call.idpId ?? '0oaUPSTREAM1';
  const login = call.login ?? 'alice@example.test';
  const identity =
    'identity' in call ? call.identity : { sub: '00uOKTAUSER1', email: login, idp: idpId, ver: 1, iss: 'https://example.okta.com/oauth2/aus1', aud: '0oaAPP' };
  const access = 'access' in call ? call.access : { sub: login, ver: 1, cid: '0oaAPP', uid: '00uOKTAUSER1', scp: ['openid', 'email'] };
  return {
    source: 'https://example.okta.com/oauth2/aus1/v1/authorize',
    eventId: 'evt-1',
    eventTime: new Date().toISOString(),
    eventTypeVersion: '1.0',
    cloudEventVersion: '0.1',
    contentType: 'application/json',
    eventType: 'com.okta.oauth2.tokens.transform',
    data: {
      context: {
        request: { id: 'req1', method: 'GET', url: { value: 'https://example.okta.com/oauth2/aus1/v1/authorize' }, ipAddress: '203.0.113.5' },
        protocol: {
          type: 'OAUTH2.0',
          request: { scope: 'openid email', response_type: 'code', client_id: '0oaAPP' },
          issuer: { uri: 'https://example.okta.com/oauth2/aus1' },
          client: { id: '0oaAPP', name: 'App', type: 'PUBLIC' },
        },
        session: {
          id: '102sess',
          userId: '00uOKTAUSER1',
          login,
          createdAt: (call.createdAt ?? new Date()).toISOString(),
          expiresAt: new Date(Date.now() + 3_600_000).toISOString(),
          status: 'ACTIVE',
          amr: ['FEDERATED'],
          idp: { id: idpId, type: 'OIDC' },
          mfaActive: false,
        },
        user: { id: '00uOKTAUSER1', passwordChanged: null, profile: { login, firstName: 'Alice', lastName: 'Example', locale: 'en', timeZone: 'UTC' } },
        policy: { id: '00pPOLICY', rule: { id: '0prRULE' } },
      },
      ...(identity ? { identity: { claims: identity, token: { lifetime: { expiration: 3600 } } } } : {}),
      ...(access ? { access: { claims: access, token: { lifetime: { expiration: 3600 } }, scopes: { openid: { id: 'scp1', action: 'GRANT' } } } } : {}),
      refresh_token: { jti: 'rt-jti' },
    },
  };
}

async function callHook(stack: Stack, call: HookCall, authorization: string | undefined): Promise<{ status: number; body: any; text: string }> {
  const response = await fetch(`${stack.origin}${OKTA_HOOK_PATH}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(authorization === undefined ? {} : { authorization }) },
    body: JSON.stringify(oktaRequest(call)),
  });
  const text = await response.text();
  return { status: response.status, text, body: text ? JSON.parse(text) : undefined };
}

function valuesOf(body: any, type: string): Record<string, unknown> | undefined {
  const command = (body.commands as Array<{ type: string; value: Array<{ op: string; path: string; value: unknown }> }>).find((entry) => entry.type === type);
  if (!command) return undefined;
  for (const op of command.value) expect(op.op).to.equal('add');
  return Object.fromEntries(command.value.map((op) => [op.path.replace('/claims/', ''), op.value]));
}

async function clientCredentialsToken(issuer: TestIdp, client: { clientId: string; clientSecret: string }, resource: string): Promise<string> {
  const response = await fetch(issuer.tokenUrl, {
    method: 'POST',
    headers: {
      'content-type': 'application/x-www-form-urlencoded',
      authorization: `Basic ${Buffer.from(`${client.clientId}:${client.clientSecret}`).toString('base64')}`,
    },
    body: new URLSearchParams({ grant_type: 'client_credentials', resource, scope: HOOK_SCOPE }).toString(),
  });
  const body = (await response.json()) as { access_token?: string };
  expect(response.status, JSON.stringify(body)).to.equal(200);
  return body.access_token!;
}

const PROVIDERS = [
  {
    okta_idp_id: '0oaUPSTREAM1',
    idp: IDP_NAME,
    match: 'email',
    identity_claims: { upstream_groups: 'groups', upstream_tid: 'tid', upstream_absent: 'no_such_claim' },
    access_claims: { upstream_tid: 'tid' },
    allow_unverified: true,
  },
  { okta_idp_id: '0oaSTRICT', idp: IDP_NAME, match: 'email', identity_claims: { upstream_groups: 'groups' } },
  { okta_idp_id: '0oaREQUIRED', idp: IDP_NAME, match: 'email', identity_claims: { upstream_groups: 'groups' }, require_grant: true, allow_unverified: true },
  { okta_idp_id: '0oaBYSUB', idp: IDP_NAME, match: 'claim:upstream_sub', identity_claims: { upstream_groups: 'groups' }, allow_unverified: true },
  { okta_idp_id: '0oaSTRICTSUB', idp: IDP_NAME, match: 'claim:upstream_sub', identity_claims: { upstream_groups: 'groups' } },
  {
    okta_idp_id: '0oaSTAMPED',
    idp: IDP_NAME,
    match: 'email',
    identity_claims: { upstream_groups: 'groups' },
    idp_claim: 'upstream_idp',
    allow_unverified: true,
  },
];

async function hookReady(stack: Stack): Promise<void> {
  await waitFor('the Okta hook listener', async () => (stack.sidecar!.logs().includes('okta hook ready') ? true : undefined), 20_000);
}

describe('Okta token inline hook through Envoy', function () {
  this.timeout(90_000);
  let stack: Stack;
  let authServer: TestIdp;
  let login: OktaLogin;
  let dir: string;
  let authServerKey: Record<string, unknown>;
  const accounts: Record<string, TestAccount> = {
    alice: { email: 'alice@example.test', claims: { groups: ['engineering', 'admins'], tid: TID } },
    // An IdP account whose email the IdP has not verified (anyone could have typed it).
    carol: { email: 'carol@example.test', claims: { groups: ['engineering'], tid: TID, email_verified: false } },
  };

  before(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'token-tap-hook-'));
    authServerKey = await generateSigningJwk('okta-as-key-1');
    authServer = await startTestIdp({
      signingKey: authServerKey,
      accounts: { service: { email: 'service@example.test' } },
      serviceClients: [CALLER],
      resourceServers: { [HOOK_AUDIENCE]: { scope: HOOK_SCOPE }, 'api://somebody-else': { scope: HOOK_SCOPE } },
    });
    writeFileSync(
      path.join(dir, 'header.yaml'),
      stringify({ authentication: { header: { name: 'Authorization', value_env: 'OKTA_HOOK_SECRET' } }, providers: PROVIDERS }),
    );
    writeFileSync(
      path.join(dir, 'oauth.yaml'),
      stringify({
        authentication: { oauth: { issuer: authServer.issuer, audience: HOOK_AUDIENCE, scope: HOOK_SCOPE, client_id: CALLER.clientId } },
        providers: PROVIDERS,
      }),
    );
    const hookPort = await freePort();
    stack = await startStack('observability', {
      label: 'okta_hook',
      idpOptions: { accounts },
      sidecarEnv: { TOKEN_TAP_HOOK_CONFIG: path.join(dir, 'header.yaml'), OKTA_HOOK_SECRET: SECRET, TOKEN_TAP_API_LISTEN: 'off' },
      sidecarArgs: ['--hook-listen', `127.0.0.1:${hookPort}`],
      oktaHookPort: hookPort,
    });
    await hookReady(stack);
    login = await loginAsOkta(stack.idp, stack.tokenUrl, { loginHint: 'alice' });
    expect(login.claims.groups).to.deep.equal(['engineering', 'admins']);
    expect(login.claims.tid).to.equal(TID);
    await waitFor('the grant', async () => ((await stack.db.pool.query('SELECT 1 FROM grants')).rowCount ? true : undefined));
  });
  after(async () => {
    await stack?.stop();
    await authServer?.close();
  });

  it('adds the upstream groups and tid to Okta id and access token (header secret), leaving absent claims out', async () => {
    const { status, body } = await callHook(stack, {}, SECRET);
    expect(status).to.equal(200);
    expect(valuesOf(body, 'com.okta.identity.patch')).to.deep.equal({ upstream_groups: login.claims.groups, upstream_tid: login.claims.tid });
    expect(valuesOf(body, 'com.okta.access.patch')).to.deep.equal({ upstream_tid: login.claims.tid });
  });

  it("adds idp_claim = the Okta IdP id to both tokens, with or without a matched grant (the token exchange's proof of the IdP)", async () => {
    const found = await callHook(stack, { idpId: '0oaSTAMPED' }, SECRET);
    expect(found.status).to.equal(200);
    expect(valuesOf(found.body, 'com.okta.identity.patch')).to.deep.equal({ upstream_groups: login.claims.groups, upstream_idp: '0oaSTAMPED' });
    expect(valuesOf(found.body, 'com.okta.access.patch')).to.deep.equal({ upstream_idp: '0oaSTAMPED' });
    const none = await callHook(stack, { idpId: '0oaSTAMPED', login: 'nobody@example.test' }, SECRET);
    expect(valuesOf(none.body, 'com.okta.identity.patch')).to.deep.equal({ upstream_idp: '0oaSTAMPED' });
    expect(valuesOf(none.body, 'com.okta.access.patch')).to.deep.equal({ upstream_idp: '0oaSTAMPED' });
    const audit = (await stack.db.pool.query("SELECT outcome, detail FROM access_events WHERE operation = 'okta_hook' ORDER BY id DESC LIMIT 1")).rows[0];
    expect(audit.outcome).to.equal('no_grant');
    expect(audit.detail).to.include('added id:upstream_idp access:upstream_idp');
  });

  it('sends only the patch types the request carries', async () => {
    const idOnly = await callHook(stack, { access: undefined }, SECRET);
    expect(idOnly.body.commands.map((command: { type: string }) => command.type)).to.deep.equal(['com.okta.identity.patch']);
    const accessOnly = await callHook(stack, { identity: undefined }, SECRET);
    expect(accessOnly.body.commands.map((command: { type: string }) => command.type)).to.deep.equal(['com.okta.access.patch']);
  });

  it('finds the user by login case-insensitively', async () => {
    const { body } = await callHook(stack, { login: 'ALICE@Example.TEST' }, SECRET);
    expect(valuesOf(body, 'com.okta.identity.patch')).to.have.property('upstream_tid', TID);
  });

  it('answers 401 with nothing else to a wrong or missing secret', async () => {
    for (const authorization of ['wrong-secret', `${SECRET}x`, undefined]) {
      const { status, text } = await callHook(stack, {}, authorization);
      expect(status, String(authorization)).to.equal(401);
      expect(text).to.equal('');
    }
  });

  it('answers 200 without commands for an unknown Okta IdP id or an unknown user', async () => {
    const unknownIdp = await callHook(stack, { idpId: '0oaNOBODY' }, SECRET);
    expect(unknownIdp.status).to.equal(200);
    expect(unknownIdp.body).to.deep.equal({ commands: [] });
    const unknownUser = await callHook(stack, { login: 'mallory@example.test' }, SECRET);
    expect(unknownUser.status).to.equal(200);
    expect(unknownUser.body).to.deep.equal({ commands: [] });
  });

  it('answers an error object when the provider requires a grant and none matches', async () => {
    const { status, body } = await callHook(stack, { idpId: '0oaREQUIRED', login: 'mallory@example.test' }, SECRET);
    expect(status).to.equal(200);
    expect(body.commands).to.equal(undefined);
    expect(body.error.errorSummary).to.be.a('string').and.not.equal('');
    const found = await callHook(stack, { idpId: '0oaREQUIRED' }, SECRET);
    expect(valuesOf(found.body, 'com.okta.identity.patch')).to.deep.equal({ upstream_groups: login.claims.groups });
  });

  it('match claim:upstream_sub finds the grant by the upstream subject', async () => {
    const identity = { sub: '00uOKTAUSER1', email: 'someone-else@example.test', idp: '0oaBYSUB', upstream_sub: 'alice' };
    const { body } = await callHook(stack, { idpId: '0oaBYSUB', login: 'someone-else@example.test', identity }, SECRET);
    expect(valuesOf(body, 'com.okta.identity.patch')).to.deep.equal({ upstream_groups: login.claims.groups });
    const wrong = await callHook(stack, { idpId: '0oaBYSUB', identity: { ...identity, upstream_sub: 'bob' } }, SECRET);
    expect(wrong.body).to.deep.equal({ commands: [] });
  });

  it('ignores an unverified grant unless the provider allows it, and uses a verified one', async () => {
    const unverified = await callHook(stack, { idpId: '0oaSTRICT' }, SECRET);
    expect(unverified.body).to.deep.equal({ commands: [] });
    const bySub = { sub: '00uOKTAUSER1', email: 'alice@example.test', idp: '0oaSTRICTSUB', upstream_sub: 'alice' };
    const unverifiedBySub = await callHook(stack, { idpId: '0oaSTRICTSUB', identity: bySub }, SECRET);
    expect(unverifiedBySub.body).to.deep.equal({ commands: [] });
    await stack.db.pool.query('UPDATE grants SET verified = true');
    try {
      const verified = await callHook(stack, { idpId: '0oaSTRICT' }, SECRET);
      expect(valuesOf(verified.body, 'com.okta.identity.patch')).to.deep.equal({ upstream_groups: login.claims.groups });
      const verifiedBySub = await callHook(stack, { idpId: '0oaSTRICTSUB', identity: bySub }, SECRET);
      expect(valuesOf(verifiedBySub.body, 'com.okta.identity.patch')).to.deep.equal({ upstream_groups: login.claims.groups });
    } finally {
      await stack.db.pool.query('UPDATE grants SET verified = false');
    }
  });

  /** Stores another upstream user of the IdP with alice's tokens but its own subject, email and email_verified. */
  async function storeUpstreamUser(subject: string, email: string, emailVerified: boolean): Promise<void> {
    const ring = parseKeyRing(stack.sidecarEnv.TOKEN_TAP_KEYS!);
    const store = new GrantStore(stack.db.pool, ring, sealQuarantined);
    const alice = (await store.findGrant(IDP_NAME, 'alice'))!;
    const claims = { ...alice.claims, sub: subject, email, email_verified: emailVerified };
    // The hook reads claims from the stored id_token; its signature was checked at capture.
    const idToken = ['eyJhbGciOiJSUzI1NiJ9', Buffer.from(JSON.stringify(claims)).toString('base64url'), 'c2ln'].join('.');
    await store.recordCaptures([syntheticCapture(IDP_NAME, subject, { email, verified: true, tokens: syntheticTokens({ idToken, claims }) })]);
  }

  it('uses no grant when the email is on grants of two upstream users (alice@ and ALICE@corp.example)', async () => {
    // Two more upstream accounts of the IdP, each claiming one spelling of the address, verified by the IdP.
    await storeUpstreamUser('twin-1', 'alice@corp.example', true);
    await storeUpstreamUser('twin-2', 'ALICE@corp.example', true);
    try {
      const { status, body } = await callHook(stack, { login: 'alice@corp.example' }, SECRET);
      expect(status).to.equal(200);
      expect(body).to.deep.equal({ commands: [] });
      const audit = await stack.db.pool.query("SELECT outcome FROM access_events WHERE operation = 'okta_hook' ORDER BY id DESC LIMIT 1");
      expect(audit.rows[0].outcome).to.equal('ambiguous');
      await waitFor('the log line', async () => (stack.sidecar!.logs().includes('matches grants of several upstream users') ? true : undefined), 5_000);
    } finally {
      await stack.db.pool.query("DELETE FROM grants WHERE subject IN ('twin-1', 'twin-2')");
    }
  });

  it('is not thrown off by another upstream account that claims the same email unverified, nor by a revoked one', async () => {
    await storeUpstreamUser('mallory', 'ALICE@example.test', false);
    await storeUpstreamUser('old-alice', 'alice@example.test', true);
    await stack.db.pool.query("UPDATE grants SET status = 'revoked' WHERE subject = 'old-alice'");
    try {
      const { status, body } = await callHook(stack, { login: 'alice@example.test' }, SECRET);
      expect(status).to.equal(200);
      expect(JSON.stringify(body)).to.contain('upstream_groups');
      const audit = await stack.db.pool.query("SELECT outcome, subject FROM access_events WHERE operation = 'okta_hook' ORDER BY id DESC LIMIT 1");
      expect(audit.rows[0]).to.deep.equal({ outcome: 'patched', subject: 'alice' });
    } finally {
      await stack.db.pool.query("DELETE FROM grants WHERE subject IN ('mallory', 'old-alice')");
    }
  });

  it('uses no grant whose id_token says email_verified: false', async () => {
    const carol = await loginAsOkta(stack.idp, stack.tokenUrl, { loginHint: 'carol' });
    expect(carol.claims.email_verified).to.equal(false);
    await waitFor("carol's grant", async () => ((await stack.db.pool.query("SELECT 1 FROM grants WHERE subject = 'carol'")).rowCount ? true : undefined));
    const { status, body } = await callHook(stack, { login: 'carol@example.test' }, SECRET);
    expect(status).to.equal(200);
    expect(body).to.deep.equal({ commands: [] });
    const audit = await stack.db.pool.query("SELECT outcome, subject FROM access_events WHERE operation = 'okta_hook' ORDER BY id DESC LIMIT 1");
    expect(audit.rows[0]).to.deep.equal({ outcome: 'email_unverified', subject: 'carol' });
  });

  it('audits every call in access_events, counts it by outcome, logs it, and never writes a claim value or the secret', async () => {
    const { rows } = await stack.db.pool.query<{ outcome: string; idp: string | null; subject: string | null; detail: string | null }>(
      "SELECT outcome, idp, subject, detail FROM access_events WHERE operation = 'okta_hook' ORDER BY id",
    );
    const outcomes = new Set(rows.map((row) => row.outcome));
    for (const outcome of ['patched', 'unauthenticated', 'no_provider', 'no_grant', 'unverified']) expect([...outcomes]).to.include(outcome);
    expect(rows.find((row) => row.outcome === 'patched')).to.include({ idp: IDP_NAME, subject: 'alice' });
    const audit = JSON.stringify(rows);
    const logs = stack.sidecar!.logs();
    for (const secret of [TID, 'engineering', SECRET]) {
      expect(audit.includes(secret), `${secret} in access_events`).to.equal(false);
      expect(logs.includes(secret), `${secret} in the sidecar log`).to.equal(false);
    }
    expect(logs).to.contain('okta hook call');
    const metrics = await (await fetch(`http://127.0.0.1:${stack.sidecar!.opsPort}/metrics`)).text();
    expect(metrics).to.match(/token_tap_okta_hook_calls_total\{idp="demo",outcome="patched",answer="commands"\} [1-9]/);
    expect(metrics).to.match(/token_tap_okta_hook_calls_total\{idp="",outcome="unauthenticated",answer="refused"\} [1-9]/);
    expect(metrics.includes(TID)).to.equal(false);
  });

  it('waits for a login still in the spool and answers with its claims (freshness)', async () => {
    // Hold the pump's write: a lock on grants lets reads through but blocks the capture's upsert.
    const blocker = new pg.Client({ connectionString: stack.db.url });
    await blocker.connect();
    try {
      await blocker.query('BEGIN');
      await blocker.query('LOCK TABLE grants IN EXCLUSIVE MODE');
      accounts.alice!.claims = { groups: ['engineering', 'admins', 'new-team'], tid: TID };
      const second = await loginAsOkta(stack.idp, stack.tokenUrl, { loginHint: 'alice' });
      expect(second.claims.groups).to.include('new-team');
      await waitFor('the pump to wait on the lock', async () => {
        const { rows } = await stack.db.pool.query<{ n: number }>(
          "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        );
        return rows[0]!.n > 0 ? true : undefined;
      });
      const started = Date.now();
      const answer = callHook(stack, { createdAt: new Date() }, SECRET);
      await new Promise((resolve) => setTimeout(resolve, 300));
      await blocker.query('COMMIT');
      const { body } = await answer;
      expect(Date.now() - started).to.be.at.least(250);
      expect(valuesOf(body, 'com.okta.identity.patch')).to.have.deep.property('upstream_groups', ['engineering', 'admins', 'new-team']);
    } finally {
      await blocker.end();
    }
  });

  describe("with OAuth 2.0 (a bearer JWT from Okta's authorization server)", () => {
    before(async () => {
      stack.sidecarEnv.TOKEN_TAP_HOOK_CONFIG = path.join(dir, 'oauth.yaml');
      await stack.restartSidecar();
      await hookReady(stack);
    });

    it('accepts a client-credentials JWT for the hook audience and scope', async () => {
      const token = await clientCredentialsToken(authServer, CALLER, HOOK_AUDIENCE);
      const { status, body } = await callHook(stack, {}, `Bearer ${token}`);
      expect(status).to.equal(200);
      expect(valuesOf(body, 'com.okta.identity.patch')).to.have.deep.property('upstream_tid', TID);
    });

    /** `ageSeconds` mints it that long ago, so a token of 5 minutes can be already expired. */
    async function oktaShapedToken(claims: Record<string, unknown>, ageSeconds = 0): Promise<string> {
      // Signed with the authorization server's own key: as Okta mints them (cid, scp, uid for a user).
      const key = await importJWK(authServerKey as Parameters<typeof importJWK>[0], 'RS256');
      const issuedAt = Math.floor(Date.now() / 1000) - ageSeconds;
      return new SignJWT({ ver: 1, jti: `AT.${Math.random()}`, ...claims })
        .setProtectedHeader({ alg: 'RS256', kid: 'okta-as-key-1' })
        .setIssuer(authServer.issuer)
        .setAudience(HOOK_AUDIENCE)
        .setIssuedAt(issuedAt)
        .setExpirationTime(issuedAt + 300)
        .sign(key);
    }

    it("answers 401 to an end user's access token of another app (right iss, aud, scope), 200 to the hook client's own", async () => {
      const userToken = await oktaShapedToken({ cid: '0oaOTHERAPP', uid: '00uOKTAUSER1', sub: 'alice@example.test', scp: [HOOK_SCOPE, 'openid'] });
      const refused = await callHook(stack, {}, `Bearer ${userToken}`);
      expect(refused.status).to.equal(401);
      expect(refused.text).to.equal('');
      const hookToken = await oktaShapedToken({ cid: CALLER.clientId, sub: CALLER.clientId, scp: [HOOK_SCOPE] });
      const accepted = await callHook(stack, {}, `Bearer ${hookToken}`);
      expect(accepted.status).to.equal(200);
      expect(valuesOf(accepted.body, 'com.okta.identity.patch')).to.have.deep.property('upstream_tid', TID);
      expect(stack.sidecar!.logs()).to.contain('token was not issued to the hook client');
    });

    it('answers 401 to a JWT for another audience, an expired one, the header secret or none', async () => {
      const elsewhere = await clientCredentialsToken(authServer, CALLER, 'api://somebody-else');
      // The hook client's own token, minted already expired (a minute ago), rather than waited out.
      const expiring = await oktaShapedToken({ cid: CALLER.clientId, sub: CALLER.clientId, scp: [HOOK_SCOPE] }, 360);
      for (const [what, authorization] of [
        ['wrong audience', `Bearer ${elsewhere}`],
        ['expired', `Bearer ${expiring}`],
        ['header secret', SECRET],
        ['none', undefined],
      ] as const) {
        const { status, text } = await callHook(stack, {}, authorization);
        expect(status, what).to.equal(401);
        expect(text, what).to.equal('');
      }
      const logs = stack.sidecar!.logs();
      expect(logs).to.contain('ERR_JWT_EXPIRED');
      expect(logs).to.contain('ERR_JWT_CLAIM_VALIDATION_FAILED');
      expect(logs.includes(elsewhere)).to.equal(false);
    });
  });

  it('serve exits non-zero naming every problem of the hook file: a reserved target name, an unknown field, a missing secret', async () => {
    const file = path.join(dir, 'bad.yaml');
    writeFileSync(
      file,
      stringify({
        authentication: { header: { name: 'Authorization', value_env: 'OKTA_HOOK_SECRET_UNSET' } },
        providers: [{ okta_idp_id: '0oaX', idp: IDP_NAME, match: 'email', identity_claims: { groups: 'groups' }, colour: 'blue' }],
      }),
    );
    const result = await runCli(['serve', '--listen', '127.0.0.1:0', '--hook-listen', '127.0.0.1:0'], {
      ...stack.sidecarEnv,
      TOKEN_TAP_HOOK_CONFIG: file,
      OKTA_HOOK_SECRET_UNSET: '',
    });
    expect(result.code).to.equal(78);
    expect(result.stderr).to.contain('"groups" is a claim name Okta reserves');
    expect(result.stderr).to.contain('unknown field "colour"');
    expect(result.stderr).to.contain('OKTA_HOOK_SECRET_UNSET (value_env) is not set');
  });

  it('serve exits non-zero when the OAuth scheme lacks scope and client_id, naming both', async () => {
    const file = path.join(dir, 'bad-oauth.yaml');
    writeFileSync(file, stringify({ authentication: { oauth: { issuer: authServer.issuer, audience: HOOK_AUDIENCE } }, providers: PROVIDERS }));
    const result = await runCli(['serve', '--listen', '127.0.0.1:0', '--hook-listen', '127.0.0.1:0'], { ...stack.sidecarEnv, TOKEN_TAP_HOOK_CONFIG: file });
    expect(result.code).to.equal(78);
    expect(result.stderr).to.contain('oauth.scope is missing');
    expect(result.stderr).to.contain('oauth.client_id is missing');
  });
});
