// The token exchange's pure parts: reading the form, the client's credentials and the RFC 8693
// parameters, client authentication against an API key, the error answers, the exchange file and
// its settings, and the operation's decisions (target, subject token, refresh) with fakes.
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { stringify } from 'yaml';
import { AccessDenied } from '../../src/api/auth.js';
import { comparableEmail, vouchedEmail } from '../../src/capture/jwt.js';
import { readExchangeConfig } from '../../src/config/exchange-file.js';
import { emailKey } from '../../src/operations/find-grant.js';
import { loadSidecarConfig } from '../../src/config/sidecar.js';
import { ConfigError } from '../../src/config/values.js';
import { errorAnswer } from '../../src/exchange/answers.js';
import { authenticateClient } from '../../src/exchange/client-auth.js';
import { readClientCredentials, readExchangeParams, readForm } from '../../src/exchange/form.js';
import { needsRefresh, TokenExchange, type ExchangeRequest, type TokenExchangeDependencies } from '../../src/operations/exchange.js';
import { VaultError } from '../../src/store/errors.js';
import { DecryptError } from '../../src/keys/key-ring.js';
import type { GrantRecord } from '../../src/store/grants.js';

const AT = 'urn:ietf:params:oauth:token-type:access_token';
const ID = 'urn:ietf:params:oauth:token-type:id_token';
const form = (params: Record<string, string>) => new Map(Object.entries(params));
const basic = (id: string, secret: string) => `Basic ${Buffer.from(`${id}:${secret}`).toString('base64')}`;

describe('token exchange: reading the request', () => {
  it('takes only a form body, and no parameter twice', () => {
    expect(readForm('application/x-www-form-urlencoded; charset=UTF-8', Buffer.from('a=1&b=2'))).to.deep.equal({ ok: true, params: form({ a: '1', b: '2' }) });
    expect(readForm('application/json', Buffer.from('{}'))).to.deep.include({ ok: false });
    expect(readForm(undefined, Buffer.from('a=1'))).to.deep.include({ ok: false });
    expect(readForm('application/x-www-form-urlencoded', Buffer.from('audience=a&audience=b'))).to.deep.equal({
      ok: false,
      problem: 'parameter audience is given more than once',
    });
  });

  it('reads HTTP Basic credentials form-decoded (RFC 6749 §2.3.1), or client_id and client_secret from the body, never both', () => {
    expect(readClientCredentials(basic('a%2Bb', 'x+y%3Az'), form({}))).to.deep.equal({
      ok: true,
      credentials: { method: 'basic', clientId: 'a+b', clientSecret: 'x y:z' },
    });
    expect(readClientCredentials(undefined, form({ client_id: 'id', client_secret: 'key' }))).to.deep.equal({
      ok: true,
      credentials: { method: 'post', clientId: 'id', clientSecret: 'key' },
    });
    expect(readClientCredentials(basic('id', 'key'), form({ client_secret: 'key' }))).to.deep.include({ ok: false, basic: true, malformed: true });
    expect(readClientCredentials(basic('id', 'key'), form({ client_id: 'other' }))).to.deep.include({ ok: false, basic: true });
    expect(readClientCredentials(undefined, form({ client_id: 'id' }))).to.deep.include({ ok: false, basic: false });
    expect(readClientCredentials('Bearer abc', form({}))).to.deep.include({ ok: false, basic: true });
    expect(readClientCredentials(`Basic ${Buffer.from('no-colon').toString('base64')}`, form({}))).to.deep.include({ ok: false, basic: true });
  });

  it('reads the RFC 8693 parameters, access_token by default, and says which one is wrong', () => {
    const good = { subject_token: 'a.b.c', subject_token_type: AT, audience: 'entra' };
    expect(readExchangeParams(form(good))).to.deep.equal({
      ok: true,
      request: { subjectToken: 'a.b.c', subjectTokenType: 'access_token', audience: 'entra', requestedTokenType: 'access_token' },
    });
    expect(readExchangeParams(form({ ...good, subject_token_type: ID, requested_token_type: ID }))).to.deep.include({ ok: true });
    const problems: Array<[Record<string, string | undefined>, string, RegExp]> = [
      [{ subject_token: undefined }, 'invalid_request', /subject_token is missing/],
      [{ subject_token: 'x'.repeat(20_000) }, 'invalid_request', /longer than/],
      [{ subject_token_type: undefined }, 'invalid_request', /subject_token_type is missing/],
      [{ subject_token_type: 'urn:x' }, 'invalid_request', /subject_token_type must be/],
      [{ requested_token_type: 'urn:ietf:params:oauth:token-type:refresh_token' }, 'invalid_request', /requested_token_type must be/],
      [{ actor_token: 'a.b.c' }, 'invalid_request', /delegation/],
      [{ resource: 'https://x' }, 'invalid_target', /resource/],
      [{ audience: undefined }, 'invalid_request', /audience is missing/],
    ];
    for (const [change, error, problem] of problems) {
      const params = Object.fromEntries(Object.entries({ ...good, ...change }).filter((entry): entry is [string, string] => entry[1] !== undefined));
      const read = readExchangeParams(form(params));
      expect(read, JSON.stringify(change).slice(0, 80)).to.deep.include({ ok: false, error });
      expect(!read.ok && read.problem).to.match(problem);
      expect(!read.ok && read.problem).to.not.include('x'.repeat(100));
    }
  });
});

