/**
 * A real OpenID Provider (oidc-provider 9) for the demo (`token-tap demo`, `token-tap demo-idp`): it
 * plays the external IdP that sits upstream of Envoy. Everything is in memory, listens on
 * 127.0.0.1 on a free port, and completes interactions without a browser.
 *
 * The tests start it through test/support/oidc-idp.ts, which also records every response its
 * token endpoint writes (onTokenRequest below).
 */
import { generateKeyPair, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { InMemoryAdapter, type StoredEntry } from './oidc-memory-adapter.js';
import { loadProvider, type OidcGrant, type OidcProvider } from './oidc-provider.js';
import { listen } from '../lib/listen.js';

export interface DemoIdp {
  /** http://127.0.0.1:<port> */
  issuer: string;
  port: number;
  /** The IdP's own token endpoint, e.g. http://127.0.0.1:<port>/token */
  tokenUrl: string;
  userinfoUrl: string;
  /** RFC 7009 token revocation endpoint. */
  revocationUrl: string;
  clientId: string;
  clientSecret: string;
  /** Registered redirect URI; it is never contacted. */
  redirectUri: string;
  /** The oidc-provider Provider instance. */
  provider: OidcProvider;
  close(): Promise<void>;
}

export interface DemoAccount {
  email: string;
  name?: string;
  claims?: Record<string, unknown>;
}

/** A client of the client-credentials grant, e.g. Okta fetching a token to call an inline hook. */
export interface ServiceClient {
  clientId: string;
  clientSecret: string;
  /** Lifetime of its access tokens (default 300 s). */
  accessTokenTtlSeconds?: number;
}

export interface DemoIdpOptions {
  /** Maps to oidc-provider's rotateRefreshToken (default false). */
  rotateRefreshToken?: boolean;
  /** Issue a refresh token only when offline_access is asked for, as Google and many IdPs do (default: always). */
  refreshTokenOnlyWithOfflineAccess?: boolean;
  /** Access token lifetime (default 3600). */
  accessTokenTtlSeconds?: number;
  /**
   * accountId -> claims. Default: { alice: { email: 'alice@example.test' } }. `claims` are extra
   * id_token claims (e.g. groups, tid), read at each login, so changing them changes the next login.
   */
  accounts?: Record<string, DemoAccount>;
  /** Where to listen (default 127.0.0.1, a free port). */
  host?: string;
  port?: number;
  /** The issuer URL clients see (default http://127.0.0.1:<port>); set it when others reach the IdP by another name. */
  issuer?: string;
  /** The client secret of its one client (default: random). */
  clientSecret?: string;
  /** Redirect URIs its client may use besides the test one (e.g. an Okta org's callback). */
  redirectUris?: string[];
  /** The private JWK it signs id_tokens with (default: one RSA key per process); give a `kid` to rotate keys. */
  signingKey?: Record<string, unknown>;
  /** Clients of the client-credentials grant; their access tokens are JWTs for one of `resourceServers`. */
  serviceClients?: ServiceClient[];
  /** Resource indicator (also the token's `aud`) -> the scopes a token for it may carry. */
  resourceServers?: Record<string, { scope: string }>;
  /** Called for each token request before the provider answers it (the tests record the raw response). */
  onTokenRequest?: (req: IncomingMessage, res: ServerResponse) => void;
}

const CLIENT_ID = 'okta-test-client';
const REDIRECT_URI = 'http://127.0.0.1:1/callback';
const TOKEN_PATH = '/token';
const USERINFO_PATH = '/me';
const INTERACTION_PREFIX = '/interaction/';

// --- signing key -----------------------------------------------------------

let signingJwk: Promise<Record<string, unknown>> | undefined;

/** A new RSA signing key as a private JWK (RS256 is the default id_token alg). */
export function generateSigningJwk(kid?: string): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    generateKeyPair('rsa', { modulusLength: 2048 }, (err, _publicKey, privateKey) => {
      if (err) reject(err);
      else resolve({ ...privateKey.export({ format: 'jwk' }), use: 'sig', ...(kid ? { kid } : {}) });
    });
  });
}

/** One RSA key per process; avoids the dev-keystore warning. */
function getSigningJwk(): Promise<Record<string, unknown>> {
  signingJwk ??= generateSigningJwk();
  return signingJwk;
}

// --- the IdP ---------------------------------------------------------------

function requestedClaimNames(claimsParam: string | undefined): string[] {
  if (!claimsParam) return [];
  try {
    const parsed = JSON.parse(claimsParam) as Record<string, unknown>;
    const names = new Set<string>();
    for (const member of ['id_token', 'userinfo']) {
      const value = parsed[member];
      if (value && typeof value === 'object') for (const n of Object.keys(value)) names.add(n);
    }
    return [...names];
  } catch {
    return [];
  }
}

