// Subject tokens verified lately (src/operations/verified-tokens.ts) and the verifier that keeps
// them (src/operations/subject-token.ts): an entry is used only for the same token bytes verified
// as the same type, before its exp and within its age, and never for anything a full check refuses.
import { expect } from 'chai';
import { SubjectTokenVerifier } from '../../src/operations/subject-token.js';
import { VerifiedTokenCache } from '../../src/operations/verified-tokens.js';
import { startOktaAuthorizationServer, type OktaAuthorizationServer } from '../support/okta-authorization-server.js';

describe('verified subject tokens: the cache', () => {
  const at = 1_900_000_000_000;
  const claims = (expSeconds: number) => ({ sub: 'a@x.test', exp: expSeconds, aud: ['api://default'] });

  it('is used until the earlier of the token exp (no skew) and its age', () => {
    const cache = new VerifiedTokenCache({ maxAgeMs: 60_000 });
    cache.set('soon', claims(at / 1000 + 10), at);
    cache.set('later', claims(at / 1000 + 3600), at);
    expect(cache.get('soon', at + 9_999)?.sub).to.equal('a@x.test');
    expect(cache.get('soon', at + 10_000)).to.equal(undefined);
    expect(cache.get('later', at + 59_999)?.sub).to.equal('a@x.test');
    expect(cache.get('later', at + 60_000)).to.equal(undefined);
  });

  it('keeps no token that has expired (accepted within the skew) or has no numeric exp', () => {
    const cache = new VerifiedTokenCache();
    cache.set('expired', claims(at / 1000 - 30), at);
    cache.set('no-exp', { sub: 'a@x.test' }, at);
    cache.set('text-exp', { sub: 'a@x.test', exp: '1900000000' as unknown as number }, at);
    expect(cache.size).to.equal(0);
  });

  it('holds at most maxEntries, dropping the oldest', () => {
    const cache = new VerifiedTokenCache({ maxEntries: 2 });
    for (const key of ['a', 'b', 'c']) cache.set(key, claims(at / 1000 + 3600), at);
    expect(cache.size).to.equal(2);
    expect(cache.get('a', at)).to.equal(undefined);
    expect(cache.get('c', at)?.sub).to.equal('a@x.test');
  });

  it('hands out frozen claims, so no caller changes what the next one gets', () => {
    const cache = new VerifiedTokenCache();
    const kept = cache.set('k', claims(at / 1000 + 3600), at);
    expect(() => ((kept as { sub: string }).sub = 'b@x.test')).to.throw(TypeError);
    expect(() => (kept.aud as string[]).push('other')).to.throw(TypeError);
    expect(cache.get('k', at)?.sub).to.equal('a@x.test');
  });

  it('keys a token by its whole text and the type it was verified as', () => {
    expect(VerifiedTokenCache.keyOf('a.b.c', 'access_token')).to.not.equal(VerifiedTokenCache.keyOf('a.b.c', 'id_token'));
    expect(VerifiedTokenCache.keyOf('a.b.c', 'access_token')).to.not.equal(VerifiedTokenCache.keyOf('a.b.d', 'access_token'));
    expect(VerifiedTokenCache.keyOf('a.b.c', 'access_token')).to.not.include('a.b.c');
  });
});

describe('verified subject tokens: the verifier', () => {
  let okta: OktaAuthorizationServer;
  const user = { id: '00u1', login: 'a@x.test' };
  before(async () => {
    okta = await startOktaAuthorizationServer();
  });
  after(() => okta.close());

  const verifier = () =>
    new SubjectTokenVerifier([{ issuer: okta.issuer, audiences: [okta.audience], clientIds: [], jwksUri: undefined }], { cooldownMs: 30_000 });

  it('answers a token verified before with the same claims, and still refuses it as another type', async () => {
    const checker = verifier();
    const token = await okta.accessToken(user);
    const first = await checker.verify(token, 'access_token');
    const second = await checker.verify(token, 'access_token');
    expect(first.ok && second.ok && second.claims).to.equal(first.ok && first.claims);
    // This issuer takes no id_tokens: a full check refuses it, whatever was verified as an access token.
    expect(await checker.verify(token, 'id_token')).to.deep.include({ ok: false, kind: 'invalid' });
  });

  it('refuses a verified token with its signature altered, and a forged one with the same claims', async () => {
    const checker = verifier();
    const token = await okta.accessToken(user, { claims: { jti: 'AT.same' }, iatIn: 0 });
    expect((await checker.verify(token, 'access_token')).ok).to.equal(true);
    const [header, payload, signature] = token.split('.');
    const altered = `${header}.${payload}.${signature!.startsWith('A') ? 'B' : 'A'}${signature!.slice(1)}`;
    expect(await checker.verify(altered, 'access_token')).to.deep.include({ ok: false, kind: 'invalid' });
    const forged = await okta.forged(user, { claims: { jti: 'AT.same' } });
    expect(await checker.verify(forged, 'access_token')).to.deep.include({ ok: false, kind: 'invalid' });
  });

  it('verifies a token again once it is past its exp by the verifier clock, or past the age', async () => {
    let clock = Date.now();
    const checker = new SubjectTokenVerifier([{ issuer: okta.issuer, audiences: [okta.audience], clientIds: [], jwksUri: undefined }], {
      cooldownMs: 30_000,
      now: () => clock,
      verifiedCache: { maxAgeMs: 3_600_000 },
    });
    const token = await okta.accessToken(user, { expIn: 120 });
    const claimsOf = async () => {
      const check = await checker.verify(token, 'access_token');
      return check.ok ? check.claims : undefined;
    };
    const first = await claimsOf();
    expect(await claimsOf()).to.equal(first);
    // Past its exp by the verifier's clock: a new verification (jose, on the real clock, accepts it: a new object).
    clock += 121_000;
    const again = await claimsOf();
    expect(again).to.not.equal(first);
    expect(again).to.deep.equal(first);
  });

  it('keeps nothing with verifiedCache: false', async () => {
    const checker = new SubjectTokenVerifier([{ issuer: okta.issuer, audiences: [okta.audience], clientIds: [], jwksUri: undefined }], {
      cooldownMs: 30_000,
      verifiedCache: false,
    });
    const token = await okta.accessToken(user);
    const [first, second] = [await checker.verify(token, 'access_token'), await checker.verify(token, 'access_token')];
    expect(first.ok && second.ok && first.claims !== second.claims).to.equal(true);
  });
});
