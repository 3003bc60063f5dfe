// The token exchange's subject token: a JWT from one of the Okta authorization servers the exchange
// file names, checked with jose against that server's keys (the one JWKS cache, idp/jwks.ts:
// asymmetric algorithms only, refetched for an unknown `kid` at most once per cooldown). `iss` must
// be one of the configured issuers exactly (keys are never fetched from a token's own `iss`), `aud`
// one of its audiences (access tokens) or client ids (id_tokens), exp/nbf within 60 s of skew.
// Why a token was refused is said in jose's codes and our words, never with the token or a claim.
import { decodeJwt, errors, jwtVerify, type JWTPayload } from 'jose';
import type { SubjectIssuer } from '../config/exchange-file.js';
import { ASYMMETRIC_ALGORITHMS, JwksCache, JwksUnavailable, type IssuerKeys, type KeyFetchObserver } from '../idp/jwks.js';
import { VerifiedTokenCache, type VerifiedTokenCacheOptions } from './verified-tokens.js';

export type SubjectTokenType = 'access_token' | 'id_token';

/** RFC 8693 §5: clocks of Okta and the sidecar may differ by this much. */
export const CLOCK_SKEW_SECONDS = 60;
/** Per request to an authorization server (discovery, key set). */
const KEYS_TIMEOUT_MS = 2_000;

export type SubjectTokenCheck =
  | { ok: true; claims: JWTPayload }
  /** `unavailable`: the issuer's keys cannot be fetched (try again); `invalid`: the token does not verify. */
  | { ok: false; kind: 'invalid' | 'unavailable'; reason: string };

export interface SubjectTokenVerifierOptions {
  /** Least time between two fetches of one issuer's keys, whatever their outcome. */
  cooldownMs: number;
  onFetch?: KeyFetchObserver;
  now?: () => number;
  /** Tokens verified lately (verified-tokens.ts); its bounds, or false for none. */
  verifiedCache?: VerifiedTokenCacheOptions | false;
}

/** A client-credentials token (Okta: `sub` is the client itself, no `uid`) names no user to exchange for. */
function namesNoUser(claims: JWTPayload): boolean {
  const clientId = claims.cid ?? claims.client_id;
  return claims.uid === undefined && typeof clientId === 'string' && claims.sub === clientId;
}

export class SubjectTokenVerifier {
  private readonly keys = new Map<string, IssuerKeys>();
  private readonly verified: VerifiedTokenCache | undefined;
  private readonly now: () => number;

  constructor(
    private readonly issuers: readonly SubjectIssuer[],
    options: SubjectTokenVerifierOptions,
  ) {
    this.now = options.now ?? Date.now;
    this.verified = options.verifiedCache === false ? undefined : new VerifiedTokenCache(options.verifiedCache);
    const cache = new JwksCache({
      cooldownMs: options.cooldownMs,
      ...(options.onFetch ? { onFetch: options.onFetch } : {}),
      ...(options.now ? { now: options.now } : {}),
    });
    for (const issuer of issuers) {
      this.keys.set(
        issuer.issuer,
        cache.keysOf({ name: `exchange:${issuer.issuer}`, issuer: issuer.issuer, jwksUri: issuer.jwksUri, timeoutMs: KEYS_TIMEOUT_MS }),
      );
    }
  }

  async verify(token: string, type: SubjectTokenType): Promise<SubjectTokenCheck> {
    const cacheKey = this.verified ? VerifiedTokenCache.keyOf(token, type) : '';
    const cached = this.verified?.get(cacheKey, this.now());
    if (cached) return { ok: true, claims: cached };
    let unverified: JWTPayload;
    try {
      unverified = decodeJwt(token);
    } catch {
      return { ok: false, kind: 'invalid', reason: 'not a JWT' };
    }
    // Only to pick the issuer's settings: the verification below pins that issuer again.
    const issuer = this.issuers.find((entry) => entry.issuer === unverified.iss);
    if (!issuer) return { ok: false, kind: 'invalid', reason: 'iss is none of the subject_issuers' };
    const audience = type === 'access_token' ? issuer.audiences : issuer.clientIds;
    if (audience.length === 0) return { ok: false, kind: 'invalid', reason: 'id_tokens of this issuer are not taken (it has no client_ids)' };
    try {
      const { payload } = await jwtVerify(token, this.keys.get(issuer.issuer)!.getKey, {
        issuer: issuer.issuer,
        audience: [...audience],
        algorithms: [...ASYMMETRIC_ALGORITHMS],
        clockTolerance: CLOCK_SKEW_SECONDS,
        requiredClaims: ['exp', 'sub'],
      });
      if (type === 'access_token' && namesNoUser(payload))
        return { ok: false, kind: 'invalid', reason: "a client's own token (client credentials): it names no user" };
      return { ok: true, claims: this.verified ? this.verified.set(cacheKey, payload, this.now()) : payload };
    } catch (error) {
      if (error instanceof JwksUnavailable) return { ok: false, kind: 'unavailable', reason: "the authorization server's keys cannot be fetched" };
      if (error instanceof errors.JOSEError) return { ok: false, kind: 'invalid', reason: describeJoseError(error) };
      throw error;
    }
  }
}

/** jose's code, and for a claim check which claim: never the value. */
function describeJoseError(error: InstanceType<typeof errors.JOSEError>): string {
  if (error instanceof errors.JWTClaimValidationFailed || error instanceof errors.JWTExpired) return `${error.code} (${error.claim})`;
  return error.code;
}
