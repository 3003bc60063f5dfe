// A refresh token wherever the IdP put it (Slack's authed_user, a field deeper in the response)
// reaches only callers allowed read_refresh_token, over the real TokenVault gRPC API; revoking a
// grant erases its extras in Postgres, deleting it removes the row.
import { randomBytes } from 'node:crypto';
import { expect } from 'chai';
import { fromProtoStruct } from '../../src/api/wire.js';
import { generateKeySpec } from '../../src/keys/key-ring.js';
import { loadMigrations, migrate } from '../../src/store/migrate.js';
import { startTestIdp, type TestIdp } from '../support/oidc-idp.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { createApiKey, idpConfigFile, loginIntoVault, startVaultSidecar, vaultClient, type VaultClient, type VaultSidecar } from '../support/token-vault.js';

const IDP = 'slackish';
const SECRET_ENV = 'TOKEN_TAP_TEST_SLACKISH_SECRET';
const slackToken = (prefix: string) => `${prefix}-${randomBytes(20).toString('hex')}`;

describe('TokenVault API: refresh tokens in extras (Slack-shaped responses, gRPC, Postgres)', function () {
  this.timeout(30_000);
  let idp: TestIdp;
  let db: TestDatabase;
  let vault: VaultSidecar;
  let client: VaultClient;
  let getOnly: string;
  let withRefresh: string;
  let operator: string;

  before(async () => {
    idp = await startTestIdp({ accounts: { ada: { email: 'ada@example.test' }, grace: { email: 'grace@example.test' } } });
    db = await createTestDatabase('vault_extras');
    vault = await startVaultSidecar(db, {
      TOKEN_TAP_KEYS: generateKeySpec('k1'),
      TOKEN_TAP_IDP_CONFIG: idpConfigFile(idp, IDP, SECRET_ENV),
      [SECRET_ENV]: idp.clientSecret,
    });
    client = vaultClient(vault.apiPort);
    getOnly = (await createApiKey(db, 'dashboard', [IDP], ['get'])).token;
    withRefresh = (await createApiKey(db, 'sync-job', [IDP], ['get', 'read_refresh_token'])).token;
    operator = (await createApiKey(db, 'operator', [IDP], ['revoke', 'delete'])).token;
  });

  after(async () => {
    client?.close();
    await vault?.close();
    await idp?.close();
    await db?.drop();
  });

  it('user scopes only: the tokens sit in authed_user, a rotation token deeper; a get-only key sees none of them, a read_refresh_token key sees them all', async () => {
    const deep = slackToken('xoxe-1');
    const listed = slackToken('xoxe-1');
    const webhook = `https://hooks.slack.example/services/T0/B0/${slackToken('hook')}`;
    let userRefreshToken = '';
    await loginIntoVault(idp, vault.sidecar, IDP, {
      loginHint: 'ada',
      // Slack's oauth.v2.access with user scopes only: no top-level access_token; the user's tokens
      // (here the IdP's real ones) under authed_user; more tokens deeper, under names of Slack's.
      rewrite: (body) => {
        userRefreshToken = body.refresh_token as string;
        body.authed_user = {
          id: 'U0ADA',
          scope: 'identity.basic',
          access_token: body.access_token,
          refresh_token: body.refresh_token,
          token_type: 'user',
          expires_in: 43200,
        };
        delete body.access_token;
        delete body.refresh_token;
        body.ok = true;
        body.team = { id: 'T0', name: 'Fixture', rotation: { next: { 'Refresh-Token': deep, issued: 1 } } };
        body.installations = [{ id: 'I1', bot: { bot_refresh_token: listed, bot_user_id: 'U0BOT' } }];
        body.incoming_webhook = { channel: '#general', url: webhook };
      },
    });
    expect(userRefreshToken).to.have.length.above(10);
    const secrets = [deep, listed, webhook, userRefreshToken];

    const restricted = await client.call('GetGrant', { idp: IDP, subject: 'ada' }, getOnly);
    const serialized = JSON.stringify(restricted);
    for (const secret of secrets) expect(serialized.includes(secret), 'a refresh token or secret in the answer to a get-only key').to.equal(false);
    // What is not a token stays, and so does the token's metadata.
    expect(fromProtoStruct(restricted.grant.extras)).to.deep.equal({
      ok: true,
      id: 'U0ADA',
      team: { id: 'T0', name: 'Fixture', rotation: { next: { issued: 1 } } },
      installations: [{ id: 'I1', bot: { bot_user_id: 'U0BOT' } }],
    });
    expect(restricted.grant.access_token).to.have.length.above(10);

    // A key with read_refresh_token that does not ask for the refresh token is not given it in extras either.
    const notAsked = JSON.stringify(await client.call('GetGrant', { idp: IDP, subject: 'ada' }, withRefresh));
    for (const secret of secrets) expect(notAsked.includes(secret), 'a refresh token not asked for').to.equal(false);

    const full = await client.call('GetGrant', { idp: IDP, subject: 'ada', include_refresh_token: true }, withRefresh);
    expect(full.grant.refresh_token).to.equal(userRefreshToken);
    const extras = fromProtoStruct(full.grant.extras) as any;
    expect(extras.team.rotation.next['Refresh-Token']).to.equal(deep);
    expect(extras.installations[0].bot.bot_refresh_token).to.equal(listed);
    expect(extras.incoming_webhook.url).to.equal(webhook);
  });

  it('bot and user tokens: authed_user.refresh_token stays in extras, and only a read_refresh_token key sees it', async () => {
    const userAccess = slackToken('xoxp');
    const userRefresh = slackToken('xoxe-1');
    await loginIntoVault(idp, vault.sidecar, IDP, {
      loginHint: 'grace',
      rewrite: (body) => {
        body.authed_user = { id: 'U0GRACE', access_token: userAccess, refresh_token: userRefresh, token_type: 'user' };
      },
    });
    const restricted = JSON.stringify(await client.call('GetGrant', { idp: IDP, email: 'grace@example.test' }, getOnly));
    expect(restricted).to.not.contain(userRefresh);
    expect(restricted).to.not.contain(userAccess);
    expect(restricted).to.contain('U0GRACE');
    const full = await client.call('GetGrant', { idp: IDP, subject: 'grace', include_refresh_token: true }, withRefresh);
    expect((fromProtoStruct(full.grant.extras) as any).authed_user).to.include({ access_token: userAccess, refresh_token: userRefresh });
  });

  it('RevokeGrant erases the extras with the tokens (the row says NULL); DeleteSubject removes the row', async () => {
    const before = await db.pool.query("SELECT extras IS NOT NULL AS has_extras FROM grants WHERE idp = $1 AND subject = 'ada'", [IDP]);
    expect(before.rows).to.deep.equal([{ has_extras: true }]);
    const revoked = await client.call('RevokeGrant', { idp: IDP, subject: 'ada' }, operator);
    expect(revoked.grant.status).to.equal('GRANT_STATUS_REVOKED');
    const { rows } = await db.pool.query("SELECT status, extras, access_token, refresh_token, id_token FROM grants WHERE idp = $1 AND subject = 'ada'", [IDP]);
    expect(rows).to.deep.equal([{ status: 'revoked', extras: null, access_token: null, refresh_token: null, id_token: null }]);

    await client.call('DeleteSubject', { idp: IDP, subject: 'grace' }, operator);
    const left = await db.pool.query("SELECT count(*)::int AS n FROM grants WHERE idp = $1 AND subject = 'grace'", [IDP]);
    expect(left.rows[0].n).to.equal(0);
  });
});

describe('migration 000007 (Postgres)', () => {
  it('erases the extras of grants revoked before it, and only theirs', async () => {
    const db = await createTestDatabase('extras_migration');
    try {
      await migrate(
        db.pool,
        loadMigrations().filter((migration) => migration.version < 7),
      );
      for (const [subject, status] of [
        ['gone', 'revoked'],
        ['here', 'active'],
      ]) {
        await db.pool.query("INSERT INTO grants (idp, subject, key_id, extras, status, captured_at) VALUES ('acme', $1, 'k1', '\\x01', $2, now())", [
          subject,
          status,
        ]);
      }
      await migrate(db.pool);
      const { rows } = await db.pool.query('SELECT subject, extras IS NULL AS erased FROM grants ORDER BY subject');
      expect(rows).to.deep.equal([
        { subject: 'gone', erased: true },
        { subject: 'here', erased: false },
      ]);
    } finally {
      await db.drop();
    }
  });
});
