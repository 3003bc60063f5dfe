// What of an IdP's refresh answer is stored. By the time it is read the IdP has rotated the refresh
// token, so the answer is the only copy of its successor: unlike a login seen on the wire (refused
// whole when a field is over its bound, capture/bounds.ts), it is never thrown away.
//  - A field besides the tokens that is over its bound or cannot be stored as text (email, issuer,
//    scope, token_type, the other response fields) is dropped: the grant keeps its stored value; a
//    lifetime over its bound (expires_in, refresh_token_expires_in) is dropped: no expiry from it.
//    So is an id_token over its bound, with claims nested too deep or a time claim out of range
//    (exp, iat, nbf more than 100 years away), or whose email is dropped (the
//    vault reads the address it vouches for out of it): the stored id_token stays.
//  - An access or refresh token over its bound (or not storable) cannot be stored as the grant's:
//    the whole answer is set aside (the caller quarantines it, sealed, for an operator).
// Pure: no I/O; what was dropped is returned for the caller to log and count (field names only).
import {
  checkField,
  checkLifetime,
  checkTimeClaims,
  FIELD_BOUNDS,
  formatBytes,
  nestingExceeds,
  MAX_JSON_NESTING,
  type BoundedField,
} from '../capture/bounds.js';
import { stringClaim } from '../capture/jwt.js';
import type { Capture, TokenSet } from '../capture/types.js';

/** Metric label and log field of a refused field: wire names, a small fixed set. */
export type RefreshAnswerField =
  | 'access_token'
  | 'refresh_token'
  | 'id_token'
  | 'email'
  | 'issuer'
  | 'scope'
  | 'token_type'
  | 'extras'
  | 'expires_in'
  | 'refresh_token_expires_in';

export interface RefusedField {
  field: RefreshAnswerField;
  /** The field and its bound, never the value ("email over 320 bytes"). */
  detail: string;
}

export interface RefreshAnswer {
  /** Stored (kind 'store'), or sealed into the quarantine (kind 'set_aside'). */
  kind: 'store' | 'set_aside';
  capture: Capture;
  /** Fields left out of `capture` (the grant keeps its own); for 'set_aside', the token first. */
  refused: RefusedField[];
}

export interface RefreshAnswerInput {
  captureId: string;
  idp: string;
  subject: string;
  /** When the refresh request was sent: the answer's capture time. */
  requestedAt: Date;
  tokens: TokenSet;
  /** The stored grant's token_type and extras, kept when the answer's are dropped. */
  stored: { tokenType: string | null; extras: Record<string, unknown>; verified: boolean };
}

function refusal(field: RefreshAnswerField, bounded: BoundedField, value: string | undefined): RefusedField | undefined {
  const refused = checkField(bounded, value);
  return refused ? { field, detail: refused.detail } : undefined;
}

function lifetimeRefusal(field: 'expires_in' | 'refresh_token_expires_in', seconds: number | undefined): RefusedField | undefined {
  const refused = checkLifetime(field, seconds);
  return refused ? { field, detail: refused.detail } : undefined;
}

function timeClaimsRefusal(claims: Record<string, unknown> | undefined, at: Date): RefusedField | undefined {
  const refused = checkTimeClaims(claims, at);
  return refused ? { field: 'id_token', detail: refused.detail } : undefined;
}

export function readRefreshAnswer(input: RefreshAnswerInput): RefreshAnswer {
  const { tokens } = input;
  const refused: RefusedField[] = [];
  const note = (entry: RefusedField | undefined): boolean => (entry ? (refused.push(entry), true) : false);

  const tokenRefusals = [refusal('access_token', 'accessToken', tokens.accessToken), refusal('refresh_token', 'refreshToken', tokens.refreshToken)].filter(
    (entry) => entry !== undefined,
  );

  let idToken = tokens.idToken;
  let claims = tokens.claims;
  let email: string | undefined;
  let issuer: string | undefined;
  if (idToken !== undefined) {
    const unusable =
      refusal('id_token', 'idToken', idToken) ??
      (claims === undefined ? { field: 'id_token' as const, detail: 'id_token whose claims cannot be read' } : undefined) ??
      (claims && nestingExceeds(claims)
        ? { field: 'id_token' as const, detail: `id_token claims nested deeper than ${MAX_JSON_NESTING} levels` }
        : undefined) ??
      timeClaimsRefusal(claims, input.requestedAt);
    email = stringClaim(claims, 'email');
    issuer = stringClaim(claims, 'iss');
    const emailRefused = unusable ? undefined : refusal('email', 'email', email);
    if (note(unusable) || note(emailRefused)) {
      // The address the id_token vouches for is read out of it when it is stored.
      if (emailRefused) refused.push({ field: 'id_token', detail: `id_token whose ${emailRefused.detail}` });
      idToken = undefined;
      claims = undefined;
      email = undefined;
      issuer = undefined;
    }
    if (note(refusal('issuer', 'issuer', issuer))) issuer = undefined;
  }

  // A lifetime past its bound (10 years) is no lifetime: the grant gets no expiry from it.
  let expiresIn = tokens.expiresIn;
  if (note(lifetimeRefusal('expires_in', expiresIn))) expiresIn = undefined;
  let refreshExpiresIn = tokens.refreshExpiresIn;
  if (note(lifetimeRefusal('refresh_token_expires_in', refreshExpiresIn))) refreshExpiresIn = undefined;

  let scope = tokens.scope;
  const scopeRefused =
    refusal('scope', 'scope', scope.join(' ')) ?? scope.map((each) => refusal('scope', 'scopeEach', each)).find((entry) => entry !== undefined);
  if (note(scopeRefused)) scope = [];

  let tokenType = tokens.tokenType;
  if (note(refusal('token_type', 'tokenType', tokenType))) tokenType = input.stored.tokenType ?? undefined;

  let extras = tokens.extras;
  if (Buffer.byteLength(JSON.stringify(extras), 'utf8') > FIELD_BOUNDS.extras) {
    refused.push({ field: 'extras', detail: `the other response fields over ${formatBytes(FIELD_BOUNDS.extras)} bytes` });
    extras = input.stored.extras;
  }

  const capture: Capture = {
    captureId: input.captureId,
    idp: input.idp,
    observedAt: input.requestedAt,
    httpStatus: 200,
    outcome: 'stored',
    subject: input.subject,
    issuer,
    clientId: undefined,
    email,
    tokens: { ...tokens, idToken, claims, scope, tokenType, extras, expiresIn, refreshExpiresIn },
    errorCode: undefined,
    detail: undefined,
    // The sidecar called the IdP's configured token endpoint itself, over TLS: the answer is
    // as trustworthy as the grant it refreshes (OIDC Core 3.1.3.7), no more.
    verified: input.stored.verified,
    obtainedByRefresh: true,
  };
  if (tokenRefusals.length > 0) return { kind: 'set_aside', capture, refused: [...tokenRefusals, ...refused] };
  return { kind: 'store', capture, refused };
}
