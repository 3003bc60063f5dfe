// The Okta hook's match: email against real Postgres: every candidate grant is weighed in SQL
// (grants.vouched_email, migration 000007), so look-alike grants cannot push the real user out;
// what the column says follows the stored id_token through every merge.
import { expect } from 'chai';
import type { HookProvider } from '../../src/config/hook-file.js';
import { markRevoked } from '../../src/operations/revoke.js';
import { GrantFinder, type Lookup } from '../../src/hook/lookup.js';
import type { TokenHookRequest } from '../../src/hook/request.js';
import { generateKeySpec, parseKeyRing } from '../../src/keys/key-ring.js';
import { GrantStore } from '../../src/store/grants.js';
import { sealQuarantined } from '../../src/ingest/quarantine.js';
import { migrate } from '../../src/store/migrate.js';
import { syntheticCapture, syntheticTokens } from '../support/captures.js';
import { fakeJwt } from '../support/jwt.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';

const IDP = 'acme';
const strict: HookProvider = {
  oktaIdpId: '0oaS',
  idp: IDP,
  match: { kind: 'email' },
  identityClaims: new Map(),
  accessClaims: new Map(),
  requireGrant: true,
  allowUnverified: false,
  idpClaim: undefined,
};
const lax: HookProvider = { ...strict, oktaIdpId: '0oaL', allowUnverified: true };

