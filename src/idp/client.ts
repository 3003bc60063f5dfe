// The sidecar as an OAuth client of one IdP, for refresh (RFC 6749 section 6) and revocation
// (RFC 7009), on oauth4webapi: it builds the requests, authenticates the client and validates the
// answers (token_type, expires_in, and a refreshed id_token's iss, aud, azp, exp and iat). Client
// credentials come from the sidecar's own config (config/idp-file.ts), never from Okta's
// requests. The secret lives in a private field (no logger or JSON.stringify reaches it) and no
// message ever quotes it, a token, or an answer's body.
import type { AuthorizationServer, Client, ClientAuth } from 'oauth4webapi';
import { parseFields, readTokenResponse } from '../capture/token-response.js';
import type { TokenSet } from '../capture/types.js';
import { readLimited } from './http.js';
import { lazyImport } from '../lib/lazy-import.js';
import { asError, TokenTapError } from '../lib/errors.js';
import { errorName } from '../lib/error-description.js';

export type AuthMethod = 'client_secret_basic' | 'client_secret_post';
export const AUTH_METHODS: readonly AuthMethod[] = ['client_secret_basic', 'client_secret_post'];
const MAX_RESPONSE_BYTES = 1024 * 1024;

type OAuth = typeof import('oauth4webapi');
// Imported on the first refresh or revocation: a sidecar that does neither never loads it. A failed
// import is not kept: the next call tries again.
const loadOauth = lazyImport<OAuth>(() => import('oauth4webapi'));

/** Why a call to the IdP did not give tokens. Messages name the IdP and the OAuth error code only. */
export class IdpCallError extends TokenTapError {
  override name = 'IdpCallError';
  constructor(
    message: string,
    /** unavailable: network, timeout, 5xx, 429 (retry later); refused: the IdP said no. */
    readonly kind: 'unavailable' | 'refused',
    /** The OAuth error code (invalid_grant, invalid_client, ...) when the IdP sent one. */
    readonly errorCode?: string,
  ) {
    super(message, kind === 'unavailable' ? 'unavailable' : 'failed_precondition');
  }
}

export interface IdpClientSettings {
  idp: string;
  tokenUrl: URL;
  revocationUrl: URL | undefined;
  clientId: string;
  authMethod: AuthMethod;
  timeoutMs: number;
}

/** The configured IdP clients by IdP name; empty when TOKEN_TAP_IDP_CONFIG is not set. */
export type IdpClients = ReadonlyMap<string, IdpClient>;

export class IdpClient {
  readonly #secret: string;

  constructor(
    readonly settings: IdpClientSettings,
    secret: string,
  ) {
    this.#secret = secret;
  }

  get idp(): string {
    return this.settings.idp;
  }

  get clientId(): string {
    return this.settings.clientId;
  }

  get canRevoke(): boolean {
    return this.settings.revocationUrl !== undefined;
  }

  /**
   * grant_type=refresh_token at the token endpoint. A refreshed id_token must come from
   * `expectedIssuer` (the pinned issuer, else the one that issued the stored grant). Throws IdpCallError.
   */
  async refresh(refreshToken: string, expectedIssuer?: string): Promise<TokenSet> {
    const oauth = await loadOauth();
    const raw: RawAnswer = {};
    let response: Response;
    try {
      response = await oauth.refreshTokenGrantRequest(
        this.server(expectedIssuer),
        this.client(),
        this.auth(oauth),
        refreshToken,
        this.requestOptions(oauth, raw),
      );
    } catch (error) {
      throw this.unreachable(error, 'token endpoint');
    }
    if (!raw.body) throw this.unreadable('token endpoint');
    // The issuer a refreshed id_token is checked against: without a pinned or stored one, the
    // token's own (what the IdP says of itself; refresh.ts still requires the same subject).
    const issuer = expectedIssuer ?? issuerInside(raw.status!, raw.body);
    try {
      await oauth.processRefreshTokenResponse(this.server(issuer), this.client(), response);
    } catch (error) {
      throw this.refused(oauth, error, raw, 'refresh');
    }
    const read = readTokenResponse(raw.status, raw.body);
    if (read.kind !== 'tokens') throw new IdpCallError(`IdP "${this.idp}" token endpoint answered with a body that is not a token response`, 'unavailable');
    return read.tokens;
  }

  /**
   * RFC 7009: revoke one token. A 200 means done (also for a token the IdP no longer knows);
   * unsupported_token_type means the IdP does not revoke that kind, which is not a failure.
   */
  async revoke(token: string, hint: 'access_token' | 'refresh_token'): Promise<'revoked' | 'unsupported'> {
    if (!this.settings.revocationUrl) throw new Error(`IdP "${this.idp}" has no revocation_url`);
    const oauth = await loadOauth();
    const raw: RawAnswer = {};
    let response: Response;
    try {
      response = await oauth.revocationRequest(this.server(undefined), this.client(), this.auth(oauth), token, {
        ...this.requestOptions(oauth, raw),
        additionalParameters: { token_type_hint: hint },
      });
    } catch (error) {
      throw this.unreachable(error, 'revocation endpoint');
    }
    if (!raw.body) throw this.unreadable('revocation endpoint');
    try {
      await oauth.processRevocationResponse(response);
      return 'revoked';
    } catch (error) {
      const refusal = this.refused(oauth, error, raw, 'revocation');
      if (refusal.errorCode === 'unsupported_token_type') return 'unsupported';
      throw refusal;
    }
  }

