// What a token response may put into Postgres. Every upstream IdP is a customer's, so its responses
// are hostile input: a field no real IdP comes near is refused here, before the spool, with the
// whole response (no tokens kept, no grant changed), instead of being met by Postgres, where a
// subject past the btree row limit (about 2,700 bytes) fails the write of its whole batch, again
// at every retry. Pure; the limits are exported so docs and tests use these very numbers.
import type { TokenSet } from './types.js';

/** The most UTF-8 bytes each field may have. */
export const FIELD_BOUNDS = {
  /** OIDC `sub` is at most 255 ASCII characters; indexed in grants (PK), capture_events and access_events. */
  subject: 1024,
  /** 64 (local part) + 1 + 255 (domain), RFC 5321's limits; indexed as (idp, lower(email)). */
  email: 320,
  /** A URL (OIDC `iss`). */
  issuer: 2048,
  /** id_token `azp`, or the first `aud`; may be a URL. */
  clientId: 2048,
  /** All scopes, space-separated as stored. */
  scope: 8192,
  /** One scope (Google's are URLs of ~50 bytes). */
  scopeEach: 1024,
  /** `Bearer`, `DPoP`, `N_A`. */
  tokenType: 128,
  /** Tokens are used as HTTP headers, which servers cap at 8 to 64 KiB (Envoy: 60 KiB). */
  accessToken: 65536,
  refreshToken: 65536,
  idToken: 65536,
  /** Every other field of the response, as serialised JSON. */
  extras: 65536,
  /** An OAuth `error` code (`invalid_grant`); the store keeps at most 200 characters of it anyway. */
  errorCode: 256,
} as const;

/**
 * The longest lifetime, in seconds, a token response may give. A lifetime becomes a timestamp in
 * Postgres, which refuses one JS cannot build (`expires_in: 1e300`: an invalid Date, SQLSTATE
 * 22007); real IdPs give hours to months (GitHub: a refresh token of 6 months).
 */
export const LIFETIME_BOUNDS = {
  /** `expires_in`: 10 years (3,650 days). */
  expiresIn: 315_360_000,
  /** `refresh_token_expires_in`: 10 years (3,650 days). */
  refreshExpiresIn: 315_360_000,
} as const;

/** How far an id_token's time claims may lie from the response they came in, in years and in seconds. */
export const CLAIM_TIME_RANGE_YEARS = 100;
export const CLAIM_TIME_RANGE = CLAIM_TIME_RANGE_YEARS * 365.25 * 86_400;
/** The id_token claims read as times: `exp` becomes the stored expiry; verification compares `iat` and `nbf`. */
export const TIME_CLAIMS = ['exp', 'iat', 'nbf'] as const;

/** Deepest JSON nesting read from a body or an id_token's claims: deeper would overflow JSON.stringify's stack later. */
export const MAX_JSON_NESTING = 32;

export type BoundedField = keyof typeof FIELD_BOUNDS;

/** How each field is named in a `detail`: the wire name where there is one. */
const FIELD_NAMES: Record<BoundedField, string> = {
  subject: 'subject',
  email: 'email',
  issuer: 'issuer',
  clientId: 'client_id',
  scope: 'scope',
  scopeEach: 'a single scope',
  tokenType: 'token_type',
  accessToken: 'access_token',
  refreshToken: 'refresh_token',
  idToken: 'id_token',
  extras: 'the other response fields',
  errorCode: 'error code',
};

/** Why a response was refused; the detail names the field and the bound, never the value. */
export interface BoundsRefusal {
  outcome: 'too_large' | 'unparseable';
  detail: string;
}

/** 1024 -> "1,024", without depending on the process's locale. */
export function formatCount(count: number): string {
  return String(count).replace(/\B(?=(\d{3})+(?!\d))/g, ',');
}

export const formatBytes = formatCount;

// A NUL (Postgres text cannot hold one) or a UTF-16 surrogate without its pair (UTF-8 cannot
// encode one: the driver would store U+FFFD, so two different subjects would become one).
const NOT_STORABLE = /\u0000|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** Over `bound` UTF-8 bytes. Each UTF-16 unit is 1 to 3 bytes, so most values are decided without counting. */
function overBound(value: string, bound: number): boolean {
  if (value.length > bound) return true;
  if (value.length * 3 <= bound) return false;
  return Buffer.byteLength(value, 'utf8') > bound;
}

