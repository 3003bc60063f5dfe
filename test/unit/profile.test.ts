import { expect } from 'chai';
import { profileCaptureFrom, subjectOf } from '../../src/capture/profile.js';
import type { ObservedResponse } from '../../src/capture/types.js';

function observedProfile(body: string, overrides: Partial<ObservedResponse> = {}): ObservedResponse & { idp: string } {
  return {
    idp: 'github',
    routeKind: 'profile',
    subjectField: undefined,
    bearerToken: 'gho_token',
    status: 200,
    headers: new Map([['content-type', 'application/json']]),
    body: Buffer.from(body),
    bodyTruncated: false,
    complete: true,
    startedAt: 0,
    ...overrides,
  } as ObservedResponse & { idp: string };
}

describe('capture/profile', () => {
  it('finds the user id at sub, then id, then user_id, or at a configured dotted path', () => {
    expect(subjectOf({ sub: 'a', id: 1 }, undefined)).to.equal('a');
    expect(subjectOf({ id: 583231, login: 'octocat' }, undefined)).to.equal('583231');
    expect(subjectOf({ user_id: 'amzn1.account.X' }, undefined)).to.equal('amzn1.account.X');
    expect(subjectOf({ data: { id: '2244994945' } }, 'data.id')).to.equal('2244994945');
    expect(subjectOf({ id: 1 }, 'data.id')).to.equal(undefined);
    expect(subjectOf({ id: 1.5 }, undefined)).to.equal(undefined);
    expect(subjectOf({ __proto__: { id: 'inherited' } } as Record<string, unknown>, 'id')).to.equal(undefined);
  });

  it('links the bearer token of the request to the user the profile names', () => {
    const reading = profileCaptureFrom(observedProfile('{"id":583231,"email":"o@example.test"}'), { maxDecodedBytes: 1024 });
    expect(reading.kind).to.equal('capture');
    if (reading.kind !== 'capture') return;
    expect(reading.capture.outcome).to.equal('profile');
    expect(reading.capture.profile).to.deep.equal({ accessToken: 'gho_token', subject: '583231', email: 'o@example.test' });
  });

  it('skips, with a reason, profiles it cannot use', () => {
    const skip = (observed: ObservedResponse & { idp: string }) => profileCaptureFrom(observed, { maxDecodedBytes: 1024 });
    expect(skip(observedProfile('{"id":1}', { bearerToken: undefined }))).to.deep.equal({ kind: 'skipped', reason: 'profile request carried no bearer token' });
    expect(skip(observedProfile('{"message":"Bad credentials"}', { status: 401 })).kind).to.equal('skipped');
    expect(skip(observedProfile('{"login":"x"}')).kind).to.equal('skipped');
    expect(skip(observedProfile('<html>')).kind).to.equal('skipped');
  });
});
