// The bounds on what a token response may put into Postgres (src/capture/bounds.ts): each field
// over its bound refuses the whole response, naming the field and the bound, never the value.
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { expect } from 'chai';
import {
  CLAIM_TIME_RANGE,
  CLAIM_TIME_RANGE_YEARS,
  FIELD_BOUNDS,
  LIFETIME_BOUNDS,
  MAX_JSON_NESTING,
  formatBytes,
  formatCount,
} from '../../src/capture/bounds.js';
import { captureFrom } from '../../src/capture/capture.js';
import { profileCaptureFrom } from '../../src/capture/profile.js';
import type { Capture, ObservedResponse } from '../../src/capture/types.js';
import { IDP_NAME_PATTERN } from '../../src/contract.js';
import { fakeJwt } from '../support/jwt.js';

function observed(body: string | Buffer, overrides: Partial<ObservedResponse> = {}): ObservedResponse & { idp: string } {
  return {
    idp: 'hostile',
    routeKind: 'token',
    subjectField: undefined,
    bearerToken: undefined,
    status: 200,
    headers: new Map([['content-type', 'application/json']]),
    body: Buffer.isBuffer(body) ? body : Buffer.from(body),
    bodyTruncated: false,
    complete: true,
    startedAt: OBSERVED_AT * 1000,
    ...overrides,
  };
}

const options = { maxDecodedBytes: 1024 * 1024 };
/** When the responses of this file arrived, in epoch seconds: the id_token's time claims must lie near it. */
const OBSERVED_AT = Date.parse('2026-01-01T00:00:00Z') / 1000;
const CLAIMS = { iss: 'https://idp.example', sub: 'user-1', aud: 'okta', azp: 'okta', email: 'u@example.test', exp: 4102444800 };

/** A token response with every bounded field present, `change` applied to its fields and claims. */
function response(change: { claims?: Record<string, unknown>; fields?: Record<string, unknown> } = {}): string {
  return JSON.stringify({
    access_token: 'at-1',
    refresh_token: 'rt-1',
    id_token: fakeJwt({ ...CLAIMS, ...change.claims }),
    token_type: 'Bearer',
    scope: 'openid email',
    expires_in: 3600,
    ...change.fields,
  });
}

/** ASCII of exactly `bytes` bytes; random, so a detail that echoed it would be caught. */
function text(bytes: number): string {
  let value = '';
  while (value.length < bytes) value += randomUUID().replaceAll('-', '');
  return value.slice(0, bytes);
}

function expectRefused(capture: Capture, outcome: 'too_large' | 'unparseable', detail: string, value?: string): void {
  expect(capture.outcome, capture.detail).to.equal(outcome);
  expect(capture.detail).to.equal(detail);
  expect(capture.tokens).to.equal(undefined);
  expect(capture.email).to.equal(undefined);
  expect(capture.issuer).to.equal(undefined);
  if (value) expect(capture.detail).to.not.contain(value.slice(0, 32));
}

// Each bounded field, set to a value of n bytes in an otherwise ordinary response.
const FIELDS: Array<{ field: keyof typeof FIELD_BOUNDS; name: string; body: (value: string) => string }> = [
  { field: 'subject', name: 'subject', body: (value) => response({ claims: { sub: value } }) },
  { field: 'email', name: 'email', body: (value) => response({ claims: { email: value } }) },
  { field: 'issuer', name: 'issuer', body: (value) => response({ claims: { iss: value } }) },
  { field: 'clientId', name: 'client_id', body: (value) => response({ claims: { azp: value } }) },
  { field: 'tokenType', name: 'token_type', body: (value) => response({ fields: { token_type: value } }) },
  { field: 'accessToken', name: 'access_token', body: (value) => response({ fields: { access_token: value } }) },
  { field: 'refreshToken', name: 'refresh_token', body: (value) => response({ fields: { refresh_token: value } }) },
  { field: 'scopeEach', name: 'a single scope', body: (value) => response({ fields: { scope: `openid ${value}` } }) },
];