export async function startDemoIdp(options: DemoIdpOptions = {}): Promise<DemoIdp> {
  const accounts = options.accounts ?? { alice: { email: 'alice@example.test' } };
  const accountIds = Object.keys(accounts);
  if (accountIds.length === 0) throw new Error('startDemoIdp: at least one account is required');
  const accessTokenTtl = options.accessTokenTtlSeconds ?? 3600;
  const clientSecret = options.clientSecret ?? randomBytes(24).toString('base64url');
  const extraClaimNames = [...new Set(Object.values(accounts).flatMap((account) => Object.keys(account.claims ?? {})))];
  const serviceClients = options.serviceClients ?? [];
  const resourceServers = options.resourceServers ?? {};

  const [Provider, jwk] = await Promise.all([loadProvider(), options.signingKey ?? getSigningJwk()]);

  let provider: OidcProvider | undefined;
  let providerHandler: ((req: IncomingMessage, res: ServerResponse) => unknown) | undefined;

  const handleInteraction = async (req: IncomingMessage, res: ServerResponse, p: OidcProvider): Promise<void> => {
    const details = await p.interactionDetails(req, res);
    const { params, prompt } = details;
    const clientId = String(params.client_id);

    const hint = typeof params.login_hint === 'string' && params.login_hint !== '' ? params.login_hint : undefined;
    const accountId = hint ?? details.session?.accountId ?? accountIds[0]!;
    if (!Object.hasOwn(accounts, accountId)) {
      await p.interactionFinished(
        req,
        res,
        {
          error: 'access_denied',
          error_description: `unknown login_hint ${accountId}`,
        },
        { mergeWithLastSubmission: false },
      );
      return;
    }

    let grant: OidcGrant | undefined;
    if (details.grantId) {
      const existing = await p.Grant.find(details.grantId);
      if (existing && existing.accountId === accountId && existing.clientId === clientId) grant = existing;
    }
    grant ??= new p.Grant({ accountId, clientId });

    if (typeof params.scope === 'string' && params.scope) grant.addOIDCScope(params.scope);
    const claimNames = requestedClaimNames(typeof params.claims === 'string' ? params.claims : undefined);
    if (claimNames.length) grant.addOIDCClaims(claimNames);
    const missing = prompt.details;
    if (missing.missingOIDCScope?.length) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
    if (missing.missingOIDCClaims?.length) grant.addOIDCClaims(missing.missingOIDCClaims);
    for (const [resource, scopes] of Object.entries(missing.missingResourceScopes ?? {})) {
      grant.addResourceScope(resource, scopes.join(' '));
    }
    const grantId = await grant.save();

    await p.interactionFinished(
      req,
      res,
      {
        login: { accountId },
        consent: { grantId },
      },
      { mergeWithLastSubmission: false },
    );
  };

  const server: Server = createServer((req, res) => {
    if (!provider || !providerHandler) {
      res.statusCode = 503;
      res.end('IdP starting');
      return;
    }
    const pathname = (req.url ?? '/').split('?')[0] ?? '/';
    if (pathname.startsWith(INTERACTION_PREFIX)) {
      handleInteraction(req, res, provider).catch((err: unknown) => {
        if (!res.headersSent) {
          res.statusCode = 500;
          res.setHeader('Content-Type', 'text/plain; charset=utf-8');
        }
        res.end(`interaction failed: ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}`);
      });
      return;
    }
    if (pathname === TOKEN_PATH) {
      options.onTokenRequest?.(req, res);
    }
    providerHandler(req, res);
  });

  await listen(server, options.host ?? '127.0.0.1', options.port ?? 0);
  const { port } = server.address() as AddressInfo;
  const issuer = options.issuer?.replace(/\/+$/, '') ?? `http://127.0.0.1:${port}`;

  const ttl = {
    AccessToken: accessTokenTtl,
    AuthorizationCode: 60,
    BackchannelAuthenticationRequest: 600,
    // A resource server's own lifetime wins (getResourceServerInfo below), as in oidc-provider's default.
    ClientCredentials: (_ctx: unknown, token: { resourceServer?: { accessTokenTTL?: number } }) => token.resourceServer?.accessTokenTTL || 600,
    DeviceCode: 600,
    Grant: 14 * 24 * 3600,
    IdToken: 3600,
    Interaction: 3600,
    PreAuthorizedCode: 600,
    RefreshToken: 14 * 24 * 3600,
    Session: 14 * 24 * 3600,
  };

  const store = new Map<string, StoredEntry>();

  try {
    provider = new Provider(issuer, {
      adapter: (model: string) => new InMemoryAdapter(model, store),
      jwks: { keys: [jwk] },
      clients: [
        {
          client_id: CLIENT_ID,
          client_secret: clientSecret,
          redirect_uris: [REDIRECT_URI, ...(options.redirectUris ?? [])],
          grant_types: ['authorization_code', 'refresh_token'],
          response_types: ['code'],
          token_endpoint_auth_method: 'client_secret_basic',
        },
        ...serviceClients.map((service) => ({
          client_id: service.clientId,
          client_secret: service.clientSecret,
          redirect_uris: [],
          grant_types: ['client_credentials'],
          response_types: [],
          token_endpoint_auth_method: 'client_secret_basic',
        })),
      ],
      scopes: ['openid', 'email', 'profile', 'offline_access'],
      claims: {
        acr: null,
        auth_time: null,
        iss: null,
        sid: null,
        openid: ['sub', ...extraClaimNames],
        email: ['email', 'email_verified'],
        profile: ['name'],
      },
      // put scope-derived claims (email, email_verified, name) into the id_token
      conformIdTokenClaims: false,
      async findAccount(_ctx: unknown, sub: string) {
        if (!Object.hasOwn(accounts, sub)) return undefined;
        const account = accounts[sub]!;
        return {
          accountId: sub,
          async claims() {
            return {
              sub,
              email: account.email,
              email_verified: true,
              ...(account.name !== undefined ? { name: account.name } : {}),
              ...account.claims,
            };
          },
        };
      },
      // always issue refresh tokens to our client, with or without offline_access
      async issueRefreshToken(_ctx: unknown, client: { clientId: string; grantTypeAllowed(t: string): boolean }, code: { scopes: Set<string> }) {
        if (options.refreshTokenOnlyWithOfflineAccess && !code.scopes.has('offline_access')) return false;
        return client.clientId === CLIENT_ID && client.grantTypeAllowed('refresh_token');
      },
      // refresh tokens without offline_access must not die with the (in-memory) session
      async expiresWithSession() {
        return false;
      },
      rotateRefreshToken: options.rotateRefreshToken ?? false,
      routes: { token: TOKEN_PATH, userinfo: USERINFO_PATH },
      interactions: {
        url: (_ctx: unknown, interaction: { uid: string }) => `${INTERACTION_PREFIX}${interaction.uid}`,
      },
      features: {
        devInteractions: { enabled: false },
        // A client may revoke the tokens issued to it, and no other's.
        revocation: {
          enabled: true,
          allowedPolicy: async (_ctx: unknown, client: { clientId: string }, token: { clientId: string }) => token.clientId === client.clientId,
        },
        clientCredentials: { enabled: serviceClients.length > 0 },
        // Client-credentials tokens as JWTs for a named resource: what an authorization server
        // such as Okta's hands a client that calls an API (here: Okta calling an inline hook).
        resourceIndicators: {
          enabled: serviceClients.length > 0,
          async getResourceServerInfo(_ctx: unknown, resource: string, client: { clientId: string }) {
            const server = resourceServers[resource];
            if (!server) throw new Error(`unknown resource ${resource}`);
            const service = serviceClients.find((candidate) => candidate.clientId === client.clientId);
            return { scope: server.scope, audience: resource, accessTokenFormat: 'jwt', accessTokenTTL: service?.accessTokenTtlSeconds ?? 300 };
          },
        },
      },
      cookies: { keys: [randomBytes(32).toString('base64url')] },
      ttl,
      clientBasedCORS: () => true,
      async renderError(ctx: { type: string; body: unknown }, out: Record<string, unknown>) {
        ctx.type = 'json';
        ctx.body = out;
      },
    });
    providerHandler = provider.callback();
    provider.on('server_error', (_ctx: unknown, err: unknown) => {
      console.error('oidc-idp: oidc-provider server_error:', err);
    });
  } catch (err) {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    throw err;
  }

  let closed: Promise<void> | undefined;
  return {
    issuer,
    port,
    tokenUrl: `${issuer}${TOKEN_PATH}`,
    userinfoUrl: `${issuer}${USERINFO_PATH}`,
    revocationUrl: `${issuer}/token/revocation`,
    clientId: CLIENT_ID,
    clientSecret,
    redirectUri: REDIRECT_URI,
    provider,
    close() {
      closed ??= new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        server.closeAllConnections();
      });
      return closed;
    },
  };
}
