// From an observed upstream response to a Capture: decode, read, name the user, and hold what
// would reach Postgres to its bounds (bounds.ts).
import { randomUUID } from 'node:crypto';
import { decodeBody } from './body.js';
import { checkField, checkTokenResponse } from './bounds.js';
import { clientIdOf, stringClaim } from './jwt.js';
import { readTokenResponse } from './token-response.js';
import type { Capture, ObservedResponse } from './types.js';

export const INCOMPLETE_DETAIL = 'the stream ended before the whole response arrived';

export interface CaptureOptions {
  maxDecodedBytes: number;
  newCaptureId?: () => string;
}

export function captureFrom(observed: ObservedResponse & { idp: string }, options: CaptureOptions): Capture {
  const base: Capture = {
    captureId: (options.newCaptureId ?? randomUUID)(),
    idp: observed.idp,
    observedAt: new Date(observed.startedAt),
    httpStatus: observed.status,
    outcome: 'unparseable',
    subject: undefined,
    issuer: undefined,
    clientId: undefined,
    email: undefined,
    tokens: undefined,
    errorCode: undefined,
    detail: undefined,
  };
  // A body cut short can still parse (a form, a JSON prefix that closes early) and would replace a
  // stored refresh token with a truncated one: recorded, never read.
  if (!observed.complete) return { ...base, outcome: 'incomplete', detail: INCOMPLETE_DETAIL };
  if (observed.bodyTruncated) return { ...base, outcome: 'too_large', detail: 'body exceeds the collection limit' };

  const decoded = decodeBody(observed.body, observed.headers.get('content-encoding'), options.maxDecodedBytes);
  if (decoded.kind === 'too_large') return { ...base, outcome: 'too_large', detail: decoded.detail };
  if (decoded.kind === 'undecodable') return { ...base, outcome: 'unparseable', detail: decoded.detail };

  const response = readTokenResponse(observed.status, decoded.bytes);
  if (response.kind === 'unparseable') return { ...base, outcome: 'unparseable', detail: response.detail };
  if (response.kind === 'idp_error') {
    const refused = checkField('errorCode', response.errorCode);
    if (refused) return { ...base, ...refused };
    return { ...base, outcome: 'idp_error', errorCode: response.errorCode };
  }

  const { tokens } = response;
  const subject = stringClaim(tokens.claims, 'sub');
  const issuer = stringClaim(tokens.claims, 'iss');
  const clientId = clientIdOf(tokens.claims);
  const email = stringClaim(tokens.claims, 'email');
  const refused = checkTokenResponse({ ...tokens, subject, issuer, clientId, email }, base.observedAt);
  // The whole response is refused; its event still names the user when the subject itself is fine.
  if (refused) return { ...base, ...refused, subject: checkField('subject', subject) ? undefined : subject };
  return {
    ...base,
    outcome: subject ? 'stored' : 'no_subject',
    subject,
    issuer,
    clientId,
    email,
    tokens,
    detail: subject ? undefined : tokens.idToken ? 'id_token has no readable sub claim' : 'response has no id_token to name the user',
  };
}