  private server(issuer: string | undefined): AuthorizationServer {
    return {
      // oauth4webapi compares a refreshed id_token's iss with this; revocation never reads it.
      issuer: issuer ?? this.settings.tokenUrl.origin,
      token_endpoint: this.settings.tokenUrl.href,
      ...(this.settings.revocationUrl ? { revocation_endpoint: this.settings.revocationUrl.href } : {}),
    };
  }

  private client(): Client {
    return { client_id: this.clientId };
  }

  private auth(oauth: OAuth): ClientAuth {
    return this.settings.authMethod === 'client_secret_post' ? oauth.ClientSecretPost(this.#secret) : oauth.ClientSecretBasic(this.#secret);
  }

  /** Timeout, no redirects, plain http only where config allowed it (loopback), and a size-capped body kept for the parser. */
  private requestOptions(oauth: OAuth, raw: RawAnswer) {
    const limitedFetch = async (url: string, init: RequestInit): Promise<Response> => {
      const answer = await fetch(url, { ...init, redirect: 'error' });
      raw.status = answer.status;
      raw.body = await readLimited(answer, MAX_RESPONSE_BYTES).catch(() => undefined);
      const view = raw.body && answer.status === 200 ? strictView(raw.body) : undefined;
      if (view) return Response.json(view, { status: 200 });
      return new Response(raw.body ?? null, { status: answer.status, statusText: answer.statusText, headers: answer.headers });
    };
    return {
      signal: AbortSignal.timeout(this.settings.timeoutMs),
      [oauth.customFetch]: limitedFetch as typeof fetch,
      [oauth.allowInsecureRequests]: this.settings.tokenUrl.protocol === 'http:',
    };
  }

  private unreachable(error: unknown, what: string): IdpCallError {
    const reason = errorName(error) === 'TimeoutError' ? `no answer within ${this.settings.timeoutMs} ms` : describeFetchError(error);
    return new IdpCallError(`IdP "${this.idp}" ${what} cannot be reached: ${reason}`, 'unavailable');
  }

  private unreadable(what: string): IdpCallError {
    return new IdpCallError(`IdP "${this.idp}" ${what} answer could not be read (cut off, or over ${MAX_RESPONSE_BYTES} bytes)`, 'unavailable');
  }

  /**
   * An answer oauth4webapi did not accept. Its errors carry the body as their cause, tokens
   * included, so only the status and the OAuth error code are taken from them.
   */
  private refused(oauth: OAuth, error: unknown, raw: RawAnswer, what: 'refresh' | 'revocation'): IdpCallError {
    const status = raw.status ?? 0;
    const endpoint = what === 'refresh' ? 'token endpoint' : 'revocation endpoint';
    if (status >= 500 || status === 429) return new IdpCallError(`IdP "${this.idp}" ${endpoint} answered HTTP ${status}`, 'unavailable');
    const code = oauthErrorCode(oauth, error, raw);
    if (code) return new IdpCallError(`IdP "${this.idp}" refused the ${what}: ${code}`, 'refused', code);
    const check = error instanceof oauth.OperationProcessingError || error instanceof oauth.UnsupportedOperationError ? ` (${error.message})` : '';
    return new IdpCallError(`IdP "${this.idp}" ${endpoint} answered HTTP ${status} with no OAuth error code and no acceptable answer${check}`, 'unavailable');
  }
}

/**
 * What oauth4webapi is shown of a 200 token answer: the quirks capture/ already accepts from real
 * IdPs (a form-encoded body, no token_type, which RFC 6750 makes bearer) straightened out, so its
 * checks judge the protocol rather than the vendor. The tokens themselves are read from the raw body.
 */
function strictView(body: Buffer): Record<string, unknown> | undefined {
  const parsed = parseFields(body);
  if (!('fields' in parsed) || typeof parsed.fields.access_token !== 'string') return undefined;
  return { token_type: 'bearer', ...parsed.fields };
}

interface RawAnswer {
  status?: number;
  body?: Buffer | undefined;
}

/** The OAuth `error` code of an answer: from oauth4webapi's error, or the body (some IdPs send it with HTTP 200). */
function oauthErrorCode(oauth: OAuth, error: unknown, raw: RawAnswer): string | undefined {
  if (error instanceof oauth.ResponseBodyError && typeof error.error === 'string') return safeCode(error.error);
  if (!raw.body) return undefined;
  const read = readTokenResponse(raw.status, raw.body);
  return read.kind === 'idp_error' ? safeCode(read.errorCode) : undefined;
}

/** OAuth error codes are printable ASCII (RFC 6749 5.2); anything else is not quoted. */
function safeCode(code: string | undefined): string | undefined {
  return code && /^[\x20-\x21\x23-\x5B\x5D-\x7E]{1,64}$/.test(code) ? code : undefined;
}

function issuerInside(status: number, body: Buffer): string | undefined {
  const read = readTokenResponse(status, body);
  const iss = read.kind === 'tokens' ? read.tokens.claims?.iss : undefined;
  return typeof iss === 'string' ? iss : undefined;
}

function describeFetchError(error: unknown): string {
  const cause = (error as { cause?: { code?: string; message?: string } }).cause;
  return cause?.code ?? cause?.message ?? asError(error).message;
}
