/**
 * A real OpenID Provider (oidc-provider 9) for the demo and the end-to-end tests: it plays the
 * external IdP that sits upstream of Envoy. Everything is in memory, listens on
 * 127.0.0.1 on a free port, and completes interactions without a browser.
 *
 * Every response written by the token endpoint is recorded from the raw socket
 * bytes (status line, header names as sent, de-chunked body) so tests can
 * compare what the IdP wrote with what the client received through Envoy.
 */
import { generateKeyPair, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export interface RawHttpResponse {
  status: number;
  /** Header fields in wire order, names exactly as sent, values without surrounding whitespace. */
  headers: Array<[string, string]>;
  /** The body bytes (de-chunked when Transfer-Encoding: chunked). */
  body: Buffer;
}

/**
 * oidc-provider ships no TypeScript declarations (and @types/oidc-provider is
 * not installed), so this is the subset of the Provider API the harness uses.
 * Anything else is reachable through the index signature.
 */
export interface OidcGrant {
  readonly accountId?: string;
  readonly clientId?: string;
  addOIDCScope(scope: string): void;
  addOIDCClaims(claims: string[]): void;
  addResourceScope(resource: string, scope: string): void;
  save(ttl?: number): Promise<string>;
}

export interface OidcInteractionDetails {
  uid: string;
  grantId?: string;
  returnTo: string;
  prompt: {
    name: string;
    reasons: string[];
    details: {
      missingOIDCScope?: string[];
      missingOIDCClaims?: string[];
      missingResourceScopes?: Record<string, string[]>;
      [key: string]: unknown;
    };
  };
  params: {
    client_id?: string;
    scope?: string;
    login_hint?: string;
    claims?: string;
    [key: string]: unknown;
  };
  session?: { accountId?: string; uid?: string; [key: string]: unknown };
}

export interface OidcProvider {
  readonly issuer: string;
  Grant: {
    new (init: { accountId: string; clientId: string }): OidcGrant;
    find(id: string): Promise<OidcGrant | undefined>;
  };
  interactionDetails(req: IncomingMessage, res: ServerResponse): Promise<OidcInteractionDetails>;
  interactionResult(
    req: IncomingMessage,
    res: ServerResponse,
    result: Record<string, unknown>,
    options?: { mergeWithLastSubmission?: boolean },
  ): Promise<string>;
  interactionFinished(
    req: IncomingMessage,
    res: ServerResponse,
    result: Record<string, unknown>,
    options?: { mergeWithLastSubmission?: boolean },
  ): Promise<void>;
  /** Koa's request listener. */
  callback(): (req: IncomingMessage, res: ServerResponse) => unknown;
  pathFor(name: string, options?: Record<string, unknown>): string;
  on(event: string, listener: (...args: any[]) => void): unknown;
  [key: string]: unknown;
}

type ProviderConstructor = new (issuer: string, configuration: Record<string, unknown>) => OidcProvider;

export interface TestIdp {
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
  /** Every response the token endpoint wrote, in order, parsed from the raw socket bytes. */
  tokenResponses: RawHttpResponse[];
  /** The oidc-provider Provider instance. */
  provider: OidcProvider;
  close(): Promise<void>;
}

export interface TestAccount {
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

export interface TestIdpOptions {
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
  accounts?: Record<string, TestAccount>;
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
}

const CLIENT_ID = 'okta-test-client';
const REDIRECT_URI = 'http://127.0.0.1:1/callback';
const TOKEN_PATH = '/token';
const USERINFO_PATH = '/me';
const INTERACTION_PREFIX = '/interaction/';

// --- loading oidc-provider -------------------------------------------------

let providerModule: Promise<ProviderConstructor> | undefined;

/**
 * oidc-provider 9 prints "Unsupported runtime. Use Node.js v22.x LTS ..." from
 * its entry module when running on Node 20. The module is loaded lazily here
 * and that single, exact message is dropped while the import evaluates.
 * (A non-literal specifier keeps TypeScript from demanding declarations.)
 */
function loadProvider(): Promise<ProviderConstructor> {
  providerModule ??= (async () => {
    const specifier: string = 'oidc-provider';
    const originalWarn = console.warn;
    console.warn = (...args: unknown[]): void => {
      if (typeof args[0] === 'string' && args[0].startsWith('oidc-provider WARNING: Unsupported runtime')) return;
      originalWarn.apply(console, args);
    };
    try {
      const mod = (await import(specifier)) as { default: ProviderConstructor };
      return mod.default;
    } finally {
      console.warn = originalWarn;
    }
  })();
  return providerModule;
}

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

// --- in-memory adapter -----------------------------------------------------

interface StoredEntry {
  payload: Record<string, unknown>;
  expiresAt: number; // epoch ms, Infinity when no expiry
}

/**
 * A minimal per-provider in-memory adapter (supplying one also avoids the
 * "development-only in-memory adapter" warning of the built-in one, whose
 * store is shared module-wide).
 */
class InMemoryAdapter {
  constructor(
    private readonly model: string,
    private readonly store: Map<string, StoredEntry>,
  ) {}

  private key(id: string): string {
    return `${this.model}:${id}`;
  }

  private live(key: string): StoredEntry | undefined {
    const entry = this.store.get(key);
    if (entry && entry.expiresAt <= Date.now()) {
      this.store.delete(key);
      return undefined;
    }
    return entry;
  }

  async upsert(id: string, payload: Record<string, unknown>, expiresIn?: number): Promise<void> {
    const expiresAt = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : Infinity;
    this.store.set(this.key(id), { payload, expiresAt });
  }

  async find(id: string): Promise<Record<string, unknown> | undefined> {
    return this.live(this.key(id))?.payload;
  }

  async findByUid(uid: string): Promise<Record<string, unknown> | undefined> {
    return this.findBy((p) => p.uid === uid);
  }

  async findByUserCode(userCode: string): Promise<Record<string, unknown> | undefined> {
    return this.findBy((p) => p.userCode === userCode);
  }

  async consume(id: string): Promise<void> {
    const entry = this.live(this.key(id));
    if (entry) entry.payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id: string): Promise<void> {
    this.store.delete(this.key(id));
  }

  async revokeByGrantId(grantId: string): Promise<void> {
    const prefix = `${this.model}:`;
    for (const [key, entry] of this.store) {
      if (key.startsWith(prefix) && entry.payload.grantId === grantId) this.store.delete(key);
    }
  }

  private findBy(predicate: (payload: Record<string, unknown>) => boolean): Record<string, unknown> | undefined {
    const prefix = `${this.model}:`;
    for (const key of [...this.store.keys()]) {
      if (!key.startsWith(prefix)) continue;
      const entry = this.live(key);
      if (entry && predicate(entry.payload)) return entry.payload;
    }
    return undefined;
  }
}

// --- raw response capture --------------------------------------------------

function toBuffer(chunk: unknown, encoding: unknown): Buffer {
  if (typeof chunk === 'string') {
    return Buffer.from(chunk, typeof encoding === 'string' && Buffer.isEncoding(encoding) ? encoding : 'utf8');
  }
  if (chunk instanceof Uint8Array) return Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  return Buffer.alloc(0);
}

function headerValues(headers: Array<[string, string]>, name: string): string[] {
  const lower = name.toLowerCase();
  return headers.filter(([n]) => n.toLowerCase() === lower).map(([, v]) => v);
}

function dechunk(buf: Buffer, start: number): Buffer {
  const parts: Buffer[] = [];
  let pos = start;
  for (;;) {
    const lineEnd = buf.indexOf('\r\n', pos, 'latin1');
    if (lineEnd < 0) throw new Error('truncated chunked body (no chunk-size line)');
    const sizeField = buf.subarray(pos, lineEnd).toString('latin1').split(';')[0]!.trim();
    if (!/^[0-9a-fA-F]+$/.test(sizeField)) throw new Error(`invalid chunk size ${JSON.stringify(sizeField)}`);
    const size = Number.parseInt(sizeField, 16);
    if (size === 0) return Buffer.concat(parts); // trailers, if any, are ignored
    const dataStart = lineEnd + 2;
    if (dataStart + size > buf.length) throw new Error('truncated chunked body');
    parts.push(buf.subarray(dataStart, dataStart + size));
    pos = dataStart + size + 2; // skip CRLF after chunk data
  }
}

/** Parses the bytes a server wrote for one HTTP/1.x response (skipping 1xx interim responses). */
export function parseRawHttpResponse(raw: Buffer, requestMethod = 'POST'): RawHttpResponse {
  let offset = 0;
  for (;;) {
    const headEnd = raw.indexOf('\r\n\r\n', offset, 'latin1');
    if (headEnd < 0) throw new Error('incomplete HTTP response head');
    const lines = raw.subarray(offset, headEnd).toString('latin1').split('\r\n');
    const statusMatch = /^HTTP\/\d(?:\.\d)? (\d{3})/.exec(lines[0] ?? '');
    if (!statusMatch) throw new Error(`invalid status line ${JSON.stringify(lines[0])}`);
    const status = Number(statusMatch[1]);
    const headers: Array<[string, string]> = [];
    for (const line of lines.slice(1)) {
      const colon = line.indexOf(':');
      if (colon <= 0) continue;
      headers.push([line.slice(0, colon), line.slice(colon + 1).trim()]);
    }
    offset = headEnd + 4;
    if (status >= 100 && status < 200 && status !== 101) continue;

    let body: Buffer;
    if (requestMethod === 'HEAD' || status === 204 || status === 304) {
      body = Buffer.alloc(0);
    } else if (headerValues(headers, 'transfer-encoding').some((v) => /(^|,)\s*chunked\s*$/i.test(v))) {
      body = dechunk(raw, offset);
    } else {
      const contentLength = headerValues(headers, 'content-length')[0];
      body = contentLength !== undefined
        ? raw.subarray(offset, offset + Number(contentLength))
        : raw.subarray(offset);
    }
    return { status, headers, body: Buffer.from(body) };
  }
}

/**
 * Records every byte written to the connection while `res` is being sent and
 * parses it once the response has finished. Assumes no HTTP pipelining on the
 * connection (neither Envoy nor Node's fetch pipeline requests).
 */
function captureRawResponse(req: IncomingMessage, res: ServerResponse, onResponse: (r: RawHttpResponse) => void): void {
  const socket: Socket = req.socket;
  const chunks: Buffer[] = [];
  const originalWrite = socket.write;
  const hadOwnWrite = Object.prototype.hasOwnProperty.call(socket, 'write');
  let active = true;

  const wrapper = function (this: Socket, ...args: unknown[]): boolean {
    if (active) chunks.push(toBuffer(args[0], args[1]));
    return (originalWrite as (...a: unknown[]) => boolean).apply(this, args);
  };
  socket.write = wrapper as Socket['write'];

  const stop = (): void => {
    if (!active) return;
    active = false;
    if (socket.write === (wrapper as Socket['write'])) {
      if (hadOwnWrite) socket.write = originalWrite;
      else delete (socket as { write?: unknown }).write;
    }
  };

  // prependListener: run before Node's own 'finish' handler, which may hand the
  // socket to the next (pipelined) response and flush it synchronously.
  res.prependListener('finish', () => {
    stop();
    try {
      onResponse(parseRawHttpResponse(Buffer.concat(chunks), req.method));
    } catch (err) {
      console.error('oidc-idp: could not parse captured token response:', err);
    }
  });
  res.once('close', stop);
}

// --- the IdP ---------------------------------------------------------------

function requestedClaimNames(claimsParam: string | undefined): string[] {
  if (!claimsParam) return [];
  try {
    const parsed = JSON.parse(claimsParam) as Record<string, unknown>;
    const names = new Set<string>();
    for (const member of ['id_token', 'userinfo']) {
      const value = parsed[member];
      if (value && typeof value === 'object') Object.keys(value).forEach((n) => names.add(n));
    }
    return [...names];
  } catch {
    return [];
  }
}

export async function startTestIdp(options: TestIdpOptions = {}): Promise<TestIdp> {
  const accounts = options.accounts ?? { alice: { email: 'alice@example.test' } };
  const accountIds = Object.keys(accounts);
  if (accountIds.length === 0) throw new Error('startTestIdp: at least one account is required');
  const accessTokenTtl = options.accessTokenTtlSeconds ?? 3600;
  const clientSecret = options.clientSecret ?? randomBytes(24).toString('base64url');
  const extraClaimNames = [...new Set(Object.values(accounts).flatMap((account) => Object.keys(account.claims ?? {})))];
  const serviceClients = options.serviceClients ?? [];
  const resourceServers = options.resourceServers ?? {};

  const [Provider, jwk] = await Promise.all([loadProvider(), options.signingKey ?? getSigningJwk()]);

  let provider: OidcProvider | undefined;
  let providerHandler: ((req: IncomingMessage, res: ServerResponse) => unknown) | undefined;
  const tokenResponses: RawHttpResponse[] = [];

  const handleInteraction = async (req: IncomingMessage, res: ServerResponse, p: OidcProvider): Promise<void> => {
    const details = await p.interactionDetails(req, res);
    const { params, prompt } = details;
    const clientId = String(params.client_id);

    const hint = typeof params.login_hint === 'string' && params.login_hint !== '' ? params.login_hint : undefined;
    const accountId = hint ?? details.session?.accountId ?? accountIds[0]!;
    if (!Object.prototype.hasOwnProperty.call(accounts, accountId)) {
      await p.interactionFinished(req, res, {
        error: 'access_denied',
        error_description: `unknown login_hint ${accountId}`,
      }, { mergeWithLastSubmission: false });
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

    await p.interactionFinished(req, res, {
      login: { accountId },
      consent: { grantId },
    }, { mergeWithLastSubmission: false });
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
      captureRawResponse(req, res, (r) => tokenResponses.push(r));
    }
    providerHandler(req, res);
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, options.host ?? '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
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
      clients: [{
        client_id: CLIENT_ID,
        client_secret: clientSecret,
        redirect_uris: [REDIRECT_URI, ...(options.redirectUris ?? [])],
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_basic',
      }, ...serviceClients.map((service) => ({
        client_id: service.clientId,
        client_secret: service.clientSecret,
        redirect_uris: [],
        grant_types: ['client_credentials'],
        response_types: [],
        token_endpoint_auth_method: 'client_secret_basic',
      }))],
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
        if (!Object.prototype.hasOwnProperty.call(accounts, sub)) return undefined;
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
        revocation: { enabled: true, allowedPolicy: async (_ctx: unknown, client: { clientId: string }, token: { clientId: string }) => token.clientId === client.clientId },
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
    tokenResponses,
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
