// Who may call the hook: Okta, proven by the header value it was given (compared in constant time),
// or by a bearer JWT from Okta's authorization server (verified with jose against the issuer's
// JWKS: signature, iss, aud, exp, the scope, and that it is the hook client's own client-credentials
// token: cid/client_id is the configured client, sub is that client, no uid). The answer is yes or no;
// why a call was refused goes to the log only, never to the caller.
import type { IncomingHttpHeaders } from 'node:http';
import { jwtVerify, type JWTVerifyGetKey } from 'jose';
import type { HookAuthentication } from '../config/hook-file.js';
import { JwksCache, type KeyFetchObserver } from '../idp/jwks.js';
import { matchesSecretDigest, secretDigest } from '../lib/constant-time.js';
import { asError } from '../lib/errors.js';

export type HookAuthResult = { ok: true } | { ok: false; reason: string };

export type HookAuthenticator = (headers: IncomingHttpHeaders) => Promise<HookAuthResult>;

function headerValue(headers: IncomingHttpHeaders, name: string): string | undefined {
  const value = headers[name];
  return Array.isArray(value) ? undefined : value;
}

function hasScope(payload: Record<string, unknown>, scope: string): boolean {
  // Okta puts scopes in `scp` (an array); RFC 9068 and most servers in `scope` (space-separated).
  if (Array.isArray(payload.scp) && payload.scp.includes(scope)) return true;
  return typeof payload.scope === 'string' && payload.scope.split(' ').includes(scope);
}

/**
 * The issuer's keys (jwks_uri, or from its discovery document), through the JWKS cache the IdPs' keys
 * use (idp/jwks.ts): fetched on the first call, refetched for an unknown `kid` or when older than 10
 * minutes, and never more than once per cooldown however the fetch went, so a flood of junk bearer
 * tokens while Okta's authorization server is down costs one request per cooldown.
 */
function issuerKeys(config: Extract<HookAuthentication, { kind: 'oauth' }>, options: HookAuthenticatorOptions): JWTVerifyGetKey {
  const cache = new JwksCache({
    cooldownMs: options.keysCooldownMs ?? HOOK_KEYS_COOLDOWN_MS,
    ...(options.now ? { now: options.now } : {}),
    ...(options.onKeyFetch ? { onFetch: options.onKeyFetch } : {}),
  });
  return cache.keysOf({ name: 'okta-hook', issuer: config.issuer, jwksUri: config.jwksUri, timeoutMs: HOOK_KEYS_TIMEOUT_MS }).getKey;
}

export interface HookAuthenticatorOptions {
  /** After any fetch of the issuer's discovery document or JWKS, the next waits this long (default 30 s). */
  keysCooldownMs?: number;
  now?: () => number;
  onKeyFetch?: KeyFetchObserver;
}

export const HOOK_KEYS_COOLDOWN_MS = 30_000;
/** Per request to Okta's authorization server (discovery, JWKS). */
const HOOK_KEYS_TIMEOUT_MS = 2_000;

/** The client id of a token: Okta's `cid`, or RFC 9068's `client_id`; both present must agree. */
function clientIdOf(payload: Record<string, unknown>): string | undefined {
  const { cid, client_id: clientId } = payload;
  if (cid !== undefined && clientId !== undefined && cid !== clientId) return undefined;
  const value = cid ?? clientId;
  return typeof value === 'string' && value !== '' ? value : undefined;
}

export function createHookAuthenticator(config: HookAuthentication, options: HookAuthenticatorOptions = {}): HookAuthenticator {
  if (config.kind === 'header') {
    const expected = secretDigest(config.value);
    return async (headers) => {
      const given = headerValue(headers, config.name);
      if (given === undefined) return { ok: false, reason: `no ${config.name} header` };
      return matchesSecretDigest(given, expected) ? { ok: true } : { ok: false, reason: `wrong ${config.name} value` };
    };
  }
  const keys = issuerKeys(config, options);
  return async (headers) => {
    const authorization = headerValue(headers, 'authorization');
    const token = authorization && /^Bearer ([A-Za-z0-9_.-]+)$/i.exec(authorization)?.[1];
    if (!token) return { ok: false, reason: 'no bearer token' };
    try {
      const { payload } = await jwtVerify(token, keys, {
        issuer: config.issuer,
        audience: config.audience,
        requiredClaims: ['exp'],
        algorithms: ['RS256', 'RS384', 'RS512', 'PS256', 'ES256', 'ES384', 'EdDSA'],
      });
      if (!hasScope(payload, config.scope)) return { ok: false, reason: `token lacks scope ${config.scope}` };
      // Okta's authorization server also mints tokens for end users of any app with this audience;
      // only the hook client's own client-credentials token is Okta calling: cid (or client_id) is
      // that client, sub is the client itself, and no user (uid) is named.
      const clientId = clientIdOf(payload);
      if (clientId !== config.clientId) return { ok: false, reason: 'token was not issued to the hook client (cid/client_id)' };
      if (payload.sub !== clientId) return { ok: false, reason: 'token is not a client-credentials token (sub is not the client)' };
      if ('uid' in payload) return { ok: false, reason: 'token names a user (uid)' };
      return { ok: true };
    } catch (error) {
      // jose's codes (ERR_JWT_EXPIRED, ERR_JWT_CLAIM_VALIDATION_FAILED, ...) say why without quoting the token.
      const code = (error as { code?: unknown }).code;
      return { ok: false, reason: typeof code === 'string' ? code : `cannot verify: ${asError(error).message}` };
    }
  };
}
