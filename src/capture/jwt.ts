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

/** Printable ASCII, no space: the only addresses users are matched by. */
const ASCII_ADDRESS = /^[\x21-\x7E]+$/;

/**
 * An address as users are matched by it: printable ASCII only, its A-Z lower-cased without a
 * locale; undefined for anything else. toLowerCase() folds beyond ASCII (the Kelvin sign U+212A
 * becomes `k`), so a look-alike address would match another user's.
 */
export function comparableEmail(value: string): string | undefined {
  return ASCII_ADDRESS.test(value) ? value.replace(/[A-Z]/g, (letter) => String.fromCharCode(letter.charCodeAt(0) + 32)) : undefined;
}

/**
 * The address an id_token vouches for: its `email` (comparableEmail), when `email_verified` is
 * exactly true (an absent one counts as not verified); undefined otherwise. The Okta hook and the
 * token exchange match users by email only on grants whose stored id_token vouches for that address.
 */
export function vouchedEmail(claims: IdTokenClaims | null | undefined): string | undefined {
  const email = claims?.email;
  return claims?.email_verified === true && typeof email === 'string' ? comparableEmail(email) : undefined;
}
