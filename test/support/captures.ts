// Synthetic captures for tests that write logins straight into the store: what captureFrom makes of
// a token response, with fresh random tokens. Tests override what they look at.
import { randomUUID } from 'node:crypto';
import type { Capture, TokenSet } from '../../src/capture/types.js';

export function syntheticTokens(overrides: Partial<TokenSet> = {}): TokenSet {
  return {
    accessToken: `at-${randomUUID()}`,
    refreshToken: `rt-${randomUUID()}`,
    idToken: undefined,
    tokenType: 'Bearer',
    expiresIn: 3600,
    refreshExpiresIn: undefined,
    scope: [],
    extras: {},
    claims: undefined,
    ...overrides,
  };
}

/** A login of `subject` at `idp` (`stored`), or a response naming no user (`no_subject`) when subject is undefined. */
export function syntheticCapture(idp: string, subject: string | undefined, overrides: Partial<Capture> = {}): Capture {
  return {
    captureId: randomUUID(),
    idp,
    observedAt: new Date(),
    httpStatus: 200,
    outcome: subject ? 'stored' : 'no_subject',
    subject,
    issuer: `https://${idp}.example`,
    clientId: 'okta',
    email: undefined,
    tokens: syntheticTokens(),
    errorCode: undefined,
    detail: undefined,
    ...overrides,
  };
}
