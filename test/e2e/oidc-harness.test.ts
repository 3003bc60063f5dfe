import { expect } from 'chai';

import { loginAsOkta, refreshAsOkta } from '../support/okta-client.js';
import type { ReceivedResponse, TokenCallError } from '../support/okta-client.js';
import { startTestIdp } from '../support/oidc-idp.js';
import type { RawHttpResponse, TestIdp } from '../support/oidc-idp.js';

function header(response: RawHttpResponse | ReceivedResponse, name: string): string | undefined {
  return response.headers.find(([n]) => n.toLowerCase() === name.toLowerCase())?.[1];
}

describe('e2e harness: oidc-provider IdP + openid-client "Okta" (no Envoy)', function () {
  this.timeout(10_000);

  describe('default IdP', () => {
    let idp: TestIdp;

    before(async () => {
      idp = await startTestIdp();
    });

    after(async () => {
      await idp?.close();
    });

    it('logs in with code + PKCE and records the raw token response byte-for-byte', async () => {
      const login = await loginAsOkta(idp, idp.tokenUrl);

      expect(login.tokens.access_token).to.be.a('string').and.not.be.empty;
      expect(login.tokens.id_token).to.be.a('string').and.not.be.empty;
      expect(login.tokens.refresh_token).to.be.a('string').and.not.be.empty;
      expect(login.claims.sub).to.equal('alice');
      expect(login.claims.email).to.equal('alice@example.test');
      expect(login.claims.email_verified).to.equal(true);
      expect(login.claims.iss).to.equal(idp.issuer);
      expect(login.claims.aud).to.equal(idp.clientId);

      expect(idp.tokenResponses).to.have.lengthOf(1);
      const [written] = idp.tokenResponses as [RawHttpResponse];
      expect(written.status).to.equal(200).and.equal(login.received.status);
      expect(Buffer.compare(written.body, login.received.body)).to.equal(0);
      expect(header(written, 'content-length')).to.equal(String(written.body.length));
      expect(header(login.received, 'content-length')).to.equal(String(login.received.body.length));

      const json = JSON.parse(login.received.body.toString('utf8')) as Record<string, unknown>;
      expect(json.access_token).to.equal(login.tokens.access_token);
      expect(json.refresh_token).to.equal(login.tokens.refresh_token);

      const refreshed = await refreshAsOkta(idp, idp.tokenUrl, login.tokens.refresh_token!);
      expect(refreshed.tokens.access_token).to.be.a('string').and.not.equal(login.tokens.access_token);
      expect(refreshed.received.status).to.equal(200);
      expect(idp.tokenResponses).to.have.lengthOf(2);
      expect(Buffer.compare(idp.tokenResponses[1]!.body, refreshed.received.body)).to.equal(0);
      // without rotation the same refresh token is handed back and keeps working
      expect(refreshed.tokens.refresh_token ?? login.tokens.refresh_token).to.equal(login.tokens.refresh_token);
      await refreshAsOkta(idp, idp.tokenUrl, login.tokens.refresh_token!);
    });

    it('rejects an unknown login_hint at the authorization step', async () => {
      const before = idp.tokenResponses.length;
      let failure: unknown;
      try {
        await loginAsOkta(idp, idp.tokenUrl, { loginHint: 'mallory' });
      } catch (err) {
        failure = err;
      }
      expect(failure).to.be.instanceOf(Error);
      expect((failure as { error?: string }).error).to.equal('access_denied');
      expect(idp.tokenResponses).to.have.lengthOf(before);
    });
  });

  describe('IdP with refresh token rotation and several accounts', () => {
    let idp: TestIdp;

    before(async () => {
      idp = await startTestIdp({
        rotateRefreshToken: true,
        accessTokenTtlSeconds: 120,
        accounts: {
          alice: { email: 'alice@example.test' },
          bob: { email: 'bob@example.test', name: 'Bob Builder' },
        },
      });
    });

    after(async () => {
      await idp?.close();
    });

    it('picks the account from login_hint and rotates refresh tokens', async () => {
      const login = await loginAsOkta(idp, idp.tokenUrl, { loginHint: 'bob' });
      expect(login.claims.sub).to.equal('bob');
      expect(login.claims.email).to.equal('bob@example.test');
      expect(login.claims.name).to.equal('Bob Builder');
      expect(login.tokens.expires_in).to.equal(120);
      const oldRefreshToken = login.tokens.refresh_token!;
      expect(oldRefreshToken).to.be.a('string');

      const refreshed = await refreshAsOkta(idp, idp.tokenUrl, oldRefreshToken);
      expect(refreshed.tokens.refresh_token).to.be.a('string').and.not.equal(oldRefreshToken);

      let failure: TokenCallError | undefined;
      try {
        await refreshAsOkta(idp, idp.tokenUrl, oldRefreshToken);
      } catch (err) {
        failure = err as TokenCallError;
      }
      expect(failure, 'reusing a rotated refresh token must fail').to.be.instanceOf(Error);
      expect((failure as { error?: string }).error).to.equal('invalid_grant');
      expect(failure!.received?.status).to.equal(400);

      expect(idp.tokenResponses.map((r) => r.status)).to.deep.equal([200, 200, 400]);
      const last = idp.tokenResponses[2]!;
      expect(Buffer.compare(last.body, failure!.received!.body)).to.equal(0);
      expect(JSON.parse(last.body.toString('utf8'))).to.include({ error: 'invalid_grant' });
    });
  });
});
