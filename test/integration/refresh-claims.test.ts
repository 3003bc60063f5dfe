// The rules of refresh claims (operations/refresh.ts) against real Postgres, two refreshers standing in
// for two sidecars: a live claim of another holder is waited on, never spent past; a claim whose
// refresh token was replaced since is over at once; a holder whose claim was taken over writes its
// late answer merged by capture time, never over the newer refresh token. After an outage, an
// expired claim is not taken over until one apply window has passed since Postgres came back, and
// a holder whose write failed writes its kept answer itself as soon as Postgres answers.
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { expect } from 'chai';
import { IdpClient } from '../../src/idp/client.js';
import { GrantRefresher } from '../../src/operations/refresh.js';
import { generateKeySpec, parseKeyRing } from '../../src/keys/key-ring.js';
import { GrantStore } from '../../src/store/grants.js';
import { sealQuarantined } from '../../src/ingest/quarantine.js';
import { migrate } from '../../src/store/migrate.js';
import { VaultError } from '../../src/store/errors.js';
import { readClaim, takeClaim } from '../../src/store/refresh-claims.js';
import { syntheticCapture, syntheticTokens } from '../support/captures.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';

const IDP = 'acme';

describe('refresh claims: one refresh token spent once across holders', () => {
  let db: TestDatabase;
  let server: http.Server;
  let store: GrantStore;
  /** Refresh tokens presented to the token endpoint, in order. */
  const presented: string[] = [];

  before(async () => {
    db = await createTestDatabase('refresh_claims');
    await migrate(db.pool);
    store = new GrantStore(db.pool, parseKeyRing(generateKeySpec('k1')), sealQuarantined);
    server = http.createServer((request, response) => {
      const chunks: Buffer[] = [];
      request.on('data', (chunk: Buffer) => chunks.push(chunk));
      request.on('end', () => {
        presented.push(new URLSearchParams(Buffer.concat(chunks).toString('utf8')).get('refresh_token') ?? '');
        response.writeHead(200, { 'content-type': 'application/json' });
        response.end(
          JSON.stringify({ access_token: `at-${presented.length}`, token_type: 'Bearer', expires_in: 300, refresh_token: `rotated-${presented.length}` }),
        );
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  });
  after(async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await db?.drop();
  });

  function refresher(options: Partial<ConstructorParameters<typeof GrantRefresher>[0]> = {}, timeoutMs = 2_000): GrantRefresher {
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const client = new IdpClient(
      { idp: IDP, tokenUrl: new URL(`${base}/token`), revocationUrl: undefined, clientId: 'okta', authMethod: 'client_secret_post', timeoutMs },
      'secret',
    );
    return new GrantRefresher({ pool: db.pool, store, clients: new Map([[IDP, client]]), pollMs: 20, ...options });
  }

  async function login(subject: string, refreshToken: string): Promise<void> {
    await store.recordCaptures([syntheticCapture(IDP, subject, { tokens: syntheticTokens({ refreshToken }) })]);
  }

  async function claimAs(holder: string, subject: string, holdMs: number): Promise<void> {
    const client = await db.pool.connect();
    try {
      await takeClaim(client, { idp: IDP, subject, claimId: randomUUID(), holder, holdMs });
    } finally {
      client.release();
    }
  }

  it('a live claim of another holder, its refresh token unchanged: the refresh waits until its deadline, UNAVAILABLE, and never calls the IdP', async () => {
    await login('alice', 'alice-rt');
    await claimAs('other-host/1/aaaa', 'alice', 60_000);
    const before = presented.length;
    const error = await refresher()
      .refresh(IDP, 'alice', { waitUntil: Date.now() + 300 })
      .then(
        () => undefined,
        (caught: unknown) => caught,
      );
    expect(error).to.be.instanceOf(VaultError).and.include({ outcome: 'unavailable' });
    expect((error as Error).message).to.contain('other-host/1/aaaa');
    expect(presented.length, 'calls to the IdP').to.equal(before);
  });

  it("a claim whose refresh token was replaced since (the holder's answer, or a login, landed) is over at once: the next refresh spends the new token", async () => {
    await login('bob', 'bob-rt-1');
    await claimAs('crashed-host/2/bbbb', 'bob', 60_000);
    // The crashed holder's pump (or a login) writes another refresh token.
    await login('bob', 'bob-rt-2');
    const started = Date.now();
    const result = await refresher().refresh(IDP, 'bob', { waitUntil: Date.now() + 5_000 });
    expect(Date.now() - started, 'no wait on the settled claim').to.be.below(1_000);
    expect(presented.at(-1)).to.equal('bob-rt-2');
    expect(result.refreshedByThisCall).to.equal(true);
    expect(await readClaim(db.pool, IDP, 'bob'), 'released with the write').to.equal(undefined);
  });

  it('a holder whose claim expired and was taken over while its IdP answered writes its late answer merged: the newer refresh token stays', async () => {
    await login('carol', 'carol-rt');
    // Its own apply window short too: a test Postgres started less than 60 s ago holds takeovers off that long.
    const taker = refresher({ applyWindowMs: 200 });
    let takerResult: Awaited<ReturnType<GrantRefresher['refresh']>> | undefined;
    // A claim of 300 ms (IdP timeout) + 200 ms (apply window); the holder is held up after the IdP
    // answered (its outbox) until its claim expired and the taker refreshed.
    const slow = refresher(
      {
        applyWindowMs: 200,
        outbox: async () => {
          await new Promise((resolve) => setTimeout(resolve, 700));
          takerResult = await taker.refresh(IDP, 'carol', { waitUntil: Date.now() + 3_000 });
          return true;
        },
      },
      300,
    );
    const late = await slow.refresh(IDP, 'carol');
    expect(presented.slice(-2), 'the holder spent the old token; the taker (the IdP answered, here without reuse detection) too').to.deep.equal([
      'carol-rt',
      'carol-rt',
    ]);
    expect(takerResult?.refreshedByThisCall).to.equal(true);
    const stored = (await store.findGrant(IDP, 'carol'))!;
    expect(stored.refreshToken, "the taker's newer refresh token").to.equal(takerResult!.grant.refreshToken);
    expect(late.grant.refreshToken).to.equal(takerResult!.grant.refreshToken);
  });

  it('an expired claim right after Postgres came back (the capture writer saw it return) is not taken over until one apply window later; then it is', async () => {
    await login('erin', 'erin-rt');
    await claimAs('outage-host/3/eeee', 'erin', 1);
    await new Promise((resolve) => setTimeout(resolve, 20));
    const regainedAt = Date.now();
    const logs: string[] = [];
    const logger = { warn: (_: unknown, message: string) => logs.push(message), info: () => undefined, error: () => undefined } as never;
    const taker = refresher({ applyWindowMs: 1_000, postgresRegainedAt: () => regainedAt, logger });
    const before = presented.length;
    const early = await taker.refresh(IDP, 'erin', { waitUntil: Date.now() + 300 }).then(
      () => undefined,
      (caught: unknown) => caught,
    );
    expect(early).to.be.instanceOf(VaultError).and.include({ outcome: 'unavailable' });
    expect((early as Error).message)
      .to.contain('outage-host/3/eeee')
      .and.contain('expired while Postgres was away');
    expect(presented.length, 'calls to the IdP within the window').to.equal(before);
    expect(logs).to.include(
      'not taking over an expired refresh claim yet: Postgres came back less than the apply window ago, and its holder may still write its answer',
    );

    const late = await taker.refresh(IDP, 'erin', { waitUntil: Date.now() + 5_000 });
    expect(Date.now() - regainedAt, 'taken over only after the window').to.be.at.least(1_000);
    expect(late.refreshedByThisCall).to.equal(true);
    expect(presented.slice(before)).to.deep.equal(['erin-rt']);
    expect(logs.some((message) => message.startsWith('taking over an expired refresh claim'))).to.equal(true);
  });

  it("the refresher's own pool losing Postgres counts too: the first refresh after it is back holds an expired claim off", async () => {
    await login('frank', 'frank-rt');
    await claimAs('outage-host/4/ffff', 'frank', 1);
    await new Promise((resolve) => setTimeout(resolve, 20));
    const taker = refresher({ applyWindowMs: 60_000 });
    // As the API's pool reports an idle connection that failed (a restart, a failover).
    taker.postgresLost();
    const before = presented.length;
    const error = await taker.refresh(IDP, 'frank', { waitUntil: Date.now() + 200 }).then(
      () => undefined,
      (caught: unknown) => caught,
    );
    expect(error).to.be.instanceOf(VaultError).and.include({ outcome: 'unavailable' });
    expect(presented.length).to.equal(before);
    // Another sidecar that saw no outage (and a Postgres up for long) takes it over at once.
    await refresher({ applyWindowMs: 60_000 }).refresh(IDP, 'frank', { waitUntil: Date.now() + 2_000 });
    expect(presented.slice(before)).to.deep.equal(['frank-rt']);
  });

  it('a holder whose write failed (Postgres away) writes its kept answer itself as soon as Postgres answers, without another call and without its spool; the claim is released', async () => {
    await login('gina', 'gina-rt');
    let failWrite = true;
    const holder = refresher({
      outbox: async () => true, // the spooled copy waits behind the outage's backlog: never written here
      keptRetryMs: { initial: 20, max: 50 },
      afterAnswerDurable: async () => {
        if (failWrite) {
          failWrite = false;
          throw Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' });
        }
      },
    });
    const failed = await holder.refresh(IDP, 'gina').then(
      () => undefined,
      (caught: unknown) => caught,
    );
    expect((failed as { code?: string }).code).to.equal('ECONNREFUSED');
    const rotated = `rotated-${presented.length}`;
    expect(presented.at(-1)).to.equal('gina-rt');
    const deadline = Date.now() + 3_000;
    while ((await store.findGrant(IDP, 'gina'))!.refreshToken !== rotated && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
    expect((await store.findGrant(IDP, 'gina'))!.refreshToken, 'the kept answer, written by its holder').to.equal(rotated);
    expect(await readClaim(db.pool, IDP, 'gina'), 'its claim released with the write').to.equal(undefined);
  });
});
