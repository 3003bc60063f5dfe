// How each outcome of a token request is answered (pure): RFC 6749 §5.2 error JSON with the
// status RFC 8693 and RFC 6749 give it, or the RFC 8693 §2.2.1 token. Every answer carries
// Cache-Control: no-store; a 401 names HTTP Basic in WWW-Authenticate.
import type { ExchangeOutcome, IssuedToken } from '../operations/exchange.js';
import type { AccessOutcome, HookOutcome } from '../store/access-events.js';

export type OAuthError =
  | 'invalid_request'
  | 'invalid_client'
  | 'invalid_grant'
  | 'unauthorized_client'
  | 'unsupported_grant_type'
  | 'invalid_target'
  | 'temporarily_unavailable'
  | 'server_error';

/** Outcomes of the front door itself, before the operation: the client could not be authenticated, or the request read. */
export type RefusedOutcome = Extract<AccessOutcome | HookOutcome, 'unauthenticated' | 'bad_request'>;

export const ERROR_OF: Record<Exclude<ExchangeOutcome, 'ok'>, OAuthError> = {
  invalid_request: 'invalid_request',
  unsupported_grant_type: 'unsupported_grant_type',
  unauthorized_client: 'unauthorized_client',
  invalid_subject_token: 'invalid_request',
  invalid_target: 'invalid_target',
  wrong_idp: 'invalid_grant',
  no_user: 'invalid_grant',
  no_grant: 'invalid_grant',
  ambiguous: 'invalid_grant',
  unverified: 'invalid_grant',
  email_unverified: 'invalid_grant',
  no_token: 'invalid_grant',
  refresh_refused: 'invalid_grant',
  unavailable: 'temporarily_unavailable',
  internal: 'server_error',
};

const STATUS_OF: Record<OAuthError, number> = {
  invalid_request: 400,
  invalid_client: 401,
  invalid_grant: 400,
  unauthorized_client: 400,
  unsupported_grant_type: 400,
  invalid_target: 400,
  temporarily_unavailable: 503,
  server_error: 500,
};

export interface HttpAnswer {
  status: number;
  headers: Record<string, string>;
  body: string;
}

const REALM = 'Basic realm="token-tap", charset="UTF-8"';

function json(status: number, value: unknown, extra: Record<string, string> = {}): HttpAnswer {
  const body = JSON.stringify(value);
  return {
    status,
    headers: {
      'content-type': 'application/json',
      'cache-control': 'no-store',
      pragma: 'no-cache',
      'content-length': String(Buffer.byteLength(body)),
      ...extra,
    },
    body,
  };
}

/** An error answer; `basic`: a 401 to a client that tried (or may use) HTTP Basic names it. */
export function errorAnswer(error: OAuthError, description: string, options: { basic?: boolean } = {}): HttpAnswer {
  const extra: Record<string, string> = error === 'invalid_client' && options.basic ? { 'www-authenticate': REALM } : {};
  if (error === 'temporarily_unavailable') extra['retry-after'] = '1';
  return json(STATUS_OF[error], { error, error_description: description }, extra);
}

export function tokenAnswer(token: IssuedToken): HttpAnswer {
  return json(200, token);
}
