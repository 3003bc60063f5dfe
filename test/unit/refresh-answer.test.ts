// What of an IdP's refresh answer is stored (src/operations/refresh-answer.ts): the IdP has rotated the
// refresh token already, so a field over its bound is dropped (the grant keeps its own) and only a
// token over its bound sets the whole answer aside; nothing is ever thrown away, no value is named.
import { expect } from 'chai';
import { FIELD_BOUNDS, MAX_JSON_NESTING } from '../../src/capture/bounds.js';
import type { TokenSet } from '../../src/capture/types.js';
import { readRefreshAnswer, type RefreshAnswerInput } from '../../src/operations/refresh-answer.js';
import { fakeJwt } from '../support/jwt.js';

const CLAIMS = { iss: 'https://idp.example', sub: 'user-1', aud: 'okta', email: 'u@example.test', email_verified: true, exp: 4102444800 };

function answer(tokens: Partial<TokenSet> = {}): RefreshAnswerInput {
  const claims = 'claims' in tokens ? tokens.claims : CLAIMS;
  return {
    captureId: '00000000-0000-4000-8000-000000000001',
    idp: 'acme',
    subject: 'user-1',
    requestedAt: new Date(Date.UTC(2026, 0, 1)),
    tokens: {
      accessToken: 'at-2',
      refreshToken: 'rt-2',
      idToken: fakeJwt(claims ?? {}),
      tokenType: 'Bearer',
      expiresIn: 300,
      refreshExpiresIn: undefined,
      scope: ['openid', 'email'],
      extras: { team: 'red' },
      claims,
      ...tokens,
    },
    stored: { tokenType: 'bearer-stored', extras: { team: 'blue' }, verified: true },
  };
}

describe('refresh answers held to the bounds (src/operations/refresh-answer.ts)', () => {
  it('an answer within every bound is stored as it came', () => {
    const read = readRefreshAnswer(answer());
    expect(read.kind).to.equal('store');
    expect(read.refused).to.deep.equal([]);
    expect(read.capture).to.include({
      subject: 'user-1',
      email: 'u@example.test',
      issuer: 'https://idp.example',
      verified: true,
      obtainedByRefresh: true,
      outcome: 'stored',
    });
    expect(read.capture.tokens).to.include({ accessToken: 'at-2', refreshToken: 'rt-2', tokenType: 'Bearer' });
  });

  const dropped: Array<[string, Partial<TokenSet>, string, (tokens: TokenSet) => unknown, unknown]> = [
    [
      'an email over 320 bytes (and the id_token it is read from)',
      { claims: { ...CLAIMS, email: `${'e'.repeat(400)}@x.test` } },
      'email over 320 bytes',
      (t) => t.idToken,
      undefined,
    ],
    ['an email with a NUL', { claims: { ...CLAIMS, email: 'u\u0000@example.test' } }, 'email holds a NUL', (t) => t.idToken, undefined],
    [
      'an issuer over its bound',
      { claims: { ...CLAIMS, iss: `https://${'i'.repeat(FIELD_BOUNDS.issuer)}` } },
      'issuer over 2,048 bytes',
      (t) => t.refreshToken,
      'rt-2',
    ],
    [
      'id_token claims nested too deep',
      { claims: { ...CLAIMS, deep: JSON.parse(`${'['.repeat(MAX_JSON_NESTING + 2)}${']'.repeat(MAX_JSON_NESTING + 2)}`) } },
      `nested deeper than ${MAX_JSON_NESTING}`,
      (t) => t.claims,
      undefined,
    ],
    ['an id_token over its bound', { idToken: `x.${'y'.repeat(FIELD_BOUNDS.idToken)}.z` }, 'id_token over 65,536 bytes', (t) => t.idToken, undefined],
    ['a scope over its bound', { scope: ['s'.repeat(FIELD_BOUNDS.scopeEach + 1)] }, 'scope over 1,024 bytes', (t) => t.scope, []],
    [
      'a token_type over its bound (the stored one stays)',
      { tokenType: 't'.repeat(FIELD_BOUNDS.tokenType + 1) },
      'token_type over 128 bytes',
      (t) => t.tokenType,
      'bearer-stored',
    ],
    [
      'other response fields over their bound (the stored ones stay)',
      { extras: { blob: 'b'.repeat(FIELD_BOUNDS.extras) } },
      'other response fields over 65,536 bytes',
      (t) => t.extras,
      { team: 'blue' },
    ],
  ];
  for (const [what, tokens, detail, pick, kept] of dropped) {
    it(`${what}: dropped, named with its bound, and the rotated tokens stored`, () => {
      const read = readRefreshAnswer(answer(tokens));
      expect(read.kind).to.equal('store');
      expect(read.refused.map((entry) => entry.detail).join('; ')).to.contain(detail);
      expect(pick(read.capture.tokens!)).to.deep.equal(kept);
      expect(read.capture.tokens).to.include({ accessToken: 'at-2', refreshToken: 'rt-2' });
      expect(JSON.stringify(read.refused)).to.not.match(/eeee|iiii|yyyy|ssss|tttt|bbbb/);
    });
  }

  it('the email dropped leaves the stored email (undefined in the capture: the store keeps its own) and the id_token out', () => {
    const read = readRefreshAnswer(answer({ claims: { ...CLAIMS, email: `${'e'.repeat(400)}@x.test` } }));
    expect(read.capture.email).to.equal(undefined);
    expect(read.capture.tokens).to.include({ idToken: undefined, claims: undefined });
    expect(read.refused.map((entry) => entry.field)).to.deep.equal(['email', 'id_token']);
  });

  for (const field of ['accessToken', 'refreshToken'] as const) {
    it(`a ${field} over its bound sets the whole answer aside, tokens as sent, other fields still held to theirs`, () => {
      const read = readRefreshAnswer(answer({ [field]: 'x'.repeat(FIELD_BOUNDS[field] + 1), claims: { ...CLAIMS, email: `${'e'.repeat(400)}@x.test` } }));
      expect(read.kind).to.equal('set_aside');
      expect(read.refused[0]!.field).to.equal(field === 'accessToken' ? 'access_token' : 'refresh_token');
      expect(read.refused[0]!.detail).to.equal(`${field === 'accessToken' ? 'access_token' : 'refresh_token'} over 65,536 bytes`);
      expect(read.capture.tokens![field]).to.have.length(FIELD_BOUNDS[field] + 1);
      expect(read.capture.email).to.equal(undefined);
    });
  }
});
