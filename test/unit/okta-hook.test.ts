// The Okta token inline hook's pure parts: its file, reading Okta's request, building the patch
// commands, the header-secret check, and the Envoy route.
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { stringify } from 'yaml';
import { loadHookConfig, type HookProvider } from '../../src/config/hook-file.js';
import { loadSidecarConfig } from '../../src/config/sidecar.js';
import { ConfigError } from '../../src/config/values.js';
import type { EnvoyConfigOptions } from '../../src/envoyconfig/options.js';
import { renderEnvoyConfig } from '../../src/envoyconfig/render.js';
import { createHookAuthenticator } from '../../src/hook/auth.js';
import { GrantFinder, type GrantFinderDependencies } from '../../src/hook/lookup.js';
import { buildCommands, claimAt } from '../../src/hook/patch.js';
import { readTokenHookRequest, type TokenHookRequest } from '../../src/hook/request.js';
import { generateKeySpec } from '../../src/keys/key-ring.js';
import type { GrantRecord } from '../../src/store/grants.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'token-tap-hook-unit-'));
let fileNumber = 0;

function hookFile(content: unknown): string {
  const file = path.join(dir, `hook-${(fileNumber += 1)}.yaml`);
  writeFileSync(file, typeof content === 'string' ? content : stringify(content));
  return file;
}

function load(
  content: unknown,
  env: NodeJS.ProcessEnv = { OKTA_HOOK_SECRET: 's3cret-value' },
): { config: ReturnType<typeof loadHookConfig>; problems: string[] } {
  const problems: string[] = [];
  const config = loadHookConfig({ ...env, TOKEN_TAP_HOOK_CONFIG: hookFile(content) }, problems);
  return { config, problems };
}

const GOOD = {
  authentication: { header: { name: 'Authorization', value_env: 'OKTA_HOOK_SECRET' } },
  providers: [
    {
      okta_idp_id: '0oa1abcdEXAMPLE',
      idp: 'entra',
      match: 'email',
      identity_claims: { upstream_groups: 'groups' },
      access_claims: { upstream_tid: 'tid' },
      require_grant: false,
    },
  ],
};

