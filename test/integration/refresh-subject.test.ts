// OIDC Core 12.2: a refreshed id_token must name the grant's user. A token endpoint that answers
// a refresh with another user's id_token changes nothing stored.
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { expect } from 'chai';
import { generateKeyPair, SignJWT } from 'jose';
import { IdpClient } from '../../src/idp/client.js';
import { GrantRefresher } from '../../src/idp/refresh.js';
import { generateKeySpec, parseKeyRing } from '../../src/keys/key-ring.js';
import { GrantStore } from '../../src/store/grants.js';
import { migrate } from '../../src/store/migrate.js';
import { VaultError } from '../../src/store/errors.js';
import type { Capture } from '../../src/capture/types.js';
import { syntheticCapture, syntheticTokens } from '../support/captures.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';

describe('refresh: the refreshed id_token must keep the subject (OIDC Core 12.2)', () => {
  let db: TestDatabase;
  let server: http.Server;
  let answerSubject = 'alice';
  let answerEmail: string | undefined;
  /** Set on the answer (fields) and on its id_token (claims), over what the IdP sends by default. */
  let answerFields: Record<string, unknown> = {};
  let answerClaims: Record<string, unknown> = {};
  let tokenCalls = 0;

  before(async () => {
    db = await createTestDatabase('refresh_subject');
    await migrate(db.pool);
    const { privateKey } = await generateKeyPair('RS256');
    server = http.createServer((request, response) => {
      request.resume();
      request.on('end', async () => {
        const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
        const now = Math.floor(Date.now() / 1000);
        const claims = { sub: answerSubject, ...(answerEmail ? { email: answerEmail } : {}), iss: base, aud: 'okta-client', iat: now, exp: now + 300, ...answerClaims };
        const idToken = await new SignJWT(claims).setProtectedHeader({ alg: 'RS256' }).sign(privateKey);
        response.writeHead(200, { 'content-type': 'application/json' });
        tokenCalls += 1;
        response.end(JSON.stringify({ access_token: `at-${Date.now()}-${tokenCalls}`, token_type: 'Bearer', expires_in: 300, refresh_token: `rotated-by-idp-${tokenCalls}`, id_token: idToken, ...answerFields }));
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  });
  after(async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await db?.drop();
  });

  it('refuses an id_token for another subject, logs it, and leaves the stored grant as it was', async () => {
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const store = new GrantStore(db.pool, parseKeyRing(generateKeySpec('k1')));
    await store.recordCaptures([syntheticCapture('acme', 'alice', { issuer: base, clientId: 'okta-client', tokens: syntheticTokens({ refreshToken: 'stored-refresh-token' }) })]);
    const before = (await store.findGrant('acme', 'alice'))!;
    const client = new IdpClient({ idp: 'acme', tokenUrl: new URL(`${base}/token`), revocationUrl: undefined, clientId: 'okta-client', authMethod: 'client_secret_post', timeoutMs: 2_000 }, 'secret');
    const logged: string[] = [];
    const logger = { error: (_: unknown, message: string) => logged.push(message), warn: () => undefined, info: () => undefined } as never;
    const refresher = new GrantRefresher({ pool: db.pool, store, clients: new Map([['acme', client]]), logger });

    answerSubject = 'mallory';
    const error = await refresher.refresh('acme', 'alice').then(() => undefined, (caught: unknown) => caught);
    expect(error).to.be.instanceOf(VaultError).and.include({ outcome: 'failed_precondition' });
    expect((error as Error).message).to.contain('another subject');
    expect(logged.join('\n')).to.contain('OIDC Core 12.2');
    const after = (await store.findGrant('acme', 'alice'))!;
    expect(after).to.include({ refreshToken: 'stored-refresh-token', accessToken: before.accessToken, version: before.version });

    answerSubject = 'alice';
    const refreshed = await refresher.refresh('acme', 'alice');
    expect(refreshed.grant.refreshToken).to.equal(`rotated-by-idp-${tokenCalls}`);
  });

  it('refuses an answer with a field over its bound (an email past its index row limit): nothing spooled, the stored grant as it was', async () => {
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const store = new GrantStore(db.pool, parseKeyRing(generateKeySpec('k1')));
    await store.recordCaptures([syntheticCapture('acme', 'carol', { issuer: base, clientId: 'okta-client', tokens: syntheticTokens({ refreshToken: 'carol-refresh-token' }) })]);
    const before = (await store.findGrant('acme', 'carol'))!;
    const client = new IdpClient({ idp: 'acme', tokenUrl: new URL(`${base}/token`), revocationUrl: undefined, clientId: 'okta-client', authMethod: 'client_secret_post', timeoutMs: 2_000 }, 'secret');
    const spooled: Capture[] = [];
    const refresher = new GrantRefresher({ pool: db.pool, store, clients: new Map([['acme', client]]), outbox: async (capture) => (spooled.push(capture), true) });
    answerSubject = 'carol';
    answerEmail = `${randomBytes(2300).toString('base64url')}@example.test`;
    try {
      const error = await refresher.refresh('acme', 'carol').then(() => undefined, (caught: unknown) => caught);
      expect(error).to.be.instanceOf(VaultError).and.include({ outcome: 'failed_precondition' });
      expect((error as Error).message).to.contain('email over 320 bytes').and.not.contain(answerEmail.slice(0, 32));
      expect(spooled).to.deep.equal([]);
      expect((await store.findGrant('acme', 'carol'))!).to.include({ refreshToken: 'carol-refresh-token', version: before.version });
    } finally {
      answerSubject = 'alice';
      answerEmail = undefined;
    }
  });

  it('refuses an answer whose lifetimes or id_token exp no date can hold (1e300): nothing spooled, the stored grant as it was', async () => {
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const store = new GrantStore(db.pool, parseKeyRing(generateKeySpec('k1')));
    await store.recordCaptures([syntheticCapture('acme', 'dave', { issuer: base, clientId: 'okta-client', tokens: syntheticTokens({ refreshToken: 'dave-refresh-token' }) })]);
    const before = (await store.findGrant('acme', 'dave'))!;
    const client = new IdpClient({ idp: 'acme', tokenUrl: new URL(`${base}/token`), revocationUrl: undefined, clientId: 'okta-client', authMethod: 'client_secret_post', timeoutMs: 2_000 }, 'secret');
    const spooled: Capture[] = [];
    const refresher = new GrantRefresher({ pool: db.pool, store, clients: new Map([['acme', client]]), outbox: async (capture) => (spooled.push(capture), true) });
    answerSubject = 'dave';
    const answers: Array<[string, Record<string, unknown>, Record<string, unknown>]> = [
      ['expires_in over 315,360,000 seconds', { expires_in: 1e300 }, {}],
      ['refresh_token_expires_in over 315,360,000 seconds', { refresh_token_expires_in: 1e300 }, {}],
      ['id_token exp more than 100 years from the response', {}, { exp: 1e300 }],
    ];
    try {
      for (const [detail, fields, claims] of answers) {
        answerFields = fields;
        answerClaims = claims;
        const error = await refresher.refresh('acme', 'dave').then(() => undefined, (caught: unknown) => caught);
        expect(error, detail).to.be.instanceOf(VaultError).and.include({ outcome: 'failed_precondition' });
        expect((error as Error).message).to.contain(detail);
      }
      expect(spooled).to.deep.equal([]);
      expect((await store.findGrant('acme', 'dave'))!).to.include({ refreshToken: 'dave-refresh-token', version: before.version });
    } finally {
      answerSubject = 'alice';
      answerFields = {};
      answerClaims = {};
    }
  });

  it('a kept answer already applied by the pump does not stand in for the next refresh: the IdP is called again', async () => {
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const store = new GrantStore(db.pool, parseKeyRing(generateKeySpec('k1')));
    await store.recordCaptures([syntheticCapture('acme', 'bob', { issuer: base, clientId: 'okta-client', tokens: syntheticTokens({ refreshToken: 'bob-refresh-token' }) })]);
    const client = new IdpClient({ idp: 'acme', tokenUrl: new URL(`${base}/token`), revocationUrl: undefined, clientId: 'okta-client', authMethod: 'client_secret_post', timeoutMs: 2_000 }, 'secret');
    const spooled: Capture[] = [];
    let failNextWrite = true;
    const refresher = new GrantRefresher({
      pool: db.pool,
      store,
      clients: new Map([['acme', client]]),
      outbox: async (capture) => (spooled.push(capture), true),
      afterAnswerDurable: async () => {
        if (failNextWrite) {
          failNextWrite = false;
          throw Object.assign(new Error('connection terminated'), { code: 'ECONNRESET' });
        }
      },
    });
    answerSubject = 'bob';
    await refresher.refresh('acme', 'bob').then(() => expect.fail('the first write fails'), () => undefined);
    // The pump applies the spooled answer, as after any failed write.
    await store.recordCaptures(spooled);
    const callsBefore = tokenCalls;
    const next = await refresher.refresh('acme', 'bob');
    expect(tokenCalls, 'the IdP was asked again').to.equal(callsBefore + 1);
    expect(next).to.include({ refreshedByThisCall: true });
    expect(next.grant.refreshToken).to.equal(`rotated-by-idp-${tokenCalls}`);
  });
});
