/**
 * A real OpenID Connect client (openid-client 6) that behaves like Okta does
 * when Okta federates to an external IdP: the browser leg goes straight to the
 * IdP, while the back-channel token call goes to a configurable token endpoint
 * (in e2e tests: Envoy in front of the IdP's token endpoint).
 *
 * The token endpoint response is captured exactly as the client received it
 * (status, header names as sent, raw body bytes) through openid-client's
 * customFetch, which performs the request with node:http(s) rather than fetch
 * so that header case/order and the body bytes are not normalized or decoded.
 */
import { request as httpRequest } from 'node:http';
import type { IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import * as client from 'openid-client';

import type { DemoIdp } from './oidc-idp.js';

export interface ReceivedResponse {
  status: number;
  /** Header fields in the order received, names as sent by the peer. */
  headers: Array<[string, string]>;
  /** Raw body bytes after HTTP framing (de-chunked), with no content decoding. */
  body: Buffer;
}

export interface OktaTokens {
  access_token: string;
  id_token?: string;
  refresh_token?: string;
  expires_in?: number;
  scope?: string;
  /** As normalized by openid-client (lower-cased, e.g. "bearer"); the raw body keeps the IdP's spelling. */
  token_type: string;
}

export interface OktaLogin {
  tokens: OktaTokens;
  /** The validated id_token claims (openid-client's claims()). */
  claims: Record<string, unknown>;
  /** The token endpoint response exactly as the client received it. */
  received: ReceivedResponse;
}

export interface OktaLoginOptions {
  /** Sent as login_hint; the test IdP logs in that account (default: its first account). */
  loginHint?: string;
  /** Default "openid email profile". */
  scope?: string;
  /** Sent as prompt (oidc-provider honours offline_access only with prompt=consent). */
  prompt?: string;
  /** PEM CA to trust for an https token endpoint (a test's self-signed Envoy listener). */
  tokenEndpointCa?: string;
}

/** Errors thrown by refreshAsOkta/loginAsOkta token calls carry the captured response when there was one. */
export type TokenCallError = Error & { received?: ReceivedResponse };

const DEFAULT_SCOPE = 'openid email profile';
const MAX_BROWSER_HOPS = 10;

// --- token endpoint capture --------------------------------------------------

async function bodyToBuffer(body: client.FetchBody): Promise<Buffer | undefined> {
  if (body === undefined || body === null) return undefined;
  if (typeof body === 'string') return Buffer.from(body, 'utf8');
  if (body instanceof URLSearchParams) return Buffer.from(body.toString(), 'utf8');
  if (body instanceof ArrayBuffer) return Buffer.from(body);
  if (body instanceof Uint8Array) return Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  const chunks: Buffer[] = [];
  for await (const chunk of body as AsyncIterable<Uint8Array>) chunks.push(Buffer.from(chunk));
  return Buffer.concat(chunks);
}

function rawHeaderPairs(res: IncomingMessage): Array<[string, string]> {
  const pairs: Array<[string, string]> = [];
  for (let i = 0; i + 1 < res.rawHeaders.length; i += 2) pairs.push([res.rawHeaders[i]!, res.rawHeaders[i + 1]!]);
  return pairs;
}

interface RawResult extends ReceivedResponse {
  statusText: string;
}

async function rawRequest(url: string, options: client.CustomFetchOptions, ca: string | undefined): Promise<RawResult> {
  const body = await bodyToBuffer(options.body);
  const target = new URL(url);
  const headers: Record<string, string> = { ...options.headers };
  if (body !== undefined && !Object.keys(headers).some((h) => h.toLowerCase() === 'content-length')) {
    headers['content-length'] = String(body.length);
  }
  const send = target.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise<RawResult>((resolve, reject) => {
    const req = send(
      target,
      {
        method: options.method,
        headers,
        agent: false, // a fresh connection per call: nothing left open after the test
        ...(ca ? { ca } : {}),
        ...(options.signal ? { signal: options.signal } : {}),
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('error', reject);
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            statusText: res.statusMessage ?? '',
            headers: rawHeaderPairs(res),
            body: Buffer.concat(chunks),
          }),
        );
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

interface Capture {
  last?: ReceivedResponse;
}

function capturingFetch(capture: Capture, ca: string | undefined): client.CustomFetch {
  return async (url, options) => {
    const raw = await rawRequest(url, options, ca);
    const received: ReceivedResponse = { status: raw.status, headers: raw.headers, body: raw.body };
    capture.last = received;
    const headers = new Headers();
    for (const [name, value] of raw.headers) headers.append(name, value);
    const nullBody = [101, 103, 204, 205, 304].includes(raw.status);
    return new Response(nullBody ? null : new Uint8Array(raw.body), {
      status: raw.status,
      statusText: raw.statusText,
      headers,
    });
  };
}

/**
 * An openid-client Configuration built from the IdP's discovered metadata with
 * token_endpoint replaced by `tokenEndpoint`, authenticating with
 * client_secret_basic, and capturing token responses into `capture`.
 */
async function oktaConfiguration(idp: DemoIdp, tokenEndpoint: string, capture: Capture, ca?: string): Promise<client.Configuration> {
  const discovered = await client.discovery(new URL(idp.issuer), idp.clientId, undefined, client.ClientSecretBasic(idp.clientSecret), {
    execute: [client.allowInsecureRequests],
  });
  // serverMetadata() helpers (supportsPKCE) are non-enumerable, so the spread is plain metadata
  const metadata: client.ServerMetadata = { ...(discovered.serverMetadata() as client.ServerMetadata), token_endpoint: tokenEndpoint };
  const config = new client.Configuration(metadata, idp.clientId, { client_secret: idp.clientSecret }, client.ClientSecretBasic(idp.clientSecret));
  client.allowInsecureRequests(config);
  config[client.customFetch] = capturingFetch(capture, ca);
  return config;
}

function pickTokens(response: client.TokenEndpointResponse): OktaTokens {
  const tokens: OktaTokens = { access_token: response.access_token, token_type: response.token_type };
  if (response.id_token !== undefined) tokens.id_token = response.id_token;
  if (response.refresh_token !== undefined) tokens.refresh_token = response.refresh_token;
  if (response.expires_in !== undefined) tokens.expires_in = response.expires_in;
  if (response.scope !== undefined) tokens.scope = response.scope;
  return tokens;
}

async function withReceived<T>(capture: Capture, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (err) {
    if (err instanceof Error && capture.last && !('received' in err)) {
      Object.defineProperty(err, 'received', { value: capture.last, enumerable: false, configurable: true });
    }
    throw err;
  }
}

// --- the browser leg ---------------------------------------------------------

interface StoredCookie {
  name: string;
  value: string;
  host: string;
  path: string;
  expiresAt: number; // epoch ms, Infinity for session cookies
}

/** Host-only, path-aware, in-memory cookie jar; just enough for oidc-provider's cookies. */
class CookieJar {
  private readonly cookies = new Map<string, StoredCookie>();

  store(url: URL, setCookieHeaders: string[]): void {
    for (const header of setCookieHeaders) {
      const [pair = '', ...attributes] = header.split(';');
      const eq = pair.indexOf('=');
      if (eq <= 0) continue;
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      let path = defaultPath(url);
      let expiresAt = Infinity;
      let maxAgeSeen = false;
      for (const attribute of attributes) {
        const aeq = attribute.indexOf('=');
        const key = (aeq < 0 ? attribute : attribute.slice(0, aeq)).trim().toLowerCase();
        const val = aeq < 0 ? '' : attribute.slice(aeq + 1).trim();
        if (key === 'path' && val.startsWith('/')) path = val;
        else if (key === 'max-age' && /^-?\d+$/.test(val)) {
          maxAgeSeen = true;
          expiresAt = Date.now() + Number(val) * 1000;
        } else if (key === 'expires' && !maxAgeSeen) {
          const parsed = Date.parse(val);
          if (!Number.isNaN(parsed)) expiresAt = parsed;
        }
      }
      const key = `${url.host}\u0000${path}\u0000${name}`;
      if (expiresAt <= Date.now()) this.cookies.delete(key);
      else this.cookies.set(key, { name, value, host: url.host, path, expiresAt });
    }
  }

  header(url: URL): string | undefined {
    const now = Date.now();
    const matching = [...this.cookies.values()]
      .filter((c) => c.host === url.host && c.expiresAt > now && pathMatches(url.pathname, c.path))
      .sort((a, b) => b.path.length - a.path.length);
    return matching.length ? matching.map((c) => `${c.name}=${c.value}`).join('; ') : undefined;
  }
}

function defaultPath(url: URL): string {
  const { pathname } = url;
  if (!pathname.startsWith('/') || pathname.lastIndexOf('/') === 0) return '/';
  return pathname.slice(0, pathname.lastIndexOf('/'));
}

function pathMatches(requestPath: string, cookiePath: string): boolean {
  if (requestPath === cookiePath) return true;
  if (!requestPath.startsWith(cookiePath)) return false;
  return cookiePath.endsWith('/') || requestPath[cookiePath.length] === '/';
}

function isRedirectUri(location: URL, redirectUri: URL): boolean {
  return location.origin === redirectUri.origin && location.pathname === redirectUri.pathname;
}

/**
 * Follows the authorization request through the IdP (authorize -> interaction
 * -> resume) with manual redirects and a cookie jar, and returns the final
 * redirect to the client's redirect_uri without contacting it.
 */
async function browse(authorizationUrl: URL, redirectUri: string): Promise<URL> {
  const jar = new CookieJar();
  const callback = new URL(redirectUri);
  let url = authorizationUrl;
  for (let hop = 0; hop < MAX_BROWSER_HOPS; hop += 1) {
    const cookie = jar.header(url);
    const response = await fetch(url, {
      redirect: 'manual',
      headers: { accept: 'text/html,application/json;q=0.9', ...(cookie ? { cookie } : {}) },
    });
    jar.store(url, response.headers.getSetCookie());
    const text = await response.text();
    const location = response.headers.get('location');
    if (response.status < 300 || response.status >= 400 || !location) {
      throw new Error(`browser leg stopped at ${url.href}: HTTP ${response.status} ${text.slice(0, 500)}`);
    }
    const next = new URL(location, url);
    if (isRedirectUri(next, callback)) return next;
    url = next;
  }
  throw new Error(`browser leg did not reach ${redirectUri} within ${MAX_BROWSER_HOPS} redirects`);
}

// --- public API ----------------------------------------------------------------

/**
 * Authorization code flow with PKCE (S256), state and nonce against `idp`, the
 * way Okta does it; only the token request goes to `tokenEndpoint`. The
 * id_token is validated by openid-client (iss/aud/exp/iat/nonce; no signature
 * check, as for any id_token received directly from the token endpoint).
 */
export async function loginAsOkta(idp: DemoIdp, tokenEndpoint: string, options: OktaLoginOptions = {}): Promise<OktaLogin> {
  const capture: Capture = {};
  const config = await oktaConfiguration(idp, tokenEndpoint, capture, options.tokenEndpointCa);

  const codeVerifier = client.randomPKCECodeVerifier();
  const codeChallenge = await client.calculatePKCECodeChallenge(codeVerifier);
  const state = client.randomState();
  const nonce = client.randomNonce();

  const parameters: Record<string, string> = {
    redirect_uri: idp.redirectUri,
    scope: options.scope ?? DEFAULT_SCOPE,
    code_challenge: codeChallenge,
    code_challenge_method: 'S256',
    state,
    nonce,
  };
  if (options.loginHint !== undefined) parameters.login_hint = options.loginHint;
  if (options.prompt !== undefined) parameters.prompt = options.prompt;

  const callbackUrl = await browse(client.buildAuthorizationUrl(config, parameters), idp.redirectUri);

  const response = await withReceived(capture, () =>
    client.authorizationCodeGrant(config, callbackUrl, {
      pkceCodeVerifier: codeVerifier,
      expectedState: state,
      expectedNonce: nonce,
      idTokenExpected: true,
    }),
  );
  const claims = response.claims();
  if (!claims) throw new Error('token response carried no id_token');
  if (!capture.last) throw new Error('token response was not captured');
  return { tokens: pickTokens(response), claims: { ...claims }, received: capture.last };
}

/** refresh_token grant through `tokenEndpoint`, capturing the received response the same way. */
export async function refreshAsOkta(idp: DemoIdp, tokenEndpoint: string, refreshToken: string): Promise<{ tokens: OktaTokens; received: ReceivedResponse }> {
  const capture: Capture = {};
  const config = await oktaConfiguration(idp, tokenEndpoint, capture);
  const response = await withReceived(capture, () => client.refreshTokenGrant(config, refreshToken));
  if (!capture.last) throw new Error('token response was not captured');
  return { tokens: pickTokens(response), received: capture.last };
}