describe('Okta hook file (TOKEN_TAP_HOOK_CONFIG)', () => {
  it('reads the example in docs/okta-hook.md', () => {
    const { config, problems } = load(GOOD);
    expect(problems).to.deep.equal([]);
    expect(config!.authentication).to.deep.equal({ kind: 'header', name: 'authorization', value: 's3cret-value' });
    expect(config!.freshnessWaitMs).to.equal(1000);
    const provider = config!.providers.get('0oa1abcdEXAMPLE')!;
    expect(provider).to.include({ idp: 'entra', requireGrant: false, allowUnverified: false });
    expect(provider.match).to.deep.equal({ kind: 'email' });
    expect([...provider.identityClaims]).to.deep.equal([['upstream_groups', 'groups']]);
  });

  it('reads idp_claim, refusing a name Okta reserves and one the claim maps also target', () => {
    const entry = GOOD.providers[0]!;
    expect(load({ ...GOOD, providers: [{ ...entry, idp_claim: 'upstream_idp' }] }).config!.providers.get('0oa1abcdEXAMPLE')!.idpClaim).to.equal('upstream_idp');
    expect(load(GOOD).config!.providers.get('0oa1abcdEXAMPLE')!.idpClaim).to.equal(undefined);
    const alone = load({ ...GOOD, providers: [{ okta_idp_id: '0oaX', idp: 'entra', idp_claim: 'upstream_idp' }] });
    expect(alone.problems).to.deep.equal([]);
    const bad = load({
      ...GOOD,
      providers: [
        { ...entry, idp_claim: 'idp' },
        { ...entry, okta_idp_id: '0oaB', idp_claim: 'upstream_tid' },
        { ...entry, okta_idp_id: '0oaC', idp_claim: 'a b' },
      ],
    });
    expect(bad.config).to.equal(undefined);
    const text = bad.problems.join('\n');
    expect(text).to.match(/providers\[0\]\.idp_claim.*must not be a claim name Okta reserves/);
    expect(text).to.match(/providers\[1\]\.idp_claim.*is also a target of identity_claims or access_claims/);
    expect(text).to.match(/providers\[2\]\.idp_claim.*must be a claim name/);
  });

  it('reads the OAuth scheme and match: claim:<name>', () => {
    const { config, problems } = load(
      {
        authentication: {
          oauth: { issuer: 'https://example.okta.com/oauth2/aus1', audience: 'api://token-tap-hook', scope: 'token_tap.hook', client_id: '0oaHOOK' },
        },
        providers: [{ okta_idp_id: '0oaX', idp: 'acme', match: 'claim:upstream_sub', identity_claims: { upstream_tid: 'tid' }, allow_unverified: true }],
      },
      {},
    );
    expect(problems).to.deep.equal([]);
    expect(config!.authentication).to.include({
      kind: 'oauth',
      issuer: 'https://example.okta.com/oauth2/aus1',
      audience: 'api://token-tap-hook',
      scope: 'token_tap.hook',
      clientId: '0oaHOOK',
    });
    expect(config!.providers.get('0oaX')!.match).to.deep.equal({ kind: 'claim', claim: 'upstream_sub' });
  });

  it('reports every problem at once, naming reserved targets, unknown fields and the missing secret, and quoting no secret', () => {
    const { config, problems } = load(
      {
        authentication: { header: { value_env: 'NOT_SET_ANYWHERE' } },
        colour: 'blue',
        providers: [
          { okta_idp_id: '0oaA', idp: 'entra', identity_claims: { groups: 'groups', sub: 'sub' }, access_claims: { scp: 'scope' }, extra: 1 },
          { okta_idp_id: '0oaB', idp: 'Not A Name', match: 'subject', identity_claims: { ok_name: 'a..b' } },
        ],
      },
      { OTHER: 's3cret-value' },
    );
    expect(config).to.equal(undefined);
    const text = problems.join('\n');
    for (const expected of [
      '"groups" is a claim name Okta reserves',
      '"sub" is a claim name Okta reserves',
      '"scp" is a claim name Okta reserves',
      'unknown field "colour"',
      'unknown field "extra"',
      'NOT_SET_ANYWHERE (value_env) is not set',
      'idp must be the token-tap IdP name',
      'match must be "email" or "claim:',
      'ok_name must be a claim of the upstream id_token',
    ]) {
      expect(text).to.contain(expected);
    }
    expect(text).not.to.contain('s3cret-value');
  });

  it('refuses a secret written in the file, without repeating it', () => {
    const { problems } = load({ ...GOOD, authentication: { header: { name: 'Authorization', value: 'pasted-secret-123' } } });
    expect(problems.join('\n')).to.contain('must not be written in the file');
    expect(problems.join('\n')).not.to.contain('pasted-secret-123');
  });

  it('refuses an http issuer off this machine, two providers with one Okta IdP id, and an over-long wait', () => {
    const { problems } = load({
      authentication: { oauth: { issuer: 'http://example.okta.com/oauth2/aus1', audience: 'api://hook' } },
      freshness_wait_ms: 5000,
      providers: [GOOD.providers[0], GOOD.providers[0]],
    });
    const text = problems.join('\n');
    expect(text).to.contain('must be https');
    expect(text).to.contain('is given twice');
    expect(text).to.contain('freshness_wait_ms must be an integer from 0 to 2000');
  });

  it('given both schemes, names that and the problems inside each, with those of every provider, at once', () => {
    const { config, problems } = load(
      {
        authentication: {
          header: { value_env: 'NOT_SET_ANYWHERE', colour: 1 },
          oauth: { issuer: 'https://example.okta.com/oauth2/aus1', audience: 'api://hook' },
        },
        providers: [{ okta_idp_id: '0oaA', idp: 'entra' }, 'entra'],
      },
      {},
    );
    expect(config).to.equal(undefined);
    // Each problem without its leading "<file>: ".
    expect(problems.map((problem) => problem.replace(/^[^:]+: /, '')).sort()).to.deep.equal([
      'authentication.header.value_env: environment variable NOT_SET_ANYWHERE (value_env) is not set',
      'authentication.header: unknown field "colour" (known: name, value_env, value_file)',
      "authentication.oauth.client_id is missing: give the client id of the Okta app Okta uses for the hook's client-credentials call (the token's cid)",
      "authentication.oauth.scope is missing: give the scope Okta asks for when it gets the hook's token (e.g. token_tap.hook)",
      'authentication: give exactly one of header or oauth',
      'providers[0]: give identity_claims, access_claims and/or idp_claim (nothing would be added)',
      'providers[1] must be a mapping with okta_idp_id, idp and the claims to add',
    ]);
  });

  it('refuses an OAuth issuer with a query or a fragment (an issuer identifier has neither; its discovery document is under it)', () => {
    for (const issuer of ['https://example.okta.com/oauth2/aus1?tenant=a', 'https://example.okta.com/oauth2/aus1#x']) {
      const { config, problems } = load({
        ...GOOD,
        authentication: { oauth: { issuer, audience: 'api://hook', scope: 'token_tap.hook', client_id: '0oaHOOK' } },
      });
      expect(config).to.equal(undefined);
      expect(problems.join('\n')).to.contain('authentication.oauth.issuer must have no query or fragment').and.not.contain('tenant=a');
    }
  });

  it('is off by default; on, it needs the file; the file alone is a mistake', () => {
    const base = { DATABASE_URL: 'postgres://x@127.0.0.1/db', TOKEN_TAP_KEYS: generateKeySpec('k1') };
    expect(loadSidecarConfig(base).hook).to.equal(undefined);
    expect(() => loadSidecarConfig({ ...base, TOKEN_TAP_HOOK_LISTEN: '127.0.0.1:8081' })).to.throw(ConfigError, 'TOKEN_TAP_HOOK_CONFIG is not set');
    expect(() => loadSidecarConfig({ ...base, TOKEN_TAP_HOOK_CONFIG: hookFile(GOOD), OKTA_HOOK_SECRET: 'x' })).to.throw(
      ConfigError,
      'the Okta hook listener is off',
    );
    const config = loadSidecarConfig({ ...base, TOKEN_TAP_HOOK_CONFIG: hookFile(GOOD), OKTA_HOOK_SECRET: 'x' }, { hookListen: '127.0.0.1:8081' });
    expect(config.hook!.listen).to.deep.equal({ host: '127.0.0.1', port: 8081 });
  });
});