/** The refusal for one text field, or undefined when it fits and Postgres can store it as sent. */
export function checkField(field: BoundedField, value: string | undefined, prefix = ''): BoundsRefusal | undefined {
  if (value === undefined) return undefined;
  const name = `${prefix}${FIELD_NAMES[field]}`;
  const bound = FIELD_BOUNDS[field];
  if (overBound(value, bound)) return { outcome: 'too_large', detail: `${name} over ${formatBytes(bound)} bytes` };
  if (NOT_STORABLE.test(value)) return { outcome: 'unparseable', detail: `${name} holds a NUL or an unpaired surrogate, which cannot be stored as text` };
  return undefined;
}

/** Whether any object or array in `root` sits deeper than `limit` levels. Iterative: no stack to overflow. */
export function nestingExceeds(root: unknown, limit: number = MAX_JSON_NESTING): boolean {
  const stack: Array<[unknown, number]> = [[root, 1]];
  while (stack.length > 0) {
    const [value, depth] = stack.pop()!;
    if (value === null || typeof value !== 'object') continue;
    if (depth > limit) return true;
    for (const child of Object.values(value)) stack.push([child, depth + 1]);
  }
  return false;
}

/** What of a successful token response reaches Postgres (sealed or as text): its tokens, and whom they name. */
export interface BoundedTokenResponse extends Omit<TokenSet, 'scope'> {
  subject: string | undefined;
  email: string | undefined;
  issuer: string | undefined;
  clientId: string | undefined;
  scope: readonly string[];
}

/** A lifetime in seconds (`expires_in`, `refresh_token_expires_in`) over its bound, or undefined. */
export function checkLifetime(name: 'expires_in' | 'refresh_token_expires_in', seconds: number | undefined): BoundsRefusal | undefined {
  const bound = name === 'expires_in' ? LIFETIME_BOUNDS.expiresIn : LIFETIME_BOUNDS.refreshExpiresIn;
  return seconds !== undefined && !(seconds <= bound) ? { outcome: 'too_large', detail: `${name} over ${formatCount(bound)} seconds` } : undefined;
}

/** The first id_token time claim out of range of `at` (when the response came), or undefined. */
export function checkTimeClaims(claims: Record<string, unknown> | undefined, at: Date): BoundsRefusal | undefined {
  const atSeconds = at.getTime() / 1000;
  for (const claim of TIME_CLAIMS) {
    const value = claims?.[claim];
    // Written so that a non-finite value (JSON's 1e400 reads as Infinity) is out of range too.
    if (typeof value === 'number' && !(Math.abs(value - atSeconds) <= CLAIM_TIME_RANGE))
      return { outcome: 'too_large', detail: `id_token ${claim} more than ${CLAIM_TIME_RANGE_YEARS} years from the response` };
  }
  return undefined;
}

function checkTimes(response: BoundedTokenResponse, at: Date): BoundsRefusal | undefined {
  return (
    checkLifetime('expires_in', response.expiresIn) ??
    checkLifetime('refresh_token_expires_in', response.refreshExpiresIn) ??
    checkTimeClaims(response.claims, at)
  );
}

/**
 * The first field of a successful token response over its bound or not storable; undefined when
 * all fit. `at`: when the response came, which the id_token's time claims must lie near.
 */
export function checkTokenResponse(response: BoundedTokenResponse, at: Date): BoundsRefusal | undefined {
  const fields: Array<[BoundedField, string | undefined]> = [
    ['subject', response.subject],
    ['email', response.email],
    ['issuer', response.issuer],
    ['clientId', response.clientId],
    ['tokenType', response.tokenType],
    ['accessToken', response.accessToken],
    ['refreshToken', response.refreshToken],
    ['idToken', response.idToken],
    ['scope', response.scope.join(' ')],
  ];
  for (const [field, value] of fields) {
    const refusal = checkField(field, value);
    if (refusal) return refusal;
  }
  for (const scope of response.scope) {
    const refusal = checkField('scopeEach', scope);
    if (refusal) return refusal;
  }
  // The body's nesting was checked when it was parsed (token-response.ts); the claims come from
  // the id_token, which was not.
  if (response.claims && nestingExceeds(response.claims))
    return { outcome: 'unparseable', detail: `id_token claims nested deeper than ${MAX_JSON_NESTING} levels` };
  const extrasBytes = Buffer.byteLength(JSON.stringify(response.extras), 'utf8');
  if (extrasBytes > FIELD_BOUNDS.extras) return { outcome: 'too_large', detail: `${FIELD_NAMES.extras} over ${formatBytes(FIELD_BOUNDS.extras)} bytes` };
  return checkTimes(response, at);
}
