// Who may call the hook: Okta, proven by the header value it was given (compared in constant time),
// or by a bearer JWT from Okta's authorization server (verified with jose against the issuer's
// JWKS: signature, iss, aud, exp, and the scope when one is configured). The answer is yes or no;
// why a call was refused goes to the log only, never to the caller.
import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import { createRemoteJWKSet, jwtVerify, type JWTVerifyGetKey } from 'jose';
import type { HookAuthentication } from '../config/hook-file.js';

export type HookAuthResult = { ok: true } | { ok: false; reason: string };

export type HookAuthenticator = (headers: IncomingHttpHeaders) => Promise<HookAuthResult>;

/** SHA-256 first, so both sides have one length and the comparison says nothing about either's. */
function sameSecret(given: string, expected: Buffer): boolean {
  return timingSafeEqual(createHash('sha256').update(given).digest(), expected);
}

function headerValue(headers: IncomingHttpHeaders, name: string): string | undefined {
  const value = headers[name];
  return Array.isArray(value) ? undefined : value;
}

function hasScope(payload: Record<string, unknown>, scope: string): boolean {
  // Okta puts scopes in `scp` (an array); RFC 9068 and most servers in `scope` (space-separated).
  if (Array.isArray(payload.scp) && payload.scp.includes(scope)) return true;
  return typeof payload.scope === 'string' && payload.scope.split(' ').includes(scope);
}

/** Finds the issuer's jwks_uri from its discovery document, once (again after a failure). */
function issuerKeys(issuer: string, jwksUri: URL | undefined): JWTVerifyGetKey {
  let keys: Promise<JWTVerifyGetKey> | undefined;
  const discover = async (): Promise<JWTVerifyGetKey> => {
    if (jwksUri) return createRemoteJWKSet(jwksUri);
    const response = await fetch(`${issuer.replace(/\/+$/, '')}/.well-known/openid-configuration`, { signal: AbortSignal.timeout(2_000), redirect: 'error' });
    if (!response.ok) throw new Error(`discovery answered HTTP ${response.status}`);
    const document = (await response.json()) as { issuer?: unknown; jwks_uri?: unknown };
    if (document.issuer !== issuer || typeof document.jwks_uri !== 'string') throw new Error('discovery document names another issuer or no jwks_uri');
    return createRemoteJWKSet(new URL(document.jwks_uri), { timeoutDuration: 2_000 });
  };
  return async (header, token) => {
    keys ??= discover().catch((error: unknown) => {
      keys = undefined;
      throw error;
    });
    return (await keys)(header, token);
  };
}

export function createHookAuthenticator(config: HookAuthentication): HookAuthenticator {
  if (config.kind === 'header') {
    const expected = createHash('sha256').update(config.value).digest();
    return async (headers) => {
      const given = headerValue(headers, config.name);
      if (given === undefined) return { ok: false, reason: `no ${config.name} header` };
      return sameSecret(given, expected) ? { ok: true } : { ok: false, reason: `wrong ${config.name} value` };
    };
  }
  const keys = issuerKeys(config.issuer, config.jwksUri);
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
      if (config.scope && !hasScope(payload, config.scope)) return { ok: false, reason: `token lacks scope ${config.scope}` };
      return { ok: true };
    } catch (error) {
      // jose's codes (ERR_JWT_EXPIRED, ERR_JWT_CLAIM_VALIDATION_FAILED, ...) say why without quoting the token.
      const code = (error as { code?: unknown }).code;
      return { ok: false, reason: typeof code === 'string' ? code : `cannot verify: ${(error as Error).message}` };
    }
  };
}