describe('Okta hook request and patch commands', () => {
  const provider: HookProvider = {
    oktaIdpId: '0oaA',
    idp: 'entra',
    match: { kind: 'email' },
    identityClaims: new Map([
      ['upstream_groups', 'groups'],
      ['upstream_country', 'address.country'],
      ['upstream_missing', 'nope'],
      ['a/b~c', 'tid'],
    ]),
    accessClaims: new Map([
      ['upstream_tid', 'tid'],
      ['upstream_null', 'nothing'],
    ]),
    requireGrant: false,
    allowUnverified: false,
    idpClaim: undefined,
  };
  const upstream = { groups: ['g1', 'g2'], tid: 't-1', address: { country: 'NL' }, nothing: null };

  function request(overrides: Partial<TokenHookRequest>): TokenHookRequest {
    return { oktaIdpId: '0oaA', login: 'a@example.test', identityClaims: {}, accessClaims: {}, sessionCreatedAt: undefined, ...overrides };
  }

  it('adds present claims only, escaping the pointer, for the tokens the request carries', () => {
    expect(buildCommands(provider, request({}), upstream)).to.deep.equal([
      {
        type: 'com.okta.identity.patch',
        value: [
          { op: 'add', path: '/claims/upstream_groups', value: ['g1', 'g2'] },
          { op: 'add', path: '/claims/upstream_country', value: 'NL' },
          { op: 'add', path: '/claims/a~1b~0c', value: 't-1' },
        ],
      },
      { type: 'com.okta.access.patch', value: [{ op: 'add', path: '/claims/upstream_tid', value: 't-1' }] },
    ]);
    expect(buildCommands(provider, request({ accessClaims: undefined }), upstream).map((command) => command.type)).to.deep.equal(['com.okta.identity.patch']);
    expect(buildCommands(provider, request({ identityClaims: undefined }), { groups: ['x'] })).to.deep.equal([]);
  });

  it("adds the provider's idp_claim (its Okta IdP id) to every token the request carries, also when no grant matched", () => {
    const stamped: HookProvider = { ...provider, idpClaim: 'upstream_idp' };
    const idp = { op: 'add', path: '/claims/upstream_idp', value: '0oaA' };
    const [identity, access] = buildCommands(stamped, request({}), upstream);
    expect(identity!.value.at(-1)).to.deep.equal(idp);
    expect(access).to.deep.equal({ type: 'com.okta.access.patch', value: [{ op: 'add', path: '/claims/upstream_tid', value: 't-1' }, idp] });
    expect(buildCommands(stamped, request({}), undefined)).to.deep.equal([
      { type: 'com.okta.identity.patch', value: [idp] },
      { type: 'com.okta.access.patch', value: [idp] },
    ]);
    expect(buildCommands(stamped, request({ identityClaims: undefined }), undefined)).to.deep.equal([{ type: 'com.okta.access.patch', value: [idp] }]);
    expect(buildCommands(provider, request({}), undefined)).to.deep.equal([]);
  });

  it('follows dotted paths without reaching into arrays or inherited properties', () => {
    expect(claimAt({ a: { b: 1 } }, 'a.b')).to.equal(1);
    expect(claimAt({ a: [1] }, 'a.0')).to.equal(undefined);
    expect(claimAt({}, 'constructor')).to.equal(undefined);
  });

  it('reads the IdP id from the session, else the id_token claim; the login from the profile', () => {
    const body = {
      eventType: 'com.okta.oauth2.tokens.transform',
      data: {
        context: {
          session: { idp: { id: '0oaS' }, login: 'session@example.test', createdAt: '2025-01-02T03:04:05.000Z' },
          user: { profile: { login: 'Profile@Example.test' } },
        },
        identity: { claims: { idp: '0oaI' } },
      },
    };
    const read = readTokenHookRequest(body) as TokenHookRequest;
    expect(read).to.deep.include({ oktaIdpId: '0oaS', login: 'Profile@Example.test', accessClaims: undefined });
    expect(read.sessionCreatedAt!.toISOString()).to.equal('2025-01-02T03:04:05.000Z');
    const noSession = readTokenHookRequest({ eventType: body.eventType, data: { identity: { claims: { idp: '0oaI' } } } }) as TokenHookRequest;
    expect(noSession.oktaIdpId).to.equal('0oaI');
    expect(readTokenHookRequest({ eventType: 'com.okta.import.transform', data: {} })).to.be.a('string');
  });
});

