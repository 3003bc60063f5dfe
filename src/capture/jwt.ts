// id_token claims are decoded, not verified: the token came straight from the IdP's token
// endpoint over TLS, which OIDC Core 3.1.3.7 accepts in place of a signature check.
import { decodeJwt } from 'jose/jwt/decode';

export type IdTokenClaims = Record<string, unknown>;

export function decodeIdTokenClaims(idToken: string): IdTokenClaims | undefined {
  try {
    return decodeJwt(idToken) as IdTokenClaims;
  } catch {
    return undefined;
  }
}

export function stringClaim(claims: IdTokenClaims | undefined, name: string): string | undefined {
  const value = claims?.[name];
  if (typeof value === 'string' && value.length > 0) return value;
  if (typeof value === 'number' && Number.isFinite(value)) return String(value);
  return undefined;
}

/** `aud` may be a string or an array; with `azp` the authorized party is the client. */
export function clientIdOf(claims: IdTokenClaims | undefined): string | undefined {
  const azp = stringClaim(claims, 'azp');
  if (azp) return azp;
  const aud = claims?.aud;
  if (typeof aud === 'string') return aud;
  if (Array.isArray(aud) && typeof aud[0] === 'string') return aud[0];
  return undefined;
}

/**
 * The address an id_token vouches for: its `email`, lower-cased, when `email_verified` is exactly
 * true (an absent one counts as not verified); undefined otherwise. The Okta hook matches users by
 * email only on grants whose stored id_token vouches for that address.
 */
export function vouchedEmail(claims: IdTokenClaims | null | undefined): string | undefined {
  const email = claims?.email;
  return claims?.email_verified === true && typeof email === 'string' && email !== '' ? email.toLowerCase() : undefined;
}
