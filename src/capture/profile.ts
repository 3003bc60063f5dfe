// Reading an IdP's profile (userinfo) response: which user the access token in the request
// belongs to. This names the user of token responses that carry no id_token (GitHub, Facebook).
import { randomUUID } from 'node:crypto';
import { decodeBody } from './body.js';
import { checkField, type BoundsRefusal } from './bounds.js';
import { INCOMPLETE_DETAIL } from './capture.js';
import { parseFields } from './token-response.js';
import type { Capture, ObservedResponse } from './types.js';

/** Where IdPs put the user id when no path is configured: OIDC `sub`, then `id`, then `user_id`. */
export const DEFAULT_SUBJECT_FIELDS = ['sub', 'id', 'user_id'];

function atPath(fields: Record<string, unknown>, path: string): unknown {
  let value: unknown = fields;
  for (const part of path.split('.')) {
    if (value === null || typeof value !== 'object' || !Object.hasOwn(value, part)) return undefined;
    value = (value as Record<string, unknown>)[part];
  }
  return value;
}

function identifier(value: unknown): string | undefined {
  // Length is judged by the bounds (bounds.ts), after the id is found.
  if (typeof value === 'string' && value.length > 0) return value;
  // GitHub and Facebook ids are numbers; keep them exactly as digits.
  if (typeof value === 'number' && Number.isSafeInteger(value)) return String(value);
  return undefined;
}

export function subjectOf(fields: Record<string, unknown>, subjectField: string | undefined): string | undefined {
  const paths = subjectField ? [subjectField] : DEFAULT_SUBJECT_FIELDS;
  for (const path of paths) {
    const subject = identifier(atPath(fields, path));
    if (subject) return subject;
  }
  return undefined;
}

export type ProfileReading = { kind: 'capture'; capture: Capture } | { kind: 'skipped'; reason: string };

export function profileCaptureFrom(
  observed: ObservedResponse & { idp: string },
  options: { maxDecodedBytes: number; newCaptureId?: () => string },
): ProfileReading {
  if (!observed.bearerToken) return { kind: 'skipped', reason: 'profile request carried no bearer token' };
  if (observed.status === undefined || observed.status < 200 || observed.status > 299) {
    return { kind: 'skipped', reason: `profile response status ${observed.status ?? 'unknown'}` };
  }
  const capture = (fields: Pick<Capture, 'outcome' | 'subject' | 'email' | 'detail' | 'profile'>): ProfileReading => ({
    kind: 'capture',
    capture: {
      captureId: (options.newCaptureId ?? randomUUID)(),
      idp: observed.idp,
      observedAt: new Date(observed.startedAt),
      httpStatus: observed.status,
      issuer: undefined,
      clientId: undefined,
      tokens: undefined,
      errorCode: undefined,
      ...fields,
    },
  });
  const refused = (refusal: BoundsRefusal | { outcome: 'incomplete'; detail: string }) =>
    capture({ ...refusal, subject: undefined, email: undefined, profile: undefined });
  // A profile cut short could still parse and name the wrong user (id=12345 cut to id=123).
  if (!observed.complete) return refused({ outcome: 'incomplete', detail: INCOMPLETE_DETAIL });
  if (observed.bodyTruncated) return { kind: 'skipped', reason: 'profile body exceeds the collection limit' };
  const decoded = decodeBody(observed.body, observed.headers.get('content-encoding'), options.maxDecodedBytes);
  if (decoded.kind !== 'decoded') return { kind: 'skipped', reason: decoded.detail };
  const parsed = parseFields(decoded.bytes);
  if ('detail' in parsed) return { kind: 'skipped', reason: `profile ${parsed.detail}` };
  const subject = subjectOf(parsed.fields, observed.subjectField);
  if (!subject) return { kind: 'skipped', reason: `profile has no user id at ${observed.subjectField ?? DEFAULT_SUBJECT_FIELDS.join(' / ')}` };
  const email = identifier(parsed.fields.email);
  const overBound = checkField('subject', subject, 'profile ') ?? checkField('email', email, 'profile ');
  if (overBound) return refused(overBound);
  return capture({ outcome: 'profile', subject, email, detail: undefined, profile: { accessToken: observed.bearerToken, subject, email } });
}
