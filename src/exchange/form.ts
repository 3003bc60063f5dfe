// Reading a token request (pure): the form body (RFC 6749 §3.2: application/x-www-form-urlencoded,
// no parameter twice), the client's credentials (§2.3.1: HTTP Basic, whose id and secret are
// form-encoded before base64, or client_id/client_secret in the body; never both), and the RFC 8693
// §2.1 parameters. A problem is said in words that quote no value.
import type { ExchangeRequest } from '../operations/exchange.js';
import { TOKEN_TYPE_URN } from '../operations/exchange.js';
import type { SubjectTokenType } from '../operations/subject-token.js';

export const TOKEN_EXCHANGE_GRANT = 'urn:ietf:params:oauth:grant-type:token-exchange';

/** Largest subject token taken; Okta's tokens are a few KiB. */
export const MAX_SUBJECT_TOKEN_LENGTH = 16 * 1024;

export interface ClientCredentials {
  method: 'basic' | 'post';
  clientId: string;
  clientSecret: string;
}

export type FormRead = { ok: true; params: ReadonlyMap<string, string> } | { ok: false; problem: string };

/** The form's parameters; a parameter given twice, or another content type, is a problem. */
export function readForm(contentType: string | undefined, body: Buffer): FormRead {
  const type = contentType?.split(';')[0]?.trim().toLowerCase();
  if (type !== 'application/x-www-form-urlencoded') return { ok: false, problem: 'the body must be application/x-www-form-urlencoded' };
  const params = new Map<string, string>();
  for (const [name, value] of new URLSearchParams(body.toString('utf8'))) {
    if (params.has(name)) return { ok: false, problem: `parameter ${safeName(name)} is given more than once` };
    params.set(name, value);
  }
  return { ok: true, params };
}

/** A parameter name fit for a message: short and printable, else a placeholder. */
function safeName(name: string): string {
  return /^[A-Za-z0-9_.-]{1,40}$/.test(name) ? name : '(a parameter)';
}

function formDecode(text: string): string | undefined {
  try {
    return decodeURIComponent(text.replaceAll('+', ' '));
  } catch {
    return undefined;
  }
}

export type CredentialsRead =
  | { ok: true; credentials: ClientCredentials }
  /** `basic`: the client tried HTTP Basic (the 401 then names that scheme in WWW-Authenticate); `malformed`: credentials sent two ways (400). */
  | { ok: false; problem: string; basic: boolean; malformed?: true };

/** The client's credentials from the Authorization header or the body (exactly one of them). */
export function readClientCredentials(authorization: string | undefined, params: ReadonlyMap<string, string>): CredentialsRead {
  const inBody = params.has('client_secret');
  if (authorization !== undefined) {
    const encoded = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(authorization)?.[1];
    if (!encoded) return { ok: false, problem: 'the Authorization header is not HTTP Basic', basic: true };
    if (inBody) return { ok: false, problem: 'client credentials both in the Authorization header and the body', basic: true, malformed: true };
    const decoded = Buffer.from(encoded, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    const clientId = colon < 0 ? undefined : formDecode(decoded.slice(0, colon));
    const clientSecret = colon < 0 ? undefined : formDecode(decoded.slice(colon + 1));
    if (!clientId || !clientSecret) return { ok: false, problem: 'the Basic credentials are not client_id:client_secret', basic: true };
    if (params.has('client_id') && params.get('client_id') !== clientId)
      return { ok: false, problem: 'client_id in the body differs from the Basic credentials', basic: true };
    return { ok: true, credentials: { method: 'basic', clientId, clientSecret } };
  }
  const clientId = params.get('client_id');
  const clientSecret = params.get('client_secret');
  if (!clientId || !clientSecret) return { ok: false, problem: 'no client credentials (HTTP Basic, or client_id and client_secret in the body)', basic: false };
  return { ok: true, credentials: { method: 'post', clientId, clientSecret } };
}

const TOKEN_TYPES = new Map<string, SubjectTokenType>(Object.entries(TOKEN_TYPE_URN).map(([type, urn]) => [urn, type as SubjectTokenType]));

export type ExchangeParamsRead =
  | { ok: true; request: Omit<ExchangeRequest, 'mayUseIdp'> }
  /** `invalid_target`: the audience is not one IdP name; `invalid_request` otherwise. */
  | { ok: false; error: 'invalid_request' | 'invalid_target'; problem: string };

/** The RFC 8693 §2.1 parameters, once grant_type is the token exchange. */
export function readExchangeParams(params: ReadonlyMap<string, string>): ExchangeParamsRead {
  const invalid = (problem: string): ExchangeParamsRead => ({ ok: false, error: 'invalid_request', problem });
  const subjectToken = params.get('subject_token');
  if (!subjectToken) return invalid('subject_token is missing');
  if (subjectToken.length > MAX_SUBJECT_TOKEN_LENGTH) return invalid(`subject_token is longer than ${MAX_SUBJECT_TOKEN_LENGTH} characters`);
  const subjectTypeUrn = params.get('subject_token_type');
  if (!subjectTypeUrn) return invalid('subject_token_type is missing');
  const subjectTokenType = TOKEN_TYPES.get(subjectTypeUrn);
  if (!subjectTokenType) return invalid(`subject_token_type must be ${TOKEN_TYPE_URN.access_token} or ${TOKEN_TYPE_URN.id_token}`);
  const requestedUrn = params.get('requested_token_type');
  const requestedTokenType = requestedUrn === undefined ? 'access_token' : TOKEN_TYPES.get(requestedUrn);
  if (!requestedTokenType) return invalid(`requested_token_type must be ${TOKEN_TYPE_URN.access_token} (the default) or ${TOKEN_TYPE_URN.id_token}`);
  if (params.has('actor_token') || params.has('actor_token_type')) return invalid('actor_token (delegation) is not supported');
  if (params.has('resource')) return { ok: false, error: 'invalid_target', problem: 'resource is not supported: name the IdP in audience' };
  const audience = params.get('audience');
  if (!audience) return invalid('audience is missing: give the token-tap IdP name (e.g. entra)');
  return { ok: true, request: { subjectToken, subjectTokenType, audience, requestedTokenType } };
}