describe('Okta hook match: email among many look-alike grants', () => {
  const strict: HookProvider = {
    oktaIdpId: '0oaS',
    idp: 'acme',
    match: { kind: 'email' },
    identityClaims: new Map(),
    accessClaims: new Map(),
    requireGrant: true,
    allowUnverified: false,
    idpClaim: undefined,
  };
  const lax: HookProvider = { ...strict, oktaIdpId: '0oaL', allowUnverified: true };
  const start = Date.parse('2025-01-01T00:00:00Z');

  function grant(subject: string, minutes: number, options: { emailVerified: boolean; verified: boolean; email?: string }): GrantRecord {
    const email = options.email ?? 'ada@example.test';
    const at = new Date(start + minutes * 60_000);
    return {
      idp: 'acme',
      subject,
      issuer: null,
      clientId: null,
      email,
      scope: [],
      tokenType: 'Bearer',
      keyId: 'k1',
      accessToken: `at-${subject}`,
      refreshToken: null,
      idToken: 'x.y.z',
      extras: {},
      claims: { sub: subject, email, email_verified: options.emailVerified },
      accessTokenExpiresAt: null,
      refreshTokenExpiresAt: null,
      idTokenExpiresAt: null,
      status: 'active',
      verified: options.verified,
      capturedAt: at,
      updatedAt: at,
      lastRefreshedAt: null,
      version: 1,
    };
  }

  /**
   * The store as Postgres answers it, over every grant. findActiveGrantsByEmail is the interface
   * before migration 000007 (the newest `limit` candidates only), kept so this test shows that bug.
   */
  function storeOf(grants: GrantRecord[]) {
    const candidates = (emails: readonly string[], verifiedOnly: boolean) =>
      grants
        .filter((g) => g.status === 'active' && emails.includes(g.email!.toLowerCase()) && (g.verified || !verifiedOnly))
        .sort((a, b) => b.updatedAt.getTime() - a.updatedAt.getTime());
    const vouches = (g: GrantRecord, emails: readonly string[]) => g.claims?.email_verified === true && emails.includes(String(g.claims.email).toLowerCase());
    return {
      findGrant: async (_idp: string, subject: string) => grants.find((g) => g.subject === subject),
      findEmailCandidates: async (_idp: string, emails: readonly string[], options: { verifiedOnly: boolean }) => {
        const all = candidates(emails, options.verifiedOnly);
        return { vouched: all.filter((g) => vouches(g, emails)).slice(0, 2), unchecked: [], newest: all[0] };
      },
      findActiveGrantsByEmail: async (_idp: string, emails: readonly string[], options: { verifiedOnly: boolean; limit: number }) =>
        candidates(emails, options.verifiedOnly).slice(0, options.limit),
    };
  }

  function finder(grants: GrantRecord[]): GrantFinder {
    const dependencies = {
      config: {
        authentication: { kind: 'header', name: 'authorization', value: 'x' },
        providers: new Map([
          [strict.oktaIdpId, strict],
          [lax.oktaIdpId, lax],
        ]),
        freshnessWaitMs: 0,
      },
      store: storeOf(grants) as unknown as GrantFinderDependencies['store'],
      captures: { hasInFlight: () => false, waitForIdp: async () => true },
    } satisfies GrantFinderDependencies;
    return new GrantFinder(dependencies);
  }

  const request = (oktaIdpId: string): TokenHookRequest => ({
    oktaIdpId,
    login: 'Ada@Example.test',
    identityClaims: {},
    accessClaims: {},
    sessionCreatedAt: undefined,
  });
  const genuine = grant('ada', 0, { emailVerified: true, verified: true });

  it('finds the genuine grant behind 12 newer look-alikes whose email the IdP did not verify', async () => {
    const lookAlikes = Array.from({ length: 12 }, (_, index) => grant(`mallory-${index}`, index + 1, { emailVerified: false, verified: true }));
    const found = await finder([genuine, ...lookAlikes]).find(request('0oaS'));
    expect(found.outcome).to.equal('found');
    expect((found as { grant: GrantRecord }).grant.subject).to.equal('ada');
  });

  it('with allow_unverified, finds it behind 12 newer unverified grants claiming the email unverified', async () => {
    const lookAlikes = Array.from({ length: 12 }, (_, index) =>
      grant(`mallory-${index}`, index + 1, { emailVerified: false, verified: false, email: 'ADA@example.test' }),
    );
    const found = await finder([genuine, ...lookAlikes]).find(request('0oaL'));
    expect(found.outcome).to.equal('found');
    expect((found as { grant: GrantRecord }).grant.subject).to.equal('ada');
  });

  it('keeps its outcomes: two vouched grants behind look-alikes are ambiguous; none vouched is email_unverified on the newest', async () => {
    const lookAlikes = Array.from({ length: 12 }, (_, index) => grant(`mallory-${index}`, index + 1, { emailVerified: false, verified: true }));
    const twin = grant('ada-twin', -1, { emailVerified: true, verified: true });
    expect((await finder([twin, genuine, ...lookAlikes]).find(request('0oaS'))).outcome).to.equal('ambiguous');
    const unverified = await finder(lookAlikes).find(request('0oaS'));
    expect(unverified.outcome).to.equal('email_unverified');
    expect((unverified as { grant: GrantRecord }).grant.subject).to.equal('mallory-11');
  });
});

