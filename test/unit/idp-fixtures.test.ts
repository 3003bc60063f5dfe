// Every IdP fixture through the capture core: what a correct reader must pull out of each body.
import { expect } from 'chai';
import { captureFrom } from '../../src/capture/capture.js';
import { loadIdpFixtures } from '../support/fixtures.js';

const fixtures = loadIdpFixtures();

describe('capture of real IdP token responses (test/fixtures/idps)', () => {
  it('has a success and an error case for at least 15 IdPs', () => {
    expect(fixtures.length).to.be.at.least(15);
    for (const fixture of fixtures) {
      expect(
        fixture.cases.some((c) => c.expect.outcome === 'stored'),
        fixture.idp,
      ).to.equal(true);
      expect(
        fixture.cases.some((c) => c.expect.outcome === 'idp_error'),
        fixture.idp,
      ).to.equal(true);
    }
  });

  for (const fixture of fixtures) {
    describe(fixture.displayName, () => {
      for (const fixtureCase of fixture.cases) {
        it(`${fixtureCase.name}: ${fixtureCase.expect.outcome}`, () => {
          const capture = captureFrom(
            {
              idp: fixture.idp,
              routeKind: 'token',
              subjectField: undefined,
              bearerToken: undefined,
              status: fixtureCase.status,
              headers: new Map(Object.entries(fixtureCase.headers).map(([name, value]) => [name.toLowerCase(), value])),
              body: Buffer.from(fixtureCase.body, 'utf8'),
              bodyTruncated: false,
              complete: true,
              startedAt: Date.now(),
            },
            { maxDecodedBytes: 1024 * 1024 },
          );
          const expected = fixtureCase.expect;
          if (expected.outcome === 'idp_error') {
            expect(capture.outcome).to.equal('idp_error');
            expect(capture.errorCode).to.equal(expected.errorCode);
            expect(capture.tokens).to.equal(undefined);
            return;
          }
          // Without an id_token the user is named later, by the profile call: held as no_subject.
          expect(capture.outcome).to.equal(expected.subject ? 'stored' : 'no_subject');
          const tokens = capture.tokens!;
          expect(tokens.accessToken ?? null, 'access_token').to.equal(expected.accessToken);
          expect(tokens.refreshToken ?? null, 'refresh_token').to.equal(expected.refreshToken);
          expect(tokens.idToken ?? null, 'id_token').to.equal(expected.idToken);
          expect(capture.subject ?? null, 'subject').to.equal(expected.subject);
          expect(capture.email ?? null, 'email').to.equal(expected.email);
          expect(tokens.expiresIn ?? null, 'expires_in').to.equal(expected.expiresIn);
          expect(tokens.tokenType?.toLowerCase() ?? null, 'token_type').to.equal(expected.tokenType?.toLowerCase() ?? null);
          expect(tokens.scope, 'scope').to.deep.equal(expected.scope);
        });
      }
    });
  }
});

describe('the IdP table in docs/idps.md', () => {
  it('lists every IdP that has fixtures', async () => {
    const { readFileSync } = await import('node:fs');
    const idps = readFileSync(new URL('../../../docs/idps.md', import.meta.url), 'utf8');
    const rows = idps
      .split('\n')
      .filter((line) => line.startsWith('| '))
      .map((line) => line.split('|')[1]!.trim());
    for (const fixture of fixtures) expect(rows, fixture.displayName).to.include(fixture.displayName);
  });
});
