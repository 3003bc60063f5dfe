// OIDC Core 12.2: a refreshed id_token must name the grant's user. A token endpoint that answers
// a refresh with another user's id_token changes nothing stored. An answer with a field over its
// bound is never thrown away: the IdP has rotated the refresh token already (operations/refresh-answer.ts).
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { expect } from 'chai';
import { generateKeyPair, SignJWT } from 'jose';
import { IdpClient } from '../../src/idp/client.js';
import { GrantRefresher } from '../../src/operations/refresh.js';
import { generateKeySpec, parseKeyRing } from '../../src/keys/key-ring.js';
import { GrantStore } from '../../src/store/grants.js';
import { sealQuarantined } from '../../src/ingest/quarantine.js';
import { migrate } from '../../src/store/migrate.js';
import { VaultError } from '../../src/store/errors.js';
import { listQuarantined } from '../../src/store/quarantine.js';
import { retryQuarantined } from '../../src/operations/captures-retry.js';
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
  let answerAccessToken: string | undefined;
  let tokenCalls = 0;
  /** Refresh tokens presented to the token endpoint, in order. */
  const presented: string[] = [];

  before(async () => {
    db = await createTestDatabase('refresh_subject');
    await migrate(db.pool);
    const { privateKey } = await generateKeyPair('RS256');
    server = http.createServer((request, response) => {
      const chunks: Buffer[] = [];
      request.on('data', (chunk: Buffer) => chunks.push(chunk));
      request.on('end', async () => {
        presented.push(new URLSearchParams(Buffer.concat(chunks).toString('utf8')).get('refresh_token') ?? '');
        const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
        const now = Math.floor(Date.now() / 1000);
        const claims = {
          sub: answerSubject,
          ...(answerEmail ? { email: answerEmail } : {}),
          iss: base,
          aud: 'okta-client',
          iat: now,
          exp: now + 300,
          ...answerClaims,
        };
        const idToken = await new SignJWT(claims).setProtectedHeader({ alg: 'RS256' }).sign(privateKey);
        response.writeHead(200, { 'content-type': 'application/json' });
        tokenCalls += 1;
        response.end(
          JSON.stringify({
            access_token: answerAccessToken ?? `at-${Date.now()}-${tokenCalls}`,
            token_type: 'Bearer',
            expires_in: 300,
            refresh_token: `rotated-by-idp-${tokenCalls}`,
            id_token: idToken,
            ...answerFields,
          }),
        );
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
    const store = new GrantStore(db.pool, parseKeyRing(generateKeySpec('k1')), sealQuarantined);
    await store.recordCaptures([
      syntheticCapture('acme', 'alice', { issuer: base, clientId: 'okta-client', tokens: syntheticTokens({ refreshToken: 'stored-refresh-token' }) }),
    ]);
    const before = (await store.findGrant('acme', 'alice'))!;
    const client = new IdpClient(
      {
        idp: 'acme',
        tokenUrl: new URL(`${base}/token`),
        revocationUrl: undefined,
        clientId: 'okta-client',
        authMethod: 'client_secret_post',
        timeoutMs: 2_000,
      },
      'secret',
    );
    const logged: string[] = [];
    const logger = { error: (_: unknown, message: string) => logged.push(message), warn: () => undefined, info: () => undefined } as never;
    const refresher = new GrantRefresher({ pool: db.pool, store, clients: new Map([['acme', client]]), logger });

    answerSubject = 'mallory';
    const error = await refresher.refresh('acme', 'alice').then(
      () => undefined,
      (caught: unknown) => caught,
    );
    expect(error).to.be.instanceOf(VaultError).and.include({ outcome: 'failed_precondition' });
    expect((error as Error).message).to.contain('another subject');
    expect(logged.join('\n')).to.contain('OIDC Core 12.2');
    const after = (await store.findGrant('acme', 'alice'))!;
    expect(after).to.include({ refreshToken: 'stored-refresh-token', accessToken: before.accessToken, version: before.version });

    answerSubject = 'alice';
    const refreshed = await refresher.refresh('acme', 'alice');
    expect(refreshed.grant.refreshToken).to.equal(`rotated-by-idp-${tokenCalls}`);
  });

  // Before: the answer was refused whole (FAILED_PRECONDITION, "the grant unchanged"), so the grant
  // kept the refresh token the IdP had just spent, and the next refresh presented it again.
  it('stores the rotated tokens of an answer whose id_token email is over its bound (400 bytes): the email and that id_token dropped, logged and counted; the next refresh presents the new refresh token', async () => {
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const store = new GrantStore(db.pool, parseKeyRing(generateKeySpec('k1')), sealQuarantined);
    const storedIdToken = `eyJhbGciOiJub25lIn0.${Buffer.from(JSON.stringify({ sub: 'carol', email: 'carol@example.test' })).toString('base64url')}.`;
    await store.recordCaptures([
      syntheticCapture('acme', 'carol', {
        issuer: base,
        clientId: 'okta-client',
        email: 'carol@example.test',
        tokens: syntheticTokens({ refreshToken: 'carol-refresh-token', idToken: storedIdToken }),
      }),
    ]);
    const before = (await store.findGrant('acme', 'carol'))!;
    const client = new IdpClient(
      {
        idp: 'acme',
        tokenUrl: new URL(`${base}/token`),
        revocationUrl: undefined,
        clientId: 'okta-client',
        authMethod: 'client_secret_post',
        timeoutMs: 2_000,
      },
      'secret',
    );
    const spooled: Capture[] = [];
    const logged: Array<{ fields: unknown; message: string }> = [];
    const logger = { error: () => undefined, warn: (fields: unknown, message: string) => logged.push({ fields, message }), info: () => undefined } as never;
    const counted: string[] = [];
    const refresher = new GrantRefresher({
      pool: db.pool,
      store,
      clients: new Map([['acme', client]]),
      logger,
      outbox: async (capture) => (spooled.push(capture), true),
      onFieldRefused: (idp, field, action) => counted.push(`${idp} ${field} ${action}`),
    });
    answerSubject = 'carol';
    answerEmail = `${randomBytes(291).toString('hex').slice(0, 388)}@example.test`;
    expect(Buffer.byteLength(answerEmail)).to.equal(401);
    try {
      const refreshed = await refresher.refresh('acme', 'carol');
      const rotated = `rotated-by-idp-${tokenCalls}`;
      expect(presented.at(-1)).to.equal('carol-refresh-token');
      expect(refreshed.grant.refreshToken).to.equal(rotated);
      const stored = (await store.findGrant('acme', 'carol'))!;
      expect(stored).to.include({ refreshToken: rotated, email: 'carol@example.test', idToken: storedIdToken });
      expect(stored.accessToken).to.not.equal(before.accessToken);
      expect(stored.version).to.be.above(before.version);
      expect(spooled.map((capture) => capture.tokens?.refreshToken)).to.deep.equal([rotated]);
      expect(spooled[0]!.email).to.equal(undefined);
      expect(counted).to.deep.equal(['acme email dropped', 'acme id_token dropped']);
      const text = JSON.stringify(logged);
      expect(text).to.contain('email over 320 bytes').and.not.contain(answerEmail.slice(0, 32));

      answerEmail = undefined;
      const next = await refresher.refresh('acme', 'carol');
      expect(presented.at(-1), 'the second refresh presents the rotated refresh token').to.equal(rotated);
      expect(next.grant.refreshToken).to.equal(`rotated-by-idp-${tokenCalls}`);
    } finally {
      answerSubject = 'alice';
      answerEmail = undefined;
    }
  });

  it('stores the rotated tokens of an answer whose lifetimes or id_token exp no date can hold (1e300), without those: no expiry from them, the id_token not taken', async () => {
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const store = new GrantStore(db.pool, parseKeyRing(generateKeySpec('k1')), sealQuarantined);
    await store.recordCaptures([
      syntheticCapture('acme', 'erin', { issuer: base, clientId: 'okta-client', tokens: syntheticTokens({ refreshToken: 'erin-refresh-token' }) }),
    ]);
    const client = new IdpClient(
      {
        idp: 'acme',
        tokenUrl: new URL(`${base}/token`),
        revocationUrl: undefined,
        clientId: 'okta-client',
        authMethod: 'client_secret_post',
        timeoutMs: 2_000,
      },
      'secret',
    );
    const spooled: Capture[] = [];
    const counted: string[] = [];
    const refresher = new GrantRefresher({
      pool: db.pool,
      store,
      clients: new Map([['acme', client]]),
      outbox: async (capture) => (spooled.push(capture), true),
      onFieldRefused: (idp, field, action) => counted.push(`${idp} ${field} ${action}`),
    });
    answerSubject = 'erin';
    const answers: Array<[string, Record<string, unknown>, Record<string, unknown>]> = [
      ['expires_in', { expires_in: 1e300 }, {}],
      ['refresh_token_expires_in', { refresh_token_expires_in: 1e300 }, {}],
      ['id_token', {}, { exp: 1e300 }],
    ];
    try {
      for (const [field, fields, claims] of answers) {
        answerFields = fields;
        answerClaims = claims;
        const storedIdToken = (await store.findGrant('acme', 'erin'))!.idToken;
        const { grant } = await refresher.refresh('acme', 'erin');
        expect(grant.refreshToken, field).to.equal(`rotated-by-idp-${tokenCalls}`);
        expect(presented.at(-1), `${field}: the refresh before presented the token it stored`).to.not.equal(undefined);
        if (field === 'expires_in') expect(grant.accessTokenExpiresAt).to.equal(null);
        if (field === 'refresh_token_expires_in') expect(grant.refreshTokenExpiresAt).to.equal(null);
        if (field === 'id_token') expect(grant.idToken, "the answer's id_token is not taken: the stored one stays").to.equal(storedIdToken);
      }
      expect(counted).to.deep.equal(['acme expires_in dropped', 'acme refresh_token_expires_in dropped', 'acme id_token dropped']);
      expect(spooled).to.have.length(3);
    } finally {
      answerSubject = 'alice';
      answerFields = {};
      answerClaims = {};
    }
  });

  it('sets aside an answer whose access token is over its bound: FAILED_PRECONDITION, the answer sealed in the quarantine, the spent refresh token no longer stored; a retry of the capture stores it', async () => {
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const ring = parseKeyRing(generateKeySpec('k1'));
    const store = new GrantStore(db.pool, ring, sealQuarantined);
    await store.recordCaptures([
      syntheticCapture('acme', 'dave', { issuer: base, clientId: 'okta-client', tokens: syntheticTokens({ refreshToken: 'dave-refresh-token' }) }),
    ]);
    const client = new IdpClient(
      {
        idp: 'acme',
        tokenUrl: new URL(`${base}/token`),
        revocationUrl: undefined,
        clientId: 'okta-client',
        authMethod: 'client_secret_post',
        timeoutMs: 2_000,
      },
      'secret',
    );
    const spooled: Capture[] = [];
    const counted: string[] = [];
    const refresher = new GrantRefresher({
      pool: db.pool,
      store,
      clients: new Map([['acme', client]]),
      outbox: async (capture) => (spooled.push(capture), true),
      onFieldRefused: (idp, field, action) => counted.push(`${idp} ${field} ${action}`),
    });
    answerSubject = 'dave';
    answerAccessToken = `at-${'x'.repeat(70_000)}`;
    try {
      const error = await refresher.refresh('acme', 'dave').then(
        () => undefined,
        (caught: unknown) => caught,
      );
      const rotated = `rotated-by-idp-${tokenCalls}`;
      expect(error).to.be.instanceOf(VaultError).and.include({ outcome: 'failed_precondition' });
      const message = (error as Error).message;
      expect(message)
        .to.contain('access_token over 65,536 bytes')
        .and.contain('set aside in the quarantine')
        .and.not.contain(rotated)
        .and.not.contain('xxxxxxxx');
      expect(counted).to.deep.equal(['acme access_token set_aside']);
      const quarantined = await listQuarantined(db.pool, { idp: 'acme' });
      const entry = quarantined.find((candidate) => message.includes(candidate.captureId));
      expect(entry, 'the quarantined capture the message names').to.not.equal(undefined);
      expect(entry!.reason).to.equal('refresh answer with access_token over 65,536 bytes');
      const grant = (await store.findGrant('acme', 'dave'))!;
      expect(grant.refreshToken, 'the spent refresh token is not presented again').to.equal(null);
      expect(grant.status).to.equal('active');
      // Its spooled copy, written by the pump later, is a replay: the grant does not take the over-bound token.
      await store.recordCaptures(spooled);
      expect((await store.findGrant('acme', 'dave'))!.refreshToken).to.equal(null);
      const { rows } = await db.pool.query('SELECT outcome, detail FROM capture_events WHERE capture_id = $1', [spooled[0]!.captureId]);
      expect(rows).to.deep.equal([{ outcome: 'too_large', detail: 'refresh answer with access_token over 65,536 bytes' }]);
      const again = await refresher.refresh('acme', 'dave').then(
        () => undefined,
        (caught: unknown) => caught,
      );
      expect((again as Error).message).to.contain('has no refresh token');

      // An operator retries the capture (token-tap captures retry): the rotated tokens are stored.
      const retried = await retryQuarantined(entry!.captureId, {
        pool: db.pool,
        ring,
        write: (tx, capture) => store.writeCaptureIn(tx, capture),
        verify: async (capture) => capture,
      });
      expect(retried).to.deep.equal({ captureId: entry!.captureId, result: 'written' });
      expect((await store.findGrant('acme', 'dave'))!).to.include({ refreshToken: rotated, accessToken: answerAccessToken });
    } finally {
      answerSubject = 'alice';
      answerAccessToken = undefined;
    }
  });

  it('a kept answer already applied by the pump does not stand in for the next refresh: the IdP is called again', async () => {
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const store = new GrantStore(db.pool, parseKeyRing(generateKeySpec('k1')), sealQuarantined);
    await store.recordCaptures([
      syntheticCapture('acme', 'bob', { issuer: base, clientId: 'okta-client', tokens: syntheticTokens({ refreshToken: 'bob-refresh-token' }) }),
    ]);
    const client = new IdpClient(
      {
        idp: 'acme',
        tokenUrl: new URL(`${base}/token`),
        revocationUrl: undefined,
        clientId: 'okta-client',
        authMethod: 'client_secret_post',
        timeoutMs: 2_000,
      },
      'secret',
    );
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
    await refresher.refresh('acme', 'bob').then(
      () => expect.fail('the first write fails'),
      () => undefined,
    );
    // The pump applies the spooled answer, as after any failed write.
    await store.recordCaptures(spooled);
    const callsBefore = tokenCalls;
    const next = await refresher.refresh('acme', 'bob');
    expect(tokenCalls, 'the IdP was asked again').to.equal(callsBefore + 1);
    expect(next).to.include({ refreshedByThisCall: true });
    expect(next.grant.refreshToken).to.equal(`rotated-by-idp-${tokenCalls}`);
  });
});