describe('Okta hook header secret', () => {
  it('accepts the exact value only', async () => {
    const check = createHookAuthenticator({ kind: 'header', name: 'authorization', value: 'the-secret' });
    expect(await check({ authorization: 'the-secret' })).to.deep.equal({ ok: true });
    for (const headers of [{ authorization: 'the-secretX' }, { authorization: 'the-secre' }, { authorization: '' }, {}]) {
      expect((await check(headers)).ok, JSON.stringify(headers)).to.equal(false);
    }
  });
});

describe('envoy-config --okta-hook', () => {
  const base: EnvoyConfigOptions = {
    idps: [{ name: 'entra', tokenUrl: new URL('https://login.example/token') }],
    listen: { host: '0.0.0.0', port: 8443 },
    sidecar: { host: '127.0.0.1', port: 50051 },
    admin: { host: '127.0.0.1', port: 9901 },
    mode: 'observability',
  };
  const chain = (config: any) => config.static_resources.listeners[0].filter_chains[0];
  const hcm = (config: any) => chain(config).filters[0].typed_config;

  it('routes POST /okta/token-hook to the hook listener without ext_proc, with a body limit and a timeout below 3 s', () => {
    const config: any = renderEnvoyConfig({ ...base, oktaHook: { host: '127.0.0.1', port: 8081 }, tls: { certFile: '/c.pem', keyFile: '/k.pem' } });
    const routes = hcm(config).route_config.virtual_hosts[0].routes;
    const hook = routes.find((route: any) => route.name === 'okta_token_hook');
    expect(hook.match).to.deep.equal({ path: '/okta/token-hook', headers: [{ name: ':method', string_match: { exact: 'POST' } }] });
    expect(hook.route.cluster).to.equal('token_tap_okta_hook');
    expect(Number.parseFloat(hook.route.timeout)).to.be.below(3);
    expect(hook.typed_per_filter_config['envoy.filters.http.ext_proc'].disabled).to.equal(true);
    expect(hook.typed_per_filter_config['envoy.filters.http.buffer'].buffer.max_request_bytes).to.equal(256 * 1024);
    const notPost = routes.find((route: any) => route.name === 'okta_token_hook_not_post');
    expect(notPost.direct_response.status).to.equal(405);
    // Before the catch-all, on the (TLS) listener Okta reaches.
    expect(routes.indexOf(hook)).to.be.below(routes.findIndex((route: any) => route.name === 'not_an_idp_route'));
    expect(chain(config).transport_socket.name).to.equal('envoy.transport_sockets.tls');
    const filters = hcm(config).http_filters.map((filter: any) => filter.name);
    expect(filters.at(-1)).to.equal('envoy.filters.http.router');
    expect(hcm(config).http_filters.find((filter: any) => filter.name === 'envoy.filters.http.buffer').disabled).to.equal(true);
    const cluster = config.static_resources.clusters.find((entry: any) => entry.name === 'token_tap_okta_hook');
    expect(cluster.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address).to.deep.equal({ address: '127.0.0.1', port_value: 8081 });
  });

  it('adds nothing without the flag', () => {
    const text = JSON.stringify(renderEnvoyConfig(base));
    expect(text).not.to.contain('okta_token_hook');
    expect(text).not.to.contain('/okta/token-hook');
    expect(text).not.to.contain('envoy.filters.http.buffer');
  });
});

