// The claim checks a captured id_token must pass before it is stored (OIDC Core 3.1.3.7), as pure
// functions: what the IdP's keys say is verify.ts's business. Reasons are short codes (they go into
// logs, capture_events.detail and nothing else) and never quote a claim value.

import { createHash } from 'node:crypto';

export interface ExpectedIdToken {
  /** The pinned issuer, compared with `iss` character for character. */
  issuer: string;
  /** Okta's client at the IdP. */
  clientId: string;
}

export type ClaimProblem =
  | 'issuer_mismatch'
  | 'audience_mismatch'
  | 'azp_mismatch'
  | 'no_subject'
  | 'no_expiry'
  | 'expired'
  | 'not_yet_valid'
  | 'issued_in_future';

/** Clock skew allowed between the IdP and us, in seconds. */
export const CLOCK_TOLERANCE_SECONDS = 120;

function numeric(value: unknown): number | undefined {
  return typeof value === 'number' && Number.isFinite(value) ? value : undefined;
}

/**
 * undefined when the claims are acceptable; else the first problem. Times are judged at
 * `observedAt`, when the IdP's answer went through Envoy, not when the pump gets to it: a capture
 * that waited in the spool through a Postgres outage is as valid as it was when Okta received it.
 * Okta trades the code at once, so a token already expired then (beyond the tolerance) is suspect.
 */
export function checkIdTokenClaims(
  claims: Record<string, unknown>,
  expected: ExpectedIdToken,
  observedAt: Date,
  toleranceSeconds = CLOCK_TOLERANCE_SECONDS,
): ClaimProblem | undefined {
  if (claims.iss !== expected.issuer) return 'issuer_mismatch';
  const aud = claims.aud;
  const audiences = typeof aud === 'string' ? [aud] : Array.isArray(aud) && aud.every((entry) => typeof entry === 'string') ? (aud as string[]) : [];
  if (!audiences.includes(expected.clientId)) return 'audience_mismatch';
  // With several audiences the authorized party must be us; an azp naming another client is never ours.
  if (claims.azp !== undefined && claims.azp !== expected.clientId) return 'azp_mismatch';
  if (audiences.length > 1 && claims.azp !== expected.clientId) return 'azp_mismatch';
  if (typeof claims.sub !== 'string' || claims.sub === '') return 'no_subject';
  const at = Math.floor(observedAt.getTime() / 1000);
  const exp = numeric(claims.exp);
  if (exp === undefined) return 'no_expiry';
  if (exp + toleranceSeconds < at) return 'expired';
  const nbf = numeric(claims.nbf);
  if (nbf !== undefined && nbf - toleranceSeconds > at) return 'not_yet_valid';
  const iat = numeric(claims.iat);
  if (iat !== undefined && iat - toleranceSeconds > at) return 'issued_in_future';
  return undefined;
}

/**
 * OIDC Core 3.3.2.11: when the id_token carries `at_hash`, it binds the access token sent with it
 * (the left half of the hash its `alg` names, base64url). Without it, a verified id_token could
 * vouch for any access and refresh token put beside it in a forged response. No `at_hash`: true.
 */
export function accessTokenMatchesAtHash(claims: Record<string, unknown>, alg: string | undefined, accessToken: string | undefined): boolean {
  const atHash = claims.at_hash;
  if (atHash === undefined) return true;
  if (typeof atHash !== 'string' || !accessToken || !alg) return false;
  const bits = /(\d{3})$/.exec(alg)?.[1];
  const hash = bits === '384' ? 'sha384' : bits === '512' ? 'sha512' : alg === 'EdDSA' || alg === 'Ed25519' ? 'sha512' : 'sha256';
  const digest = createHash(hash).update(accessToken, 'ascii').digest();
  return digest.subarray(0, digest.length / 2).toString('base64url') === atHash;
}
