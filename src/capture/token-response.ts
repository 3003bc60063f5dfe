// Reading an OAuth 2.0 token response (RFC 6749 5.1 / 5.2) and the ways real IdPs bend it.
// Pure: bytes in, a classification out; never throws.
import { MAX_JSON_NESTING, nestingExceeds } from './bounds.js';
import { decodeIdTokenClaims } from './jwt.js';
import type { TokenSet } from './types.js';

export type TokenResponse = { kind: 'tokens'; tokens: TokenSet } | { kind: 'idp_error'; errorCode: string } | { kind: 'unparseable'; detail: string };

type Fields = Record<string, unknown>;

const KNOWN_FIELDS = new Set(['access_token', 'refresh_token', 'id_token', 'token_type', 'expires_in', 'refresh_token_expires_in', 'scope']);

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false });

/** Sniffs the format from the bytes, not from content-type: JSON object or form encoding. */
export function parseFields(body: Buffer): { fields: Fields } | { detail: string } {
  let text: string;
  try {
    text = utf8.decode(body);
  } catch {
    return { detail: 'body is not valid UTF-8' };
  }
  const trimmed = text.trim();
  if (trimmed.length === 0) return { detail: 'empty body' };
  if (trimmed.startsWith('{')) {
    try {
      const parsed: unknown = JSON.parse(trimmed);
      if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) return { detail: 'JSON body is not an object' };
      // Deep nesting would later overflow the stack of JSON.stringify when the extras are stored.
      if (nestingExceeds(parsed, MAX_JSON_NESTING)) return { detail: `JSON body nested deeper than ${MAX_JSON_NESTING} levels` };
      return { fields: parsed as Fields };
    } catch (error) {
      return { detail: error instanceof RangeError ? 'JSON body nested too deeply' : 'body is not valid JSON' };
    }
  }
  if (/^[A-Za-z0-9_.~%+-]+=/.test(trimmed)) {
    // Object.fromEntries defines own properties, so a "__proto__" key cannot reach a prototype.
    return { fields: Object.fromEntries(new URLSearchParams(trimmed)) };
  }
  return { detail: 'body is neither JSON nor form-encoded' };
}

function nonEmptyString(value: unknown): string | undefined {
  return typeof value === 'string' && value.length > 0 ? value : undefined;
}

/** `expires_in` arrives as a number, a numeric string, or not at all. */
export function parseSeconds(value: unknown): number | undefined {
  if (typeof value === 'number') return Number.isFinite(value) && value >= 0 ? Math.floor(value) : undefined;
  if (typeof value === 'string' && /^\s*\d{1,12}\s*$/.test(value)) return Number.parseInt(value, 10);
  return undefined;
}

/** Scopes are space-delimited by the RFC; some IdPs use commas, some send an array. */
export function parseScope(value: unknown): string[] {
  const parts = Array.isArray(value) ? value.filter((part): part is string => typeof part === 'string') : typeof value === 'string' ? [value] : [];
  return parts.flatMap((part) => part.split(/[\s,]+/)).filter((scope) => scope.length > 0);
}

/** The error code of an error body, or undefined when the body is not an error. */
function errorCodeOf(fields: Fields, status: number | undefined): string | undefined {
  const error = fields.error;
  if (typeof error === 'string' && error.length > 0) return error;
  if (error !== null && typeof error === 'object') {
    // Facebook and others nest the error: { error: { type, code, message } }.
    const nested = error as Fields;
    const code = nonEmptyString(nested.type) ?? nonEmptyString(nested.code) ?? (typeof nested.code === 'number' ? String(nested.code) : undefined);
    return code ?? 'error';
  }
  if (fields.ok === false) return 'ok_false';
  if (Array.isArray(fields.error_codes) && fields.error_codes.length > 0) return `error_codes:${String(fields.error_codes[0])}`;
  if (status !== undefined && status >= 400) return `http_${status}`;
  return undefined;
}

export function readTokenResponse(status: number | undefined, body: Buffer): TokenResponse {
  const parsed = parseFields(body);
  if ('detail' in parsed) {
    if (status !== undefined && status >= 400) return { kind: 'idp_error', errorCode: `http_${status}` };
    return { kind: 'unparseable', detail: parsed.detail };
  }
  const { fields } = parsed;
  const errorCode = errorCodeOf(fields, status);
  if (errorCode !== undefined) return { kind: 'idp_error', errorCode };

  const tokenFields = withNestedUserToken(fields);
  const accessToken = nonEmptyString(tokenFields.access_token);
  if (!accessToken) return { kind: 'unparseable', detail: 'no access_token in a success response' };
  return { kind: 'tokens', tokens: tokenSetOf(tokenFields, accessToken) };
}

/**
 * Slack's oauth.v2.access puts the user's token in `authed_user` when only user scopes were
 * granted; the top level then carries no access_token. Reads the nested token as the grant.
 */
function withNestedUserToken(fields: Fields): Fields {
  if (nonEmptyString(fields.access_token)) return fields;
  const nested = fields.authed_user;
  if (nested === null || typeof nested !== 'object' || Array.isArray(nested)) return fields;
  const user = nested as Fields;
  if (!nonEmptyString(user.access_token)) return fields;
  const { authed_user: _lifted, ...rest } = fields;
  return { ...rest, ...user };
}

function tokenSetOf(fields: Fields, accessToken: string): TokenSet {
  const idToken = nonEmptyString(fields.id_token);
  return {
    accessToken,
    refreshToken: nonEmptyString(fields.refresh_token),
    idToken,
    tokenType: nonEmptyString(fields.token_type),
    expiresIn: parseSeconds(fields.expires_in),
    refreshExpiresIn: parseSeconds(fields.refresh_token_expires_in),
    scope: parseScope(fields.scope),
    extras: Object.fromEntries(Object.entries(fields).filter(([name]) => !KNOWN_FIELDS.has(name))),
    claims: idToken ? decodeIdTokenClaims(idToken) : undefined,
  };
}