describe('token exchange: client authentication', () => {
  const id = '0123456789abcdef';
  const token = `ttk_${id}_${'A'.repeat(43)}`;
  const caller = { apiKeyId: id, name: 'svc', idps: ['*'], operations: ['exchange'] };

  it('takes the API key whose id is client_id, checked by the Authenticator', async () => {
    const seen: Array<string | undefined> = [];
    const authenticator = { authenticateKey: async (presented: string | undefined) => (seen.push(presented), { caller }) };
    expect(await authenticateClient(authenticator, { method: 'basic', clientId: id, clientSecret: token })).to.deep.equal({ ok: true, caller });
    expect(seen).to.deep.equal([token]);
  });

  it('refuses a client_id that is no key id, a key of another id, and what the Authenticator refuses, without asking it twice', async () => {
    let asked = 0;
    const refusing = {
      authenticateKey: async () => ((asked += 1), Promise.reject(new AccessDenied('no', 'unauthenticated', 'wrong secret for this API key id', id))),
    };
    expect(await authenticateClient(refusing, { method: 'post', clientId: 'svc', clientSecret: token })).to.deep.include({ ok: false });
    expect(await authenticateClient(refusing, { method: 'post', clientId: 'fedcba9876543210', clientSecret: token })).to.deep.include({
      ok: false,
      apiKeyId: 'fedcba9876543210',
    });
    expect(asked).to.equal(0);
    expect(await authenticateClient(refusing, { method: 'basic', clientId: id, clientSecret: token })).to.deep.equal({
      ok: false,
      reason: 'wrong secret for this API key id',
      apiKeyId: id,
    });
  });

  it('lets a Postgres failure through (answered 503, not 401)', async () => {
    const down = { authenticateKey: async () => Promise.reject(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' })) };
    let thrown: unknown;
    await authenticateClient(down, { method: 'basic', clientId: id, clientSecret: token }).catch((error: unknown) => (thrown = error));
    expect((thrown as { code?: string }).code).to.equal('ECONNREFUSED');
  });
});

describe('token exchange: error answers (RFC 6749 §5.2)', () => {
  it('gives each error its status, JSON, no-store, and WWW-Authenticate only on a 401 to Basic', () => {
    const cases: Array<[Parameters<typeof errorAnswer>[0], number]> = [
      ['invalid_request', 400],
      ['invalid_grant', 400],
      ['invalid_target', 400],
      ['unauthorized_client', 400],
      ['unsupported_grant_type', 400],
      ['temporarily_unavailable', 503],
      ['server_error', 500],
      ['invalid_client', 401],
    ];
    for (const [error, status] of cases) {
      const answer = errorAnswer(error, 'why');
      expect(answer.status, error).to.equal(status);
      expect(JSON.parse(answer.body)).to.deep.equal({ error, error_description: 'why' });
      expect(answer.headers['cache-control']).to.equal('no-store');
      expect(answer.headers['www-authenticate']).to.equal(undefined);
    }
    expect(errorAnswer('invalid_client', 'x', { basic: true }).headers['www-authenticate']).to.match(/^Basic realm=/);
    expect(errorAnswer('temporarily_unavailable', 'x').headers['retry-after']).to.equal('1');
  });
});

describe('token exchange: the exchange file and its settings', () => {
  const valid = {
    subject_issuers: [{ issuer: 'https://example.okta.com/oauth2/default', audiences: ['api://default'], client_ids: ['0oa1webappEXAMPLE'] }],
    providers: [
      { idp: 'entra', okta_idp_id: '0oaENTRA1', match: 'email' },
      { idp: 'google', okta_idp_id: '0oaGOOGLE1', idp_claim: 'upstream_idp', match: 'claim:upstream_sub', allow_unverified: true },
    ],
  };

  it('reads issuers and providers', () => {
    const problems: string[] = [];
    const config = readExchangeConfig(valid, 'x.yaml', problems)!;
    expect(problems).to.deep.equal([]);
    expect(config.subjectIssuers).to.deep.equal([
      { issuer: 'https://example.okta.com/oauth2/default', audiences: ['api://default'], clientIds: ['0oa1webappEXAMPLE'], jwksUri: undefined },
    ]);
    expect(config.providers.get('entra')).to.deep.equal({
      idp: 'entra',
      oktaIdpId: '0oaENTRA1',
      idpClaim: 'idp',
      match: { kind: 'email' },
      allowUnverified: false,
    });
    expect(config.providers.get('google')).to.deep.equal({
      idp: 'google',
      oktaIdpId: '0oaGOOGLE1',
      idpClaim: 'upstream_idp',
      match: { kind: 'claim', claim: 'upstream_sub' },
      allowUnverified: true,
    });
  });

  it('reports every problem at once, naming where and what is expected, never the value; no idp, issuer or match claim twice', () => {
    const secretish = 'SECRET-LOOKING-VALUE-123';
    const problems: string[] = [];
    const config = readExchangeConfig(
      {
        subject_issuers: [
          { issuer: `http://${secretish}.example/`, audiences: [], token: secretish },
          { issuer: 'https://a.example', audiences: ['x'] },
          { issuer: 'https://a.example', audiences: ['x'] },
        ],
        providers: [
          { idp: secretish, match: `claim:${secretish} x`, okta_idp_id: `${secretish}!` },
          { idp: 'ok', allow_unverified: 'yes', okta_idp_id: '0oa1', idp_claim: `${secretish} x` },
          { idp: 'other', match: 'email' },
        ],
        extra: 1,
      },
      'x.yaml',
      problems,
    );
    expect(config).to.equal(undefined);
    expect(problems.join('\n')).to.not.include(secretish);
    const expected = [
      /^x\.yaml: subject_issuers\[0\]\.issuer must be https/,
      /^x\.yaml: subject_issuers\[0\]\.audiences: expected at least one audience/,
      /^x\.yaml: subject_issuers\[0\]: unknown field "token" \(known: issuer, audiences, client_ids, jwks_uri\)/,
      /^x\.yaml: providers\[0\]\.idp: expected the token-tap IdP name/,
      /^x\.yaml: providers\[0\]\.match: expected "email" or "claim:/,
      /^x\.yaml: providers\[0\]\.okta_idp_id: expected the Okta IdP id/,
      /^x\.yaml: providers\[1\]\.allow_unverified must be true or false/,
      /^x\.yaml: providers\[1\]\.idp_claim: expected the name of the subject token's claim/,
      /^x\.yaml: providers\[2\]\.okta_idp_id: expected the Okta IdP id/,
      /^x\.yaml: unknown field "extra" \(known: subject_issuers, providers\)/,
    ];
    for (const pattern of expected)
      expect(
        problems.some((problem) => pattern.test(problem)),
        String(pattern),
      ).to.equal(true);
    const duplicate: string[] = [];
    readExchangeConfig(
      { ...valid, subject_issuers: [valid.subject_issuers[0], valid.subject_issuers[0]], providers: [valid.providers[0], valid.providers[0]] },
      'x.yaml',
      duplicate,
    );
    expect(duplicate).to.deep.equal([
      'x.yaml: subject_issuers[1]: the same issuer as entry 0 (each is given once)',
      'x.yaml: providers[1]: the same idp as entry 0 (each is given once)',
    ]);
    const empty: string[] = [];
    readExchangeConfig({}, 'x.yaml', empty);
    expect(empty).to.deep.equal([
      'x.yaml: subject_issuers is missing: list the Okta authorization servers whose tokens are accepted',
      'x.yaml: providers is missing: list the IdPs the exchange answers for',
    ]);
    const sharedClaim: string[] = [];
    const claimProvider = (idp: string, match: string) => ({ idp, okta_idp_id: `0oa${idp}`, match });
    readExchangeConfig(
      {
        ...valid,
        providers: [
          claimProvider('entra', 'claim:upstream_sub'),
          claimProvider('okta', 'email'),
          claimProvider('google', 'claim:upstream_sub'),
          claimProvider('slack', 'claim:slack_sub'),
        ],
      },
      'x.yaml',
      sharedClaim,
    );
    expect(sharedClaim).to.deep.equal([
      'x.yaml: providers[2].match: the same claim as entry 0: each IdP needs a claim of its own carrying its upstream subject (e.g. entra_sub, google_sub)',
    ]);
  });

  const base = { DATABASE_URL: 'postgres://u:p@localhost:5432/db', TOKEN_TAP_KEYS: `k1:${Buffer.alloc(32, 7).toString('base64')}` };
  const file = path.join(mkdtempSync(path.join(os.tmpdir(), 'token-tap-exchange-unit-')), 'exchange.yaml');
  writeFileSync(file, stringify(valid));

  it('is off by default, and on with --exchange-listen on loopback and the file', () => {
    expect(loadSidecarConfig(base).exchange).to.equal(undefined);
    const on = loadSidecarConfig({ ...base, TOKEN_TAP_EXCHANGE_CONFIG: file }, { exchangeListen: '127.0.0.1:8443' }).exchange!;
    expect(on.listen).to.deep.equal({ host: '127.0.0.1', port: 8443 });
    expect([on.tls, on.minTtlSeconds, on.config.providers.size]).to.deep.equal([undefined, 60, 2]);
  });

  it('refuses a listener beyond loopback without TLS, a missing file, and a file with the listener off, all at once', () => {
    const problemsOf = (env: NodeJS.ProcessEnv, flags = {}) => {
      try {
        loadSidecarConfig({ ...base, ...env }, flags);
        return [];
      } catch (error) {
        expect(error).to.be.instanceOf(ConfigError);
        return (error as ConfigError).problems;
      }
    };
    expect(problemsOf({ TOKEN_TAP_EXCHANGE_LISTEN: '0.0.0.0:8443', TOKEN_TAP_EXCHANGE_CONFIG: file }).join('\n')).to.match(
      /reachable from other machines.*TOKEN_TAP_EXCHANGE_TLS_CERT/,
    );
    expect(problemsOf({ TOKEN_TAP_EXCHANGE_LISTEN: '127.0.0.1:8443', TOKEN_TAP_EXCHANGE_MIN_TTL_SECONDS: '-1' })).to.have.length(2);
    expect(problemsOf({ TOKEN_TAP_EXCHANGE_CONFIG: file }).join('\n')).to.match(/listener is off/);
  });
});

describe('token exchange: the operation', () => {
  let now = Date.now();
  beforeEach(() => (now = Date.now()));
  const grant = (overrides: Partial<GrantRecord> = {}): GrantRecord => ({
    idp: 'entra',
    subject: 'up-1',
    issuer: null,
    clientId: null,
    email: null,
    scope: ['openid'],
    tokenType: 'Bearer',
    keyId: 'k1',
    accessToken: 'AT-old',
    refreshToken: 'RT',
    idToken: 'IDT',
    extras: {},
    claims: { email: 'a@x.test', email_verified: true },
    accessTokenExpiresAt: new Date(now + 3_600_500),
    refreshTokenExpiresAt: null,
    idTokenExpiresAt: new Date(now + 600_000),
    status: 'active',
    verified: true,
    capturedAt: new Date(now),
    updatedAt: new Date(now),
    lastRefreshedAt: null,
    version: 1,
    ...overrides,
  });
  const request = (more: Partial<ExchangeRequest> = {}): ExchangeRequest => ({
    subjectToken: 't',
    subjectTokenType: 'access_token',
    audience: 'entra',
    requestedTokenType: 'access_token',
    mayUseIdp: () => true,
    ...more,
  });

  function exchangeWith(stored: GrantRecord, refresh: TokenExchangeDependencies['refresher']['refresh'], more: Partial<TokenExchangeDependencies> = {}) {
    return new TokenExchange({
      config: {
        subjectIssuers: [],
        providers: new Map([['entra', { idp: 'entra', oktaIdpId: '0oaENTRA1', idpClaim: 'upstream_idp', match: { kind: 'email' }, allowUnverified: false }]]),
      },
      store: { findGrant: async () => stored, findEmailCandidates: async () => ({ vouched: [stored], unchecked: [], newest: stored }) },
      refresher: { refresh },
      verifier: { verify: async () => ({ ok: true, claims: { sub: 'a@x.test', uid: '00u1', upstream_idp: '0oaENTRA1' } }) },
      minTtlSeconds: 60,
      ...more,
    });
  }
  const noRefresh = async () => expect.fail('no refresh expected');

  it('answers a token good for the minimum TTL as stored, the id_token when asked, and refuses targets without telling which', async () => {
    const exchange = exchangeWith(grant(), noRefresh);
    const answered = await exchange.exchange(request());
    expect(answered.outcome === 'ok' && answered.token).to.deep.include({
      access_token: 'AT-old',
      issued_token_type: AT,
      token_type: 'Bearer',
      scope: 'openid',
    });
    expect(answered.outcome === 'ok' && answered.token.expires_in).to.be.within(3500, 3600);
    expect((await exchange.exchange(request({ requestedTokenType: 'id_token' }))).outcome).to.equal('ok');
    const notAllowed = await exchange.exchange(request({ mayUseIdp: () => false }));
    const unknown = await exchange.exchange(request({ audience: 'nosuch' }));
    expect([notAllowed.outcome, unknown.outcome]).to.deep.equal(['invalid_target', 'invalid_target']);
    expect(notAllowed.outcome !== 'ok' && unknown.outcome !== 'ok' && notAllowed.description === unknown.description).to.equal(true);
  });

  it('refreshes first within the minimum TTL, and serves a still-good token when the IdP is down', async () => {
    const expiring = grant({ accessTokenExpiresAt: new Date(now + 30_000) });
    const refreshed = await exchangeWith(expiring, async () => ({ grant: grant({ accessToken: 'AT-new' }), refreshedByThisCall: true })).exchange(request());
    expect(refreshed).to.deep.include({ outcome: 'ok' });
    expect(refreshed.outcome === 'ok' && refreshed.token.access_token).to.equal('AT-new');
    const down = async () => Promise.reject(new VaultError('IdP unreachable', 'unavailable'));
    const served = await exchangeWith(expiring, down).exchange(request());
    expect(served.outcome === 'ok' && served.token.access_token).to.equal('AT-old');
    expect((await exchangeWith(grant({ accessTokenExpiresAt: new Date(now - 1_000) }), down).exchange(request())).outcome).to.equal('unavailable');
    const refused = async () => Promise.reject(new VaultError('grant is revoked', 'failed_precondition'));
    expect((await exchangeWith(expiring, refused).exchange(request())).outcome).to.equal('refresh_refused');
    // A grant whose other fields do not open (tampered, or a key this sidecar lacks) is not the user's to fix.
    const undecryptable = new DecryptError('access_token of grant (entra, u) failed authentication under key "k2"');
    const broken = async () => Promise.reject(new VaultError(undecryptable.message, 'failed_precondition', { cause: undecryptable }));
    let thrown: unknown;
    await exchangeWith(expiring, broken)
      .exchange(request())
      .catch((error: unknown) => (thrown = error));
    expect(thrown).to.equal(undecryptable);
    expect((await exchangeWith(grant({ accessTokenExpiresAt: new Date(now - 1_000), refreshToken: null }), noRefresh).exchange(request())).outcome).to.equal(
      'refresh_refused',
    );
  });

  it('refuses (wrong_idp) a subject token whose IdP claim is absent or names another Okta IdP, before any grant is read', async () => {
    const unread = { findGrant: async () => expect.fail('no grant read'), findEmailCandidates: async () => expect.fail('no grant read') };
    const claimsCases: Array<[Record<string, unknown>, RegExp]> = [
      [{ sub: 'a@x.test', uid: '00u1' }, /carries no upstream_idp claim/],
      [{ sub: 'a@x.test', uid: '00u1', upstream_idp: '0oaHOSTILE' }, /names another Okta IdP/],
      // Okta's own reserved claim is not the one this provider is told to read.
      [{ sub: 'a@x.test', uid: '00u1', idp: '0oaENTRA1' }, /carries no upstream_idp claim/],
      [{ sub: 'a@x.test', uid: '00u1', upstream_idp: ['0oaENTRA1'] }, /names another Okta IdP/],
    ];
    for (const [claims, why] of claimsCases) {
      const result = await exchangeWith(grant(), noRefresh, { store: unread, verifier: { verify: async () => ({ ok: true, claims }) } }).exchange(request());
      expect(result.outcome, JSON.stringify(claims)).to.equal('wrong_idp');
      expect(result.outcome !== 'ok' && result.description).to.match(why);
      expect(result.notes.oktaUser).to.equal('00u1');
    }
  });

  it('matches by the email claim only when the token says email_verified: true; an address as sub still counts', async () => {
    const asked: string[][] = [];
    const stored = grant();
    const store = {
      findGrant: async () => stored,
      findEmailCandidates: async (_idp: string, emails: readonly string[]) => (asked.push([...emails]), { vouched: [stored], unchecked: [], newest: stored }),
    };
    const withClaims = (claims: Record<string, unknown>) =>
      exchangeWith(stored, noRefresh, {
        store,
        verifier: { verify: async () => ({ ok: true, claims: { uid: '00u1', upstream_idp: '0oaENTRA1', ...claims } }) },
      });
    for (const verified of [undefined, false, 'true']) {
      const result = await withClaims({ sub: '00u1', email: 'a@x.test', ...(verified === undefined ? {} : { email_verified: verified }) }).exchange(request());
      expect(result.outcome, String(verified)).to.equal('no_user');
    }
    expect(asked).to.deep.equal([]);
    expect((await withClaims({ sub: '00u1', email: 'a@x.test', email_verified: true }).exchange(request())).outcome).to.equal('ok');
    expect((await withClaims({ sub: 'a@x.test', email: 'b@x.test' }).exchange(request())).outcome).to.equal('ok');
    expect(asked).to.deep.equal([['a@x.test'], ['a@x.test']]);
  });

  it('compares addresses as ASCII only, lower-cased without a locale: the Kelvin sign and other look-alikes match nobody', () => {
    const kelvin = '\u212Aate@x.test';
    expect(kelvin.toLowerCase()).to.equal('kate@x.test');
    expect([
      comparableEmail('Kate@X.Test'),
      comparableEmail(kelvin),
      comparableEmail('kate@x.test\u0130'),
      comparableEmail(''),
      comparableEmail('a b@x'),
    ]).to.deep.equal(['kate@x.test', undefined, undefined, undefined, undefined]);
    expect(emailKey([kelvin])).to.equal(undefined);
    expect(emailKey([kelvin, 'KATE@x.test', 'kate@x.test'])).to.deep.equal({ email: ['kate@x.test'] });
    expect(vouchedEmail({ email: kelvin, email_verified: true })).to.equal(undefined);
    expect(vouchedEmail({ email: 'Kate@x.test', email_verified: true })).to.equal('kate@x.test');
  });

  it('refreshes within the minimum TTL only when the grant was not refreshed within it: an IdP whose tokens live shorter is not asked on every exchange', () => {
    const minTtlMs = 60_000;
    const at = (expiresInMs: number | undefined, refreshedMsAgo: number | undefined) => ({
      accessTokenExpiresAt: expiresInMs === undefined ? null : new Date(now + expiresInMs),
      lastRefreshedAt: refreshedMsAgo === undefined ? null : new Date(now - refreshedMsAgo),
    });
    const cases: Array<[number | undefined, number | undefined, boolean, string]> = [
      [3_600_000, undefined, false, 'good for the TTL'],
      [undefined, undefined, false, 'no expiry known'],
      [30_000, undefined, true, 'within the TTL, never refreshed'],
      [30_000, 120_000, true, 'within the TTL, refreshed before it'],
      [30_000, 10_000, false, 'within the TTL, refreshed 10 s ago (its lifetime is 40 s)'],
      [30_000, 59_000, false, 'refreshed just within the TTL'],
      [-1_000, 10_000, true, 'expired, though refreshed 10 s ago'],
    ];
    for (const [expiresIn, refreshedAgo, expected, name] of cases) expect(needsRefresh(at(expiresIn, refreshedAgo), now, minTtlMs), name).to.equal(expected);
  });

  it('serves the stored token without asking the refresher when the grant was refreshed within the minimum TTL', async () => {
    const shortLived = grant({ accessTokenExpiresAt: new Date(now + 30_000), lastRefreshedAt: new Date(now - 5_000) });
    const served = await exchangeWith(shortLived, noRefresh).exchange(request());
    expect(served.outcome === 'ok' && served.token.access_token).to.equal('AT-old');
  });

  it('answers unavailable when the subject token issuer keys cannot be fetched, and invalid_subject_token when it does not verify', async () => {
    const keysDown = exchangeWith(grant(), noRefresh, { verifier: { verify: async () => ({ ok: false, kind: 'unavailable', reason: 'keys' }) } });
    expect((await keysDown.exchange(request())).outcome).to.equal('unavailable');
    const bad = exchangeWith(grant(), noRefresh, { verifier: { verify: async () => ({ ok: false, kind: 'invalid', reason: 'ERR_JWT_EXPIRED (exp)' }) } });
    expect(await bad.exchange(request())).to.deep.include({
      outcome: 'invalid_subject_token',
      description: 'the subject_token does not verify: ERR_JWT_EXPIRED (exp)',
    });
  });
});
