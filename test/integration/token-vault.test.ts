// The TokenVault API against a real IdP (oidc-provider with refresh-token rotation), real gRPC and
// the real Postgres: what internal services get, refresh, revoke and delete.
import * as grpc from '@grpc/grpc-js';
import { expect } from 'chai';
import type { GrantMessage } from '../../src/api/protocol.js';
import { fromProtoStruct, fromTimestamp } from '../../src/api/wire.js';
import { refreshAsOkta, type TokenCallError } from '../support/okta-client.js';
import { startTestIdp, type TestIdp } from '../support/oidc-idp.js';
import { createTestDatabase, dumpAllRowsAsText, plaintextForms, type TestDatabase } from '../support/postgres.js';
import {
  createApiKey,
  idpConfigFile,
  loginIntoVault,
  startVaultSidecar,
  statusOf,
  userinfoStatus,
  vaultClient,
  type VaultClient,
  type VaultSidecar,
} from '../support/token-vault.js';
import { syntheticCapture, syntheticTokens } from '../support/captures.js';
import { generateKeySpec } from '../../src/keys/key-ring.js';

const IDP = 'acme';
const SECRET_ENV = 'TOKEN_TAP_TEST_ACME_SECRET';

describe('TokenVault API (oidc-provider with refresh-token rotation, Postgres, gRPC)', function () {
  this.timeout(30_000);
  let idp: TestIdp;
  let db: TestDatabase;
  let vaults: VaultSidecar[];
  let clients: VaultClient[];
  let key: string;
  const secrets: string[] = [];

  before(async () => {
    idp = await startTestIdp({ rotateRefreshToken: true, accounts: { alice: { email: 'alice@example.test' }, bob: { email: 'bob@example.test' } } });
    db = await createTestDatabase('token_vault');
    const env = {
      TOKEN_TAP_KEYS: generateKeySpec('k1'),
      TOKEN_TAP_IDP_CONFIG: idpConfigFile(idp, IDP, SECRET_ENV),
      [SECRET_ENV]: idp.clientSecret,
    };
    // Two sidecars on one database, as two pods would be: refreshes must not overlap across them either.
    vaults = [await startVaultSidecar(db, env), await startVaultSidecar(db, env)];
    clients = vaults.map((vault) => vaultClient(vault.apiPort));
    key = (await createApiKey(db, 'billing-service', [IDP], ['get', 'list', 'refresh', 'revoke', 'delete'])).token;
    secrets.push(key, idp.clientSecret);
  });

  after(async () => {
    for (const client of clients ?? []) client.close();
    for (const vault of vaults ?? []) await vault.close();
    await idp?.close();
    await db?.drop();
  });

  it('20 concurrent RefreshGrant calls over two sidecars cause one upstream refresh; all get the same working access token; the rotated refresh token is stored and the old one is dead', async () => {
    const { login } = await loginIntoVault(idp, vaults[0]!.sidecar, IDP, { loginHint: 'alice' });
    const oldRefreshToken = login.tokens.refresh_token!;
    secrets.push(oldRefreshToken, login.tokens.access_token);
    // Connected first, so the 20 calls arrive together rather than behind channel set-up.
    for (const client of clients) await client.call('ListGrants', { idp: IDP }, key);
    const upstreamBefore = idp.tokenResponses.length;

    const results = await Promise.all(Array.from({ length: 20 }, (_, index) => clients[index % 2]!.call('RefreshGrant', { idp: IDP, subject: 'alice' }, key)));

    expect(idp.tokenResponses.length - upstreamBefore, 'refresh requests that reached the IdP').to.equal(1);
    const upstream = JSON.parse(idp.tokenResponses.at(-1)!.body.toString('utf8')) as { access_token: string; refresh_token: string };
    const accessTokens = new Set(results.map((result) => (result.grant as GrantMessage).access_token));
    expect([...accessTokens]).to.deep.equal([upstream.access_token]);
    expect(upstream.access_token).to.not.equal(login.tokens.access_token);
    expect(results.filter((result) => result.refreshed_by_this_call)).to.have.length(1);
    expect(await userinfoStatus(idp, upstream.access_token)).to.equal(200);

    const stored = (await vaults[1]!.sidecar.store.findGrant(IDP, 'alice'))!;
    expect(upstream.refresh_token).to.be.a('string').and.not.equal(oldRefreshToken);
    expect(stored.refreshToken).to.equal(upstream.refresh_token);
    expect(stored.accessToken).to.equal(upstream.access_token);
    secrets.push(upstream.access_token, upstream.refresh_token);

    let reuse: TokenCallError | undefined;
    await refreshAsOkta(idp, idp.tokenUrl, oldRefreshToken).catch((error: TokenCallError) => (reuse = error));
    expect(reuse?.received?.status).to.equal(400);
    expect(JSON.parse(reuse!.received!.body.toString('utf8')).error).to.equal('invalid_grant');
  });

  it('marks the grant revoked when the IdP answers invalid_grant, and then refuses to serve it', async () => {
    // The replayed refresh token above made oidc-provider revoke the whole grant (reuse detection).
    const refresh = clients[0]!.call('RefreshGrant', { idp: IDP, subject: 'alice' }, key);
    const error = (await refresh.catch((caught: grpc.ServiceError) => caught)) as grpc.ServiceError;
    expect(error.code).to.equal(grpc.status.FAILED_PRECONDITION);
    expect(error.details).to.contain('invalid_grant').and.contain('sign in again');
    const row = (await db.pool.query("SELECT status, access_token, refresh_token FROM grants WHERE idp = $1 AND subject = 'alice'", [IDP])).rows[0];
    expect(row).to.deep.equal({ status: 'revoked', access_token: null, refresh_token: null });
    expect(await statusOf(clients[1]!.call('GetGrant', { idp: IDP, subject: 'alice' }, key))).to.equal(grpc.status.FAILED_PRECONDITION);
  });

  it('serves GetGrant by subject or by email, with expiries, claims and no refresh token unless asked', async () => {
    const { login } = await loginIntoVault(idp, vaults[0]!.sidecar, IDP, { loginHint: 'bob' });
    secrets.push(login.tokens.access_token, login.tokens.refresh_token!);
    const bySubject = await clients[0]!.call('GetGrant', { idp: IDP, subject: 'bob' }, key);
    const byEmail = await clients[1]!.call('GetGrant', { idp: IDP, email: 'BOB@example.test' }, key);
    for (const { grant } of [bySubject, byEmail] as Array<{ grant: GrantMessage }>) {
      expect(grant).to.include({
        idp: IDP,
        subject: 'bob',
        status: 'GRANT_STATUS_ACTIVE',
        access_token: login.tokens.access_token,
        id_token: login.tokens.id_token,
      });
      expect(grant.refresh_token).to.equal('');
      expect(grant.has_refresh_token).to.equal(true);
      expect(fromProtoStruct(grant.id_token_claims)).to.include({ sub: 'bob', email: 'bob@example.test', email_verified: true });
      const expiresIn = (fromTimestamp(grant.access_token_expires_at)!.getTime() - Date.now()) / 1000;
      expect(expiresIn).to.be.within(3500, 3601);
    }
    expect(await statusOf(clients[0]!.call('GetGrant', { idp: IDP, email: 'nobody@example.test' }, key))).to.equal(grpc.status.NOT_FOUND);
    expect(await statusOf(clients[0]!.call('GetGrant', { idp: IDP }, key))).to.equal(grpc.status.INVALID_ARGUMENT);
  });

  it('refreshes in GetGrant first when the access token expires within the asked window, and not when it does not', async () => {
    // As if the IdP had issued a 10-second access token.
    const { login } = await loginIntoVault(idp, vaults[0]!.sidecar, IDP, { loginHint: 'bob', rewrite: (body) => (body.expires_in = 10) });
    secrets.push(login.tokens.access_token, login.tokens.refresh_token!);
    const upstreamBefore = idp.tokenResponses.length;
    const first = await clients[0]!.call('GetGrant', { idp: IDP, subject: 'bob', refresh_if_expires_within_seconds: 60 }, key);
    expect(first.refreshed).to.equal(true);
    expect(first.grant.access_token).to.not.equal(login.tokens.access_token);
    expect(await userinfoStatus(idp, first.grant.access_token)).to.equal(200);
    const second = await clients[1]!.call('GetGrant', { idp: IDP, subject: 'bob', refresh_if_expires_within_seconds: 60 }, key);
    expect(second.refreshed).to.equal(false);
    expect(second.grant.access_token).to.equal(first.grant.access_token);
    expect(idp.tokenResponses.length - upstreamBefore).to.equal(1);
    secrets.push(first.grant.access_token);
  });

  it('RevokeGrant revokes the tokens at the IdP (RFC 7009), then marks the grant revoked; a new login makes it active again', async () => {
    const { login } = await loginIntoVault(idp, vaults[0]!.sidecar, IDP, { loginHint: 'bob' });
    secrets.push(login.tokens.access_token, login.tokens.refresh_token!);
    expect(await userinfoStatus(idp, login.tokens.access_token)).to.equal(200);
    const revoked = await clients[0]!.call('RevokeGrant', { idp: IDP, subject: 'bob' }, key);
    expect(revoked).to.deep.include({ revoked_at_idp: true });
    expect(revoked.grant).to.include({ status: 'GRANT_STATUS_REVOKED', has_refresh_token: false });
    expect(await userinfoStatus(idp, login.tokens.access_token)).to.equal(401);
    const reuse = await refreshAsOkta(idp, idp.tokenUrl, login.tokens.refresh_token!).then(
      () => undefined,
      (error: TokenCallError) => error,
    );
    expect(reuse?.received?.status).to.equal(400);
    expect(await statusOf(clients[1]!.call('GetGrant', { idp: IDP, subject: 'bob' }, key))).to.equal(grpc.status.FAILED_PRECONDITION);

    await loginIntoVault(idp, vaults[0]!.sidecar, IDP, { loginHint: 'bob' });
    const again = await clients[1]!.call('GetGrant', { idp: IDP, subject: 'bob' }, key);
    expect(again.grant.status).to.equal('GRANT_STATUS_ACTIVE');
    secrets.push(again.grant.access_token);
  });

  it('ListGrants pages through grants in (idp, subject) order without tokens, limited to the IdPs of the key', async () => {
    await vaults[0]!.sidecar.store.recordCaptures([
      ...['p1', 'p2', 'p3', 'p4', 'p5'].map((subject) =>
        syntheticCapture(IDP, subject, { email: `${subject}@example.test`, tokens: syntheticTokens({ scope: ['openid'] }) }),
      ),
      syntheticCapture('other', 'p9', { email: 'p9@example.test', tokens: syntheticTokens({ scope: ['openid'] }) }),
    ]);
    const seen: string[] = [];
    let pageToken = '';
    let pages = 0;
    do {
      const page = await clients[0]!.call('ListGrants', { page_size: 2, page_token: pageToken }, key);
      for (const grant of page.grants) {
        expect(grant).to.not.have.any.keys('access_token', 'refresh_token', 'id_token', 'id_token_claims');
        seen.push(`${grant.idp}/${grant.subject}`);
      }
      pageToken = page.next_page_token;
      pages += 1;
    } while (pageToken && pages < 10);
    expect(seen).to.deep.equal([...seen].sort());
    expect(seen).to.include.members(['acme/p1', 'acme/p5', 'acme/alice', 'acme/bob']);
    expect(seen.filter((name) => name.startsWith('other/'))).to.deep.equal([]);
    expect(await statusOf(clients[0]!.call('ListGrants', { idp: 'other' }, key))).to.equal(grpc.status.PERMISSION_DENIED);
    expect(await statusOf(clients[0]!.call('ListGrants', { page_token: 'bm90IG91cnM' }, key))).to.equal(grpc.status.INVALID_ARGUMENT);
  });

  it('DeleteSubject deletes every grant of a user across IdPs by email, with their capture events, for a key allowed every IdP', async () => {
    await vaults[0]!.sidecar.store.recordCaptures([
      syntheticCapture(IDP, 'carol-acme', { email: 'Carol@Example.test', tokens: syntheticTokens({ scope: ['openid'] }) }),
      syntheticCapture('other', 'carol-other', { email: 'carol@example.test', tokens: syntheticTokens({ scope: ['openid'] }) }),
    ]);
    expect(await statusOf(clients[0]!.call('DeleteSubject', { email: 'carol@example.test' }, key))).to.equal(grpc.status.PERMISSION_DENIED);
    const everywhere = (await createApiKey(db, 'privacy-desk', ['*'], ['delete'])).token;
    secrets.push(everywhere);
    const result = await clients[1]!.call('DeleteSubject', { email: 'carol@example.test' }, everywhere);
    expect(result.deleted).to.deep.equal([
      { idp: IDP, subject: 'carol-acme' },
      { idp: 'other', subject: 'carol-other' },
    ]);
    expect(result.capture_events_deleted).to.equal(2);
    const left = await db.pool.query("SELECT count(*)::int AS n FROM capture_events WHERE subject LIKE 'carol-%'");
    expect(left.rows[0].n).to.equal(0);
  });

  it('writes one access_events row per call, naming the key, operation, grant and outcome, and never a token or key', async () => {
    const before = (await db.pool.query('SELECT max(id) AS id FROM access_events')).rows[0].id as string;
    const { id: keyId } = await db.pool.query("SELECT id FROM api_keys WHERE name = 'billing-service'").then((result) => result.rows[0]);
    // Each call's result is taken at once, so no rejection waits unhandled while another is awaited.
    const settle = (call: Promise<unknown>) =>
      call.then(
        () => 'ok',
        (error: grpc.ServiceError) => error.code,
      );
    const calls: Array<[string, Promise<unknown>]> = [
      ['GetGrant ok', settle(clients[0]!.call('GetGrant', { idp: IDP, subject: 'bob' }, key))],
      ['GetGrant not_found', settle(clients[0]!.call('GetGrant', { idp: IDP, subject: 'nobody' }, key))],
      ['GetGrant unauthenticated', settle(clients[1]!.call('GetGrant', { idp: IDP, subject: 'bob' }))],
      ['GetGrant permission_denied', settle(clients[1]!.call('GetGrant', { idp: 'other', subject: 'p9' }, key))],
      ['ListGrants ok', settle(clients[0]!.call('ListGrants', { idp: IDP }, key))],
      ['RevokeGrant invalid_argument', settle(clients[0]!.call('RevokeGrant', { idp: IDP }, key))],
    ];
    await Promise.all(calls.map(([, call]) => call));
    const { rows } = await db.pool.query('SELECT operation, outcome, api_key_id, caller, idp, subject, detail FROM access_events WHERE id > $1 ORDER BY id', [
      before,
    ]);
    expect(rows.map((row) => `${row.operation} ${row.outcome}`).sort()).to.deep.equal(calls.map(([name]) => name).sort());
    expect(rows.find((row) => row.outcome === 'ok' && row.operation === 'GetGrant')).to.include({
      api_key_id: keyId,
      caller: 'billing-service',
      idp: IDP,
      subject: 'bob',
    });
    expect(rows.find((row) => row.outcome === 'unauthenticated')).to.include({ api_key_id: null, detail: 'no API key presented' });
  });

  it('keeps every token, API key and client secret out of Postgres in plaintext and out of the logs', async () => {
    const dump = await dumpAllRowsAsText(db.pool);
    const logs = vaults.map((vault) => vault.logs()).join('\n');
    expect(secrets.length).to.be.greaterThan(8);
    for (const secret of secrets) {
      for (const form of plaintextForms(secret)) {
        expect(dump.includes(form), 'a secret in Postgres').to.equal(false);
        expect(logs.includes(form), 'a secret in the logs').to.equal(false);
      }
    }
    expect(logs).to.contain('TokenVault API ready');
  });
});