describe('capture bounds (src/capture/bounds.ts)', () => {
  it('keeps subject and email far below the btree row limit of the indexes that hold them', () => {
    const longestIdp = 63; // IDP_NAME_PATTERN
    expect(IDP_NAME_PATTERN.test('a'.repeat(longestIdp))).to.equal(true);
    // grants (idp, subject), capture_events (idp, subject, observed_at), grants_by_email (idp, lower(email)).
    const btreeLimit = 2704;
    expect(longestIdp + FIELD_BOUNDS.subject + 8 + 64).to.be.below(btreeLimit / 2);
    // lower() may grow a character by a byte (İ, 2 bytes, lowers to 3).
    expect(longestIdp + FIELD_BOUNDS.email * 1.5 + 64).to.be.below(btreeLimit / 2);
  });

  it('are the bounds docs/security-model.md lists, and failure-behaviour.md names', () => {
    const securityModel = readFileSync(new URL('../../../docs/security-model.md', import.meta.url), 'utf8');
    const b = (field: keyof typeof FIELD_BOUNDS) => formatBytes(FIELD_BOUNDS[field]);
    expect(FIELD_BOUNDS.refreshToken).to.equal(FIELD_BOUNDS.accessToken);
    expect(FIELD_BOUNDS.idToken).to.equal(FIELD_BOUNDS.accessToken);
    const rows: Array<[string, string]> = [
      ['subject (id_token `sub`, profile user id)', b('subject')],
      ['email (id_token, profile)', b('email')],
      ['issuer', b('issuer')],
      ['client id (`azp` or first `aud`)', b('clientId')],
      ['scope, all of it / a single scope', `${b('scope')} / ${b('scopeEach')}`],
      ['token_type', b('tokenType')],
      ['access, refresh and id token, each', b('accessToken')],
      ['the other response fields, as JSON', b('extras')],
      ['IdP error code', b('errorCode')],
      ['`expires_in`, `refresh_token_expires_in`, each', `${formatCount(LIFETIME_BOUNDS.expiresIn)} seconds (10 years)`],
      ['id_token `exp`, `iat`, `nbf`', `within ${CLAIM_TIME_RANGE_YEARS} years of the response`],
    ];
    expect(LIFETIME_BOUNDS.refreshExpiresIn).to.equal(LIFETIME_BOUNDS.expiresIn);
    expect(LIFETIME_BOUNDS.expiresIn).to.equal(3650 * 86_400);
    for (const [label, bound] of rows) expect(securityModel, label).to.contain(`| ${label} | ${bound} |`);
    const failures = readFileSync(new URL('../../../docs/failure-behaviour.md', import.meta.url), 'utf8');
    expect(failures).to.contain('A field over its bound').and.to.contain('A response cut short');
  });

  for (const { field, name, body } of FIELDS) {
    const bound = FIELD_BOUNDS[field];
    it(`${name}: stored at ${formatBytes(bound)} bytes, refused whole at one byte more`, () => {
      expect(captureFrom(observed(body(text(bound))), options).outcome).to.equal('stored');
      const value = text(bound + 1);
      const capture = captureFrom(observed(body(value)), options);
      expectRefused(capture, 'too_large', `${name} over ${formatBytes(bound)} bytes`, value);
    });
  }

  // Each becomes a timestamp in Postgres: 1e300 made an invalid Date, which Postgres refused
  // (SQLSTATE 22007), so the whole batch was written again one capture at a time and the capture quarantined.
  for (const [name, bound] of [
    ['expires_in', LIFETIME_BOUNDS.expiresIn],
    ['refresh_token_expires_in', LIFETIME_BOUNDS.refreshExpiresIn],
  ] as const) {
    it(`${name}: stored at ${formatCount(bound)} seconds, refused whole above it, 1e300 and a 12-digit string included`, () => {
      const stored = captureFrom(observed(response({ fields: { [name]: bound } })), options);
      expect(stored.outcome, stored.detail).to.equal('stored');
      for (const value of [bound + 1, 1e300, Number.MAX_VALUE, '999999999999']) {
        expectRefused(captureFrom(observed(response({ fields: { [name]: value } })), options), 'too_large', `${name} over ${formatCount(bound)} seconds`);
      }
      const form = `access_token=at&id_token=${fakeJwt(CLAIMS)}&${name}=999999999999`;
      expectRefused(captureFrom(observed(form), options), 'too_large', `${name} over ${formatCount(bound)} seconds`);
    });
  }

  for (const claim of ['exp', 'iat', 'nbf']) {
    it(`id_token ${claim}: stored within ${CLAIM_TIME_RANGE_YEARS} years of the response, refused whole beyond, either way`, () => {
      const day = 86_400;
      for (const value of [OBSERVED_AT, OBSERVED_AT + CLAIM_TIME_RANGE - day, OBSERVED_AT - CLAIM_TIME_RANGE + day]) {
        const capture = captureFrom(observed(response({ claims: { [claim]: value } })), options);
        expect(capture.outcome, `${claim} ${value}: ${capture.detail}`).to.equal('stored');
      }
      const detail = `id_token ${claim} more than ${CLAIM_TIME_RANGE_YEARS} years from the response`;
      for (const value of [1e300, -1e300, 8.64e12, -8.64e12, OBSERVED_AT + CLAIM_TIME_RANGE + day, OBSERVED_AT - CLAIM_TIME_RANGE - day]) {
        expectRefused(captureFrom(observed(response({ claims: { [claim]: value } })), options), 'too_large', detail);
      }
      // JSON's 1e400 reads as Infinity.
      const payload = Buffer.from(`{"sub":"user-1","${claim}":1e400}`).toString('base64url');
      const idToken = `${fakeJwt({}).split('.')[0]}.${payload}.c2ln`;
      expectRefused(captureFrom(observed(JSON.stringify({ access_token: 'at', id_token: idToken })), options), 'too_large', detail);
    });
  }

  it('counts bytes, not characters: 342 three-byte characters are over a 1,024-byte subject', () => {
    expect(captureFrom(observed(response({ claims: { sub: '€'.repeat(341) } })), options).subject).to.equal('€'.repeat(341));
    expectRefused(captureFrom(observed(response({ claims: { sub: '€'.repeat(342) } })), options), 'too_large', 'subject over 1,024 bytes');
  });

  it('names the user in the event when only another field is over its bound', () => {
    const capture = captureFrom(observed(response({ claims: { email: text(400) } })), options);
    expectRefused(capture, 'too_large', 'email over 320 bytes');
    expect(capture.subject).to.equal('user-1');
    expect(captureFrom(observed(response({ claims: { sub: text(2000) } })), options).subject).to.equal(undefined);
  });

  it('bounds the id_token, the scopes as a whole, the other fields as JSON and a numeric client id', () => {
    const bigIdToken = response({ claims: { padding: text(FIELD_BOUNDS.idToken) } });
    expectRefused(captureFrom(observed(bigIdToken), options), 'too_large', 'id_token over 65,536 bytes');
    const manyScopes = Array.from({ length: 1000 }, (_, index) => `scope.${index}`).join(' ');
    expectRefused(captureFrom(observed(response({ fields: { scope: manyScopes } })), options), 'too_large', 'scope over 8,192 bytes');
    const scopeArray = Array.from({ length: 1000 }, (_, index) => `scope.${index}`);
    expectRefused(captureFrom(observed(response({ fields: { scope: scopeArray } })), options), 'too_large', 'scope over 8,192 bytes');
    const extras = { profile: { picture: text(FIELD_BOUNDS.extras) } };
    expectRefused(captureFrom(observed(response({ fields: extras })), options), 'too_large', 'the other response fields over 65,536 bytes');
    const aud = captureFrom(observed(response({ claims: { azp: undefined, aud: [text(3000), 'okta'] } })), options);
    expectRefused(aud, 'too_large', 'client_id over 2,048 bytes');
    expect(captureFrom(observed(response({ claims: { sub: 12345, azp: 67890 } })), options)).to.include({
      outcome: 'stored',
      subject: '12345',
      clientId: '67890',
    });
  });

  it('bounds an IdP error code, and keeps ordinary ones', () => {
    expect(captureFrom(observed('{"error":"invalid_grant"}', { status: 400 }), options)).to.include({ outcome: 'idp_error', errorCode: 'invalid_grant' });
    const code = text(300);
    const capture = captureFrom(observed(JSON.stringify({ error: code }), { status: 400 }), options);
    expectRefused(capture, 'too_large', 'error code over 256 bytes', code);
    expect(capture.errorCode).to.equal(undefined);
    const nested = captureFrom(observed(JSON.stringify({ error_codes: [[text(400)]] }), { status: 400 }), options);
    expect(nested).to.include({ outcome: 'too_large', detail: 'error code over 256 bytes' });
  });

  it('refuses, as unparseable and naming the field, text Postgres or UTF-8 cannot keep as sent: a NUL, an unpaired surrogate', () => {
    const cases: Array<[string, string]> = [
      [response({ claims: { sub: 'user\u0000-1' } }), 'subject'],
      [response({ claims: { sub: 'user-\ud800' } }), 'subject'],
      [response({ claims: { email: '\udc00u@example.test' } }), 'email'],
      [response({ claims: { iss: 'https://idp\u0000.example' } }), 'issuer'],
      [response({ claims: { azp: 'okta\ud83d' } }), 'client_id'],
      [response({ fields: { token_type: 'Bearer\u0000' } }), 'token_type'],
      [response({ fields: { access_token: 'at\u0000' } }), 'access_token'],
      [response({ fields: { refresh_token: 'rt-\udfff' } }), 'refresh_token'],
      [response({ fields: { scope: ['openid', 'em\u0000ail'] } }), 'scope'],
      ['access_token=at&refresh_token=rt%00x&token_type=Bearer', 'refresh_token'],
    ];
    for (const [body, name] of cases) {
      const capture = captureFrom(observed(body), options);
      expect(capture.outcome, `${name}: ${body.slice(0, 60)}`).to.equal('unparseable');
      expect(capture.detail).to.equal(`${name} holds a NUL or an unpaired surrogate, which cannot be stored as text`);
      expect(capture.tokens).to.equal(undefined);
    }
    const code = captureFrom(observed('{"error":"invalid\\u0000grant"}', { status: 400 }), options);
    expect(code).to.include({ outcome: 'unparseable', errorCode: undefined });
    // A well-formed pair (an emoji) is ordinary text.
    expect(captureFrom(observed(response({ claims: { sub: 'user-\ud83d\ude00' } })), options).outcome).to.equal('stored');
  });

  it('refuses id_token claims nested deeper than the body may be', () => {
    // Written as text: JSON.stringify itself runs out of stack on it.
    const payload = Buffer.from(`{"sub":"user-1","deep":${'['.repeat(5000)}${']'.repeat(5000)}}`).toString('base64url');
    const idToken = `${fakeJwt({}).split('.')[0]}.${payload}.c2ln`;
    const capture = captureFrom(observed(JSON.stringify({ access_token: 'at', id_token: idToken })), options);
    expectRefused(capture, 'unparseable', `id_token claims nested deeper than ${MAX_JSON_NESTING} levels`);
  });

  it('stores an Entra ID v2 login whose id_token and access token carry 200 groups', () => {
    const guid = () => randomUUID();
    const tid = guid();
    const groups = Array.from({ length: 200 }, guid);
    const claims = {
      aud: guid(),
      iss: `https://login.microsoftonline.com/${tid}/v2.0`,
      iat: 1_700_000_000,
      nbf: 1_700_000_000,
      exp: 4_102_444_800,
      email: 'adele.vance@contoso.onmicrosoft.com',
      groups,
      name: 'Adele Vance',
      oid: guid(),
      preferred_username: 'adele.vance@contoso.onmicrosoft.com',
      sub: 'AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ',
      tid,
      ver: '2.0',
    };
    const accessToken = fakeJwt({ ...claims, aud: '00000003-0000-0000-c000-000000000000', scp: 'openid profile email User.Read', wids: [guid()] });
    const idToken = fakeJwt(claims);
    expect(idToken.length).to.be.above(10_000);
    const body = JSON.stringify({
      token_type: 'Bearer',
      scope: 'openid profile email offline_access https://graph.microsoft.com/User.Read',
      expires_in: 4458,
      ext_expires_in: 4458,
      access_token: accessToken,
      refresh_token: `0.A${text(1400)}`,
      id_token: idToken,
    });
    const capture = captureFrom(observed(body), options);
    expect(capture.outcome, capture.detail).to.equal('stored');
    expect(capture.tokens!.idToken).to.equal(idToken);
    expect(capture.tokens!.accessToken).to.equal(accessToken);
  });

  describe('a response Envoy did not see the end of', () => {
    it('is recorded as incomplete, even when what arrived parses: no tokens, no user', () => {
      // A form body cut inside its refresh token parses into a shorter, wrong refresh token.
      const cut = observed('access_token=at-2&id_token=' + fakeJwt(CLAIMS) + '&refresh_token=rt-trunc', { complete: false });
      const capture = captureFrom(cut, options);
      expect(capture).to.include({
        outcome: 'incomplete',
        detail: 'the stream ended before the whole response arrived',
        tokens: undefined,
        subject: undefined,
      });
      expect(captureFrom({ ...cut, complete: true }, options).outcome).to.equal('stored');
      expect(captureFrom(observed('{"error":"invalid_grant"}', { status: 400, complete: false }), options).outcome).to.equal('incomplete');
    });
  });

  describe('profile responses', () => {
    const profile = (body: string, overrides: Partial<ObservedResponse> = {}) =>
      profileCaptureFrom(observed(body, { routeKind: 'profile', bearerToken: 'gho_token', ...overrides }), options);
    const captured = (reading: ReturnType<typeof profile>): Capture => {
      expect(reading.kind).to.equal('capture');
      return (reading as { capture: Capture }).capture;
    };

    it('refuse a user id or an email over its bound, as a too_large event that links nothing', () => {
      const subject = text(FIELD_BOUNDS.subject + 1);
      const overSubject = captured(profile(JSON.stringify({ id: subject })));
      expect(overSubject).to.include({ outcome: 'too_large', detail: 'profile subject over 1,024 bytes', subject: undefined, profile: undefined });
      const overEmail = captured(profile(JSON.stringify({ id: 42, email: text(FIELD_BOUNDS.email + 1) })));
      expect(overEmail).to.include({ outcome: 'too_large', detail: 'profile email over 320 bytes', subject: undefined, profile: undefined });
      const nul = captured(profile(JSON.stringify({ sub: 'octo\u0000cat' })));
      expect(nul).to.include({ outcome: 'unparseable', detail: 'profile subject holds a NUL or an unpaired surrogate, which cannot be stored as text' });
    });

    it('keep ids up to the bound, longer than the 255 characters once allowed', () => {
      const subject = text(FIELD_BOUNDS.subject);
      expect(captured(profile(JSON.stringify({ sub: subject, email: text(FIELD_BOUNDS.email) }))).profile!.subject).to.equal(subject);
    });

    it('cut short are recorded as incomplete and link nothing', () => {
      const cut = captured(profile('id=12345', { complete: false }));
      expect(cut).to.include({ outcome: 'incomplete', subject: undefined, profile: undefined });
    });
  });
});