describe('Okta hook match: email over every candidate (Postgres)', () => {
  let db: TestDatabase;
  let store: GrantStore;
  let finder: GrantFinder;
  const start = Date.now() - 3_600_000;

  before(async () => {
    db = await createTestDatabase('hook_email');
    await migrate(db.pool);
    store = new GrantStore(db.pool, parseKeyRing(generateKeySpec('k1')), sealQuarantined);
    finder = new GrantFinder({
      config: {
        authentication: { kind: 'header', name: 'authorization', value: 'x' },
        providers: new Map([
          [strict.oktaIdpId, strict],
          [lax.oktaIdpId, lax],
        ]),
        freshnessWaitMs: 0,
      },
      store,
      captures: { hasInFlight: () => false, waitForIdp: async () => true },
    });
  });
  after(async () => db?.drop());

  /** A login of `subject` whose id_token claims `email` (email_verified as given), `minute` minutes after the start. */
  async function login(
    subject: string,
    email: string,
    minute: number,
    options: { emailVerified?: boolean; verified?: boolean; idToken?: boolean } = {},
  ): Promise<void> {
    const claims = { sub: subject, email, email_verified: options.emailVerified ?? false };
    const idToken = options.idToken === false ? undefined : fakeJwt(claims);
    const capture = syntheticCapture(IDP, subject, {
      email,
      verified: options.verified ?? true,
      observedAt: new Date(start + minute * 60_000),
      tokens: syntheticTokens({ idToken, claims: idToken ? claims : undefined }),
    });
    expect((await store.recordCaptures([capture])).quarantined).to.deep.equal([]);
  }

  async function find(email: string, provider = strict): Promise<{ outcome: Lookup['outcome']; subject?: string }> {
    const request: TokenHookRequest = { oktaIdpId: provider.oktaIdpId, login: email, identityClaims: {}, accessClaims: {}, sessionCreatedAt: undefined };
    const found = await finder.find(request);
    return { outcome: found.outcome, ...('grant' in found ? { subject: found.grant.subject } : {}) };
  }

  async function lookAlikes(email: string, count: number, options: { verified: boolean }): Promise<void> {
    for (let index = 0; index < count; index += 1)
      await login(`${email}-mallory-${index}`, email.toUpperCase(), 10 + index, { emailVerified: false, verified: options.verified });
  }

  it('finds the genuine grant behind 12 newer grants claiming its email unverified', async () => {
    await login('ada', 'ada@example.test', 0, { emailVerified: true });
    await lookAlikes('ada@example.test', 12, { verified: true });
    expect(await find('Ada@Example.test')).to.deep.equal({ outcome: 'found', subject: 'ada' });
  });

  it('with allow_unverified, finds it behind 12 newer unverified grants claiming the email unverified', async () => {
    await login('bea', 'bea@example.test', 0, { emailVerified: true });
    await lookAlikes('bea@example.test', 12, { verified: false });
    expect(await find('bea@example.test', lax)).to.deep.equal({ outcome: 'found', subject: 'bea' });
  });

  it('keeps its outcomes: two vouched grants among many are ambiguous; none vouched is email_unverified on the newest', async () => {
    await login('cleo', 'cleo@example.test', 0, { emailVerified: true });
    await login('cleo-twin', 'CLEO@example.test', 1, { emailVerified: true });
    await lookAlikes('cleo@example.test', 12, { verified: true });
    expect((await find('cleo@example.test')).outcome).to.equal('ambiguous');
    await lookAlikes('dora@example.test', 3, { verified: true });
    expect(await find('dora@example.test')).to.deep.equal({ outcome: 'email_unverified', subject: 'dora@example.test-mallory-2' });
  });

  it('reads the id_token of rows written before migration 000007, and of rows whose id_token an older sidecar replaced', async () => {
    await login('eve', 'eve@example.test', 0, { emailVerified: true });
    await lookAlikes('eve@example.test', 12, { verified: true });
    // As a sidecar from before 000007 leaves a row: the column is not set.
    await db.pool.query("UPDATE grants SET vouched_email = NULL, vouched_email_checked_at = NULL WHERE subject = 'eve'");
    expect(await find('eve@example.test')).to.deep.equal({ outcome: 'found', subject: 'eve' });
    // Together with a recorded vouched grant: two, so ambiguous.
    await login('eve-twin', 'eve@example.test', 1, { emailVerified: true });
    expect((await find('eve@example.test')).outcome).to.equal('ambiguous');

    // An older sidecar stores a new id_token of eve-twin that no longer vouches, leaving the column
    // as it was: it is not believed (its stamp is not the id_token's), the id_token is read.
    const { rows } = await db.pool.query("SELECT vouched_email, vouched_email_checked_at FROM grants WHERE subject = 'eve-twin'");
    expect(rows[0].vouched_email).to.equal('eve@example.test');
    await login('eve-twin', 'eve@example.test', 30, { emailVerified: false });
    await db.pool.query("UPDATE grants SET vouched_email = $1, vouched_email_checked_at = $2 WHERE subject = 'eve-twin'", [
      rows[0].vouched_email,
      rows[0].vouched_email_checked_at,
    ]);
    expect(await find('eve@example.test')).to.deep.equal({ outcome: 'found', subject: 'eve' });
  });

  it('follows the id_token through merges: kept by a login without one and by an older one, replaced by a newer one, erased by a revocation', async () => {
    const vouched = async () => (await db.pool.query("SELECT vouched_email FROM grants WHERE subject = 'finn'")).rows[0].vouched_email as string;
    await login('finn', 'finn@example.test', 10, { emailVerified: true });
    expect(await vouched()).to.equal('finn@example.test');
    await login('finn', 'finn@example.test', 20, { idToken: false });
    await login('finn', 'finn@example.test', 5, { emailVerified: false });
    expect(await vouched()).to.equal('finn@example.test');
    expect(await find('finn@example.test')).to.deep.equal({ outcome: 'found', subject: 'finn' });
    await login('finn', 'finn@example.test', 30, { emailVerified: false });
    expect(await vouched()).to.equal('');
    expect(await find('finn@example.test')).to.deep.equal({ outcome: 'email_unverified', subject: 'finn' });
    await login('finn', 'finn@example.test', 40, { emailVerified: true });
    const client = await db.pool.connect();
    try {
      await markRevoked(client, IDP, 'finn');
    } finally {
      client.release();
    }
    const { rows } = await db.pool.query("SELECT vouched_email, vouched_email_checked_at, extras FROM grants WHERE subject = 'finn'");
    expect(rows[0]).to.deep.equal({ vouched_email: '', vouched_email_checked_at: null, extras: null });
    expect(await find('finn@example.test')).to.deep.equal({ outcome: 'no_grant' });
  });
});
