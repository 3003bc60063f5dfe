// How a capture is written into the spool: JSON whose Dates come back as Dates, wherever they are.
import { expect } from 'chai';
import type { Capture } from '../../src/capture/types.js';
import { decodeCapture, encodeCapture } from '../../src/ingest/spool-codec.js';

function capture(extra: Record<string, unknown> = {}): Capture {
  return {
    captureId: '0b0e7f0e-8f6c-4a47-9d52-111111111111',
    idp: 'entra',
    observedAt: new Date('2025-01-02T03:04:05.678Z'),
    httpStatus: 200,
    outcome: 'stored',
    subject: 'alice',
    issuer: 'https://idp.example',
    clientId: 'okta',
    email: undefined,
    tokens: {
      accessToken: 'at',
      refreshToken: undefined,
      idToken: 'id',
      tokenType: 'Bearer',
      expiresIn: 3600,
      refreshExpiresIn: undefined,
      scope: ['openid', 'email'],
      extras: { ext_expires_in: 3600, nested: { list: [1, { deep: true }] } },
      claims: { sub: 'alice', exp: 4102444800 },
    },
    errorCode: undefined,
    detail: undefined,
    ...extra,
  } as Capture;
}

describe('spool record encoding', () => {
  it('round-trips a capture, observedAt as a Date, undefined fields left out', () => {
    const original = capture();
    const decoded = decodeCapture(encodeCapture(original));
    expect(decoded.observedAt).to.be.instanceOf(Date);
    expect(decoded.observedAt.toISOString()).to.equal('2025-01-02T03:04:05.678Z');
    expect(JSON.parse(JSON.stringify(decoded))).to.deep.equal(JSON.parse(JSON.stringify(original)));
    expect('email' in decoded).to.equal(false);
  });

  it('brings back a Date in a field it does not know of, nested or in an array', () => {
    const decoded = decodeCapture(encodeCapture(capture({ linkedAt: new Date(0), history: [{ at: new Date(1000) }] }))) as unknown as Record<string, any>;
    expect(decoded.linkedAt).to.be.instanceOf(Date);
    expect(decoded.linkedAt.getTime()).to.equal(0);
    expect(decoded.history[0].at).to.be.instanceOf(Date);
    expect(decoded.history[0].at.getTime()).to.equal(1000);
  });

  it('leaves a string that looks like a date a string (an IdP field is not a Date)', () => {
    const original = capture();
    original.tokens!.extras.issued_at = '2025-01-02T03:04:05.678Z';
    const decoded = decodeCapture(encodeCapture(original));
    expect(decoded.tokens!.extras.issued_at).to.equal('2025-01-02T03:04:05.678Z');
  });

  it('refuses a record of another version', () => {
    expect(() => decodeCapture('{"v":2,"dates":[],"capture":{}}')).to.throw(/not a version 1 spool record/);
  });
});
