// From an observed upstream response to a Capture: decode, read, name the user.
import { randomUUID } from 'node:crypto';
import { decodeBody } from './body.js';
import { clientIdOf, stringClaim } from './jwt.js';
import { readTokenResponse } from './token-response.js';
import type { Capture, ObservedResponse } from './types.js';

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
  if (observed.bodyTruncated) return { ...base, outcome: 'too_large', detail: 'body exceeds the collection limit' };

  const decoded = decodeBody(observed.body, observed.headers.get('content-encoding'), options.maxDecodedBytes);
  if (decoded.kind === 'too_large') return { ...base, outcome: 'too_large', detail: decoded.detail };
  if (decoded.kind === 'undecodable') return { ...base, outcome: 'unparseable', detail: decoded.detail };

  const response = readTokenResponse(observed.status, decoded.bytes);
  if (response.kind === 'unparseable') return { ...base, outcome: 'unparseable', detail: response.detail };
  if (response.kind === 'idp_error') return { ...base, outcome: 'idp_error', errorCode: response.errorCode };

  const { tokens } = response;
  const subject = stringClaim(tokens.claims, 'sub');
  return {
    ...base,
    outcome: subject ? 'stored' : 'no_subject',
    subject,
    issuer: stringClaim(tokens.claims, 'iss'),
    clientId: clientIdOf(tokens.claims),
    email: stringClaim(tokens.claims, 'email'),
    tokens,
    detail: subject ? undefined : tokens.idToken ? 'id_token has no readable sub claim' : 'response has no id_token to name the user',
  };
}