describe("Okta hook OAuth bearer token: only the hook client's own client-credentials token", () => {
  const ISSUER_PATH = '/oauth2/ausHOOK';
  const HOOK_CLIENT = '0oaHOOKCLIENT';
  let server: import('node:http').Server;
  let issuer: string;
  let privateKey: Awaited<ReturnType<typeof import('jose').generateKeyPair>>['privateKey'];
  let discoveryRequests = 0;
  let discoveryDown = false;

  before(async () => {
    const { createServer } = await import('node:http');
    const { exportJWK, generateKeyPair } = await import('jose');
    const pair = await generateKeyPair('RS256');
    privateKey = pair.privateKey;
    const jwk = { ...(await exportJWK(pair.publicKey)), kid: 'k1', use: 'sig', alg: 'RS256' };
    server = createServer((request, response) => {
      if (request.url === `${ISSUER_PATH}/.well-known/openid-configuration`) {
        discoveryRequests += 1;
        if (discoveryDown) {
          response.writeHead(503).end();
          return;
        }
        response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ issuer, jwks_uri: `${issuer}/v1/keys` }));
        return;
      }
      if (request.url === `${ISSUER_PATH}/v1/keys`) {
        response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: [jwk] }));
        return;
      }
      response.writeHead(404).end();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    issuer = `http://127.0.0.1:${(server.address() as { port: number }).port}${ISSUER_PATH}`;
  });
  after(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  async function bearer(claims: Record<string, unknown>): Promise<{ authorization: string }> {
    const { SignJWT } = await import('jose');
    const token = await new SignJWT(claims)
      .setProtectedHeader({ alg: 'RS256', kid: 'k1' })
      .setIssuer(issuer)
      .setAudience('api://token-tap-hook')
      .setIssuedAt()
      .setExpirationTime('5m')
      .sign(privateKey);
    return { authorization: `Bearer ${token}` };
  }

  function oauthCheck() {
    return createHookAuthenticator({
      kind: 'oauth',
      issuer,
      audience: 'api://token-tap-hook',
      scope: 'token_tap.hook',
      clientId: HOOK_CLIENT,
      jwksUri: undefined,
    });
  }

  it("refuses an end user's access token for the same audience and scope, and accepts Okta's hook client token", async () => {
    const check = oauthCheck();
    // What Okta mints for a user of another app: cid of that app, sub the user's login, uid the user.
    const userToken = await bearer({ cid: '0oaOTHERAPP', sub: 'alice@example.test', uid: '00uALICE', scp: ['token_tap.hook'] });
    expect(await check(userToken)).to.deep.include({ ok: false });
    // A user token of the hook client itself is not a client-credentials token either.
    expect((await check(await bearer({ cid: HOOK_CLIENT, sub: 'alice@example.test', uid: '00uALICE', scp: ['token_tap.hook'] }))).ok).to.equal(false);
    expect((await check(await bearer({ cid: HOOK_CLIENT, sub: HOOK_CLIENT, uid: '00uALICE', scp: ['token_tap.hook'] }))).ok).to.equal(false);
    expect((await check(await bearer({ cid: HOOK_CLIENT, sub: HOOK_CLIENT, scp: ['openid'] }))).ok).to.equal(false);
    expect((await check(await bearer({ cid: HOOK_CLIENT, client_id: '0oaOTHERAPP', sub: HOOK_CLIENT, scp: ['token_tap.hook'] }))).ok).to.equal(false);
    // Okta's shape (cid, scp array) and RFC 9068's (client_id, scope string).
    expect(await check(await bearer({ cid: HOOK_CLIENT, sub: HOOK_CLIENT, scp: ['token_tap.hook'] }))).to.deep.equal({ ok: true });
    expect(await check(await bearer({ client_id: HOOK_CLIENT, sub: HOOK_CLIENT, scope: 'other token_tap.hook' }))).to.deep.equal({ ok: true });
  });

  it('asks the discovery document at most once per cooldown when it is down, however many junk tokens arrive', async () => {
    discoveryDown = true;
    discoveryRequests = 0;
    try {
      const check = oauthCheck();
      const junk = {
        authorization: `Bearer ${Buffer.from(JSON.stringify({ alg: 'RS256', kid: 'nope', typ: 'JWT' })).toString('base64url')}.${Buffer.from('{"sub":"x"}').toString('base64url')}.c2ln`,
      };
      const answers = await Promise.all(Array.from({ length: 10 }, () => check(junk)));
      for (let index = 0; index < 10; index += 1) answers.push(await check(junk));
      expect(answers.every((answer) => !answer.ok)).to.equal(true);
      expect(discoveryRequests).to.equal(1);
    } finally {
      discoveryDown = false;
    }
  });

  it('the hook file needs scope and client_id for OAuth, naming both at once', () => {
    const { config, problems } = load(
      { ...GOOD, authentication: { oauth: { issuer: 'https://example.okta.com/oauth2/aus1', audience: 'api://token-tap-hook' } } },
      {},
    );
    expect(config).to.equal(undefined);
    const text = problems.join('\n');
    expect(text).to.contain('oauth.scope is missing');
    expect(text).to.contain('oauth.client_id is missing');
  });
});
