import { randomUUID } from 'node:crypto';
import { expect } from 'chai';
import type { Capture, TokenSet } from '../../src/capture/types.js';
import { DecryptError, generateKeySpec, parseKeyRing, seal } from '../../src/keys/key-ring.js';
import { migrate } from '../../src/store/migrate.js';
import { markRevoked } from '../../src/operations/revoke.js';
import { GrantStore } from '../../src/store/grants.js';
import { sealQuarantined } from '../../src/ingest/quarantine.js';
import { syntheticCapture, syntheticTokens } from '../support/captures.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';

/** A complete login at acme: access, refresh and id token. */
const tokens = (overrides: Partial<TokenSet> = {}) => syntheticTokens({ idToken: `id-${randomUUID()}`, scope: ['openid'], claims: { sub: 'x' }, ...overrides });
const stored = (subject: string, overrides: Partial<Capture> = {}) => syntheticCapture('acme', subject, { tokens: tokens(), ...overrides });

describe('store/grants (Postgres)', () => {
  let db: TestDatabase;
  before(async () => {
    db = await createTestDatabase('store');
    await migrate(db.pool);
  });
  after(async () => db?.drop());

  it('applies a capture once, however often the same batch is written', async () => {
    const store = new GrantStore(db.pool, parseKeyRing(generateKeySpec()), sealQuarantined);
    const capture = stored('replayed');
    await store.recordCaptures([capture]);
    await store.recordCaptures([capture, capture]);
    const { rows } = await db.pool.query("SELECT count(*)::int AS n FROM capture_events WHERE subject = 'replayed'");
    expect(rows[0].n).to.equal(1);
    expect((await store.findGrant('acme', 'replayed'))!.version).to.equal(1);
  });

  it('writes the rest of a batch when Postgres refuses one capture, and quarantines the refused one', async () => {
    const store = new GrantStore(db.pool, parseKeyRing(generateKeySpec()), sealQuarantined);
    const poisoned = stored('nul\u0000byte');
    const result = await store.recordCaptures([stored('before-poison'), poisoned, stored('after-poison')]);
    expect(result.quarantined).to.deep.equal([
      { captureId: poisoned.captureId, idp: 'acme', label: 'refused_by_postgres', reason: 'Postgres refused it (SQLSTATE 22021)', known: false },
    ]);
    expect(await store.findGrant('acme', 'before-poison')).to.not.equal(undefined);
    expect(await store.findGrant('acme', 'after-poison')).to.not.equal(undefined);
  });

  it('keeps a stored refresh token sealed under a key this ring lacks (a key rollout), instead of erasing it', async () => {
    const k1 = generateKeySpec('k1');
    const k2 = generateKeySpec('k2');
    // A new sidecar (k2 active) stores the first login; an old one (k1 only) the next, which has no refresh token.
    const first = stored('rolled', { tokens: tokens({ refreshToken: 'first-consent-refresh-token' }) });
    await new GrantStore(db.pool, parseKeyRing(`${k2},${k1}`), sealQuarantined).recordCaptures([first]);
    const next = stored('rolled', { tokens: tokens({ refreshToken: undefined, idToken: undefined }) });
    expect((await new GrantStore(db.pool, parseKeyRing(k1), sealQuarantined).recordCaptures([next])).quarantined).to.deep.equal([]);
    const grant = (await new GrantStore(db.pool, parseKeyRing(`${k2},${k1}`), sealQuarantined).findGrant('acme', 'rolled'))!;
    expect(grant).to.include({
      keyId: 'k1',
      accessToken: next.tokens!.accessToken,
      refreshToken: 'first-consent-refresh-token',
      idToken: first.tokens!.idToken,
    });
    const { rows } = await db.pool.query("SELECT key_id, refresh_token_key_id, id_token_key_id FROM grants WHERE subject = 'rolled'");
    expect(rows[0]).to.deep.equal({ key_id: 'k1', refresh_token_key_id: 'k2', id_token_key_id: 'k2' });
  });

  it('never quotes decrypted text when a stored field does not decode', async () => {
    const ring = parseKeyRing(generateKeySpec('k1'));
    const store = new GrantStore(db.pool, ring, sealQuarantined);
    await store.recordCaptures([stored('garbled')]);
    const canary = 'decrypted-canary-3b9f {not json';
    await db.pool.query("UPDATE grants SET extras = $1 WHERE subject = 'garbled'", [seal(ring, canary, { idp: 'acme', subject: 'garbled', field: 'extras' })]);
    const error = await store.findGrant('acme', 'garbled').then(
      () => undefined,
      (caught: unknown) => caught as Error,
    );
    expect(error).to.be.instanceOf(DecryptError);
    expect(`${error!.message} ${error!.stack}`).to.contain('extras of grant (acme, garbled)').and.not.contain('canary');
  });

  it('leaves a held grant sealed under a key this ring lacks held, and reports it, when its profile arrives', async () => {
    const k1 = generateKeySpec('k1');
    const fingerprintKey = Buffer.alloc(32, 7).toString('base64');
    const held = syntheticCapture('acme', undefined, { tokens: tokens({ idToken: undefined, claims: undefined }) });
    await new GrantStore(db.pool, parseKeyRing(`${generateKeySpec('k2')},${k1}`, fingerprintKey), sealQuarantined).recordCaptures([held]);
    const profile = syntheticCapture('acme', undefined, {
      outcome: 'profile',
      tokens: undefined,
      profile: { accessToken: held.tokens!.accessToken!, subject: 'held-user', email: undefined },
    });
    const result = await new GrantStore(db.pool, parseKeyRing(k1, fingerprintKey), sealQuarantined).recordCaptures([profile]);
    expect(result.heldUnreadable).to.deep.equal([{ captureId: profile.captureId, idp: 'acme', keyId: 'k2' }]);
    const { rows } = await db.pool.query('SELECT count(*)::int AS n FROM pending_grants WHERE capture_id = $1', [held.captureId]);
    expect(rows[0].n).to.equal(1);
  });

  it('fills in a refresh token from a login that arrives late, when nothing newer replaced it (first consent delayed on another sidecar)', async () => {
    const store = new GrantStore(db.pool, parseKeyRing(generateKeySpec('k1')), sealQuarantined);
    const now = Date.now();
    const firstConsent = stored('late-consent', { observedAt: new Date(now - 1_000), tokens: tokens({ refreshToken: 'first-consent-refresh-token' }) });
    const later = stored('late-consent', { observedAt: new Date(now), tokens: tokens({ refreshToken: undefined }) });
    await store.recordCaptures([later]);
    await store.recordCaptures([firstConsent]);
    const grant = (await store.findGrant('acme', 'late-consent'))!;
    // The newer login's access token stays; the only refresh token ever issued is kept.
    expect(grant).to.include({ accessToken: later.tokens!.accessToken, refreshToken: 'first-consent-refresh-token' });
    // A newer refresh token is never replaced by an older one arriving late.
    const newest = stored('late-consent', { observedAt: new Date(now + 1_000), tokens: tokens({ refreshToken: 'newest-refresh-token' }) });
    await store.recordCaptures([newest]);
    await store.recordCaptures([stored('late-consent', { observedAt: new Date(now - 500), tokens: tokens({ refreshToken: 'stale-refresh-token' }) })]);
    expect((await store.findGrant('acme', 'late-consent'))!).to.include({ accessToken: newest.tokens!.accessToken, refreshToken: 'newest-refresh-token' });
  });

  it('applies a refresh answer replayed from the outbox after a newer login without a refresh token', async () => {
    const store = new GrantStore(db.pool, parseKeyRing(generateKeySpec('k1')), sealQuarantined);
    const now = Date.now();
    await store.recordCaptures([stored('outbox-replay', { observedAt: new Date(now - 2_000), tokens: tokens({ refreshToken: 'spent-refresh-token' }) })]);
    const refreshAnswer = stored('outbox-replay', {
      observedAt: new Date(now - 1_000),
      obtainedByRefresh: true,
      tokens: tokens({ refreshToken: 'rotated-refresh-token' }),
    });
    // Its own transaction failed; then the user signed in again (no refresh token), then the pump replays it.
    const login = stored('outbox-replay', { observedAt: new Date(now), tokens: tokens({ refreshToken: undefined }) });
    await store.recordCaptures([login]);
    await store.recordCaptures([refreshAnswer]);
    expect((await store.findGrant('acme', 'outbox-replay'))!).to.include({ accessToken: login.tokens!.accessToken, refreshToken: 'rotated-refresh-token' });
  });

  it('keeps reading a refresh token of a row written before per-field key ids, after a login under another key', async () => {
    const k1 = generateKeySpec('k1');
    await new GrantStore(db.pool, parseKeyRing(k1), sealQuarantined).recordCaptures([
      stored('legacy-row', { tokens: tokens({ refreshToken: 'legacy-refresh-token' }) }),
    ]);
    // As a sidecar from before migration 000004 leaves it: no per-field key ids.
    await db.pool.query(
      "UPDATE grants SET refresh_token_key_id = NULL, id_token_key_id = NULL, refresh_token_observed_at = NULL, id_token_observed_at = NULL WHERE subject = 'legacy-row'",
    );
    const ring = parseKeyRing(`${generateKeySpec('k2')},${k1}`);
    await new GrantStore(db.pool, ring, sealQuarantined).recordCaptures([
      stored('legacy-row', { tokens: tokens({ refreshToken: undefined, idToken: undefined }) }),
    ]);
    expect((await new GrantStore(db.pool, ring, sealQuarantined).findGrant('acme', 'legacy-row'))!).to.include({
      keyId: 'k2',
      refreshToken: 'legacy-refresh-token',
    });
  });

  it('a late write that only fills in a refresh token does not stamp updated_at (it is no new login)', async () => {
    const store = new GrantStore(db.pool, parseKeyRing(generateKeySpec('k1')), sealQuarantined);
    const now = Date.now();
    await store.recordCaptures([stored('late-fill-stamp', { observedAt: new Date(now), tokens: tokens({ refreshToken: undefined }) })]);
    const before = (await store.findGrant('acme', 'late-fill-stamp'))!;
    await store.recordCaptures([stored('late-fill-stamp', { observedAt: new Date(now - 1_000), tokens: tokens({ refreshToken: 'late-refresh-token' }) })]);
    const after = (await store.findGrant('acme', 'late-fill-stamp'))!;
    expect(after.refreshToken).to.equal('late-refresh-token');
    expect(after.updatedAt.getTime()).to.equal(before.updatedAt.getTime());
  });

  it('a revocation forgets the key ids and capture times of the tokens it erases', async () => {
    const store = new GrantStore(db.pool, parseKeyRing(generateKeySpec('k1')), sealQuarantined);
    await store.recordCaptures([stored('revoked-keys')]);
    const client = await db.pool.connect();
    try {
      await markRevoked(client, 'acme', 'revoked-keys');
    } finally {
      client.release();
    }
    const { rows } = await db.pool.query(
      "SELECT refresh_token_key_id, id_token_key_id, refresh_token_observed_at, id_token_observed_at FROM grants WHERE subject = 'revoked-keys'",
    );
    expect(rows[0]).to.deep.equal({ refresh_token_key_id: null, id_token_key_id: null, refresh_token_observed_at: null, id_token_observed_at: null });
  });

  it('says which key id is missing when a grant cannot be read', async () => {
    await new GrantStore(db.pool, parseKeyRing(generateKeySpec('gone')), sealQuarantined).recordCaptures([stored('unreadable')]);
    const store = new GrantStore(db.pool, parseKeyRing(generateKeySpec('other')), sealQuarantined);
    try {
      await store.findGrant('acme', 'unreadable');
      expect.fail('should not decrypt');
    } catch (error) {
      expect((error as Error).message).to.contain('key id "gone"');
    }
  });

  it('writes a batch in order: the latest login per grant wins, and a refresh keeps the refresh token of an earlier login in the same batch', async () => {
    const store = new GrantStore(db.pool, parseKeyRing(generateKeySpec()), sealQuarantined);
    const firstA = stored('batch-a');
    const refreshA = stored('batch-a', { tokens: tokens({ refreshToken: undefined, idToken: undefined }) });
    const firstB = stored('batch-b');
    const secondB = stored('batch-b');
    await store.recordCaptures([firstA, firstB, refreshA, secondB]);
    const a = (await store.findGrant('acme', 'batch-a'))!;
    expect(a).to.include({ accessToken: refreshA.tokens!.accessToken, refreshToken: firstA.tokens!.refreshToken, idToken: firstA.tokens!.idToken });
    const b = (await store.findGrant('acme', 'batch-b'))!;
    // Each login is applied over the one before it, in order: two logins, two versions.
    expect(b).to.include({ accessToken: secondB.tokens!.accessToken, refreshToken: secondB.tokens!.refreshToken, version: 2 });
    const { rows } = await db.pool.query("SELECT count(*)::int AS n FROM capture_events WHERE subject IN ('batch-a', 'batch-b')");
    expect(rows[0].n).to.equal(4);
  });

  it('keeps the newer login when an older one arrives later (a replayed spool, another sidecar), and still records its event', async () => {
    const store = new GrantStore(db.pool, parseKeyRing(generateKeySpec()), sealQuarantined);
    const newer = stored('late-older', { observedAt: new Date() });
    const older = stored('late-older', { observedAt: new Date(Date.now() - 60_000) });
    await store.recordCaptures([newer]);
    await store.recordCaptures([older]);
    const grant = (await store.findGrant('acme', 'late-older'))!;
    expect(grant).to.include({ accessToken: newer.tokens!.accessToken, refreshToken: newer.tokens!.refreshToken, version: 1 });
    const { rows } = await db.pool.query("SELECT count(*)::int AS n FROM capture_events WHERE subject = 'late-older'");
    expect(rows[0].n).to.equal(2);
  });

  it('keeps a grant revoked against a login captured before the revocation, and lets a later login make it active again', async () => {
    const store = new GrantStore(db.pool, parseKeyRing(generateKeySpec()), sealQuarantined);
    await store.recordCaptures([stored('revoked-late', { observedAt: new Date(Date.now() - 120_000) })]);
    const capturedBeforeRevocation = stored('revoked-late', { observedAt: new Date(Date.now() - 60_000) });
    const client = await db.pool.connect();
    try {
      await markRevoked(client, 'acme', 'revoked-late');
    } finally {
      client.release();
    }
    await store.recordCaptures([capturedBeforeRevocation]);
    expect(await store.findGrant('acme', 'revoked-late')).to.include({ status: 'revoked', accessToken: null });
    const after = stored('revoked-late', { observedAt: new Date(Date.now() + 1_000) });
    await store.recordCaptures([after]);
    expect(await store.findGrant('acme', 'revoked-late')).to.include({ status: 'active', accessToken: after.tokens!.accessToken });
  });

  it('always stores tokens the sidecar obtained itself (a refresh), even when the stored login carries a later clock', async () => {
    const store = new GrantStore(db.pool, parseKeyRing(generateKeySpec()), sealQuarantined);
    await store.recordCaptures([stored('refresh-skew', { observedAt: new Date(Date.now() + 3_600_000) })]);
    const refreshed = stored('refresh-skew', { observedAt: new Date() });
    const client = await db.pool.connect();
    try {
      await store.writeObtainedTokens(client, refreshed);
    } finally {
      client.release();
    }
    expect(await store.findGrant('acme', 'refresh-skew')).to.include({
      accessToken: refreshed.tokens!.accessToken,
      refreshToken: refreshed.tokens!.refreshToken,
    });
  });

  it('keeps at most 200 characters of a detail, whoever wrote it', async () => {
    const store = new GrantStore(db.pool, parseKeyRing(generateKeySpec()), sealQuarantined);
    const refused = syntheticCapture('acme', undefined, {
      outcome: 'unparseable',
      tokens: undefined,
      detail: `unsupported content-encoding "${'z'.repeat(10_000)}"`,
    });
    await store.recordCaptures([refused]);
    await store.recordCaptureSummaries([{ ...refused, captureId: randomUUID(), count: 5 }]);
    const { rows } = await db.pool.query<{ detail: string }>("SELECT detail FROM capture_events WHERE capture_id = $1 OR (idp = 'acme' AND count = 5)", [
      refused.captureId,
    ]);
    expect(rows.map((row) => row.detail.length)).to.deep.equal([200, 200]);
  });

  it('stores no expiry for a lifetime or exp no Postgres date can hold (capture/ bounds them; this is behind them): nothing quarantined, the grants stored', async () => {
    const store = new GrantStore(db.pool, parseKeyRing(generateKeySpec()), sealQuarantined);
    // 1e300 made an invalid Date (SQLSTATE 22007); -8.64e12 s is a valid JS Date before Postgres's first (22008).
    const huge = stored('huge-lifetimes', { tokens: tokens({ expiresIn: 1e300, refreshExpiresIn: 1e300, claims: { sub: 'huge-lifetimes', exp: 1e300 } }) });
    const early = stored('early-exp', {
      tokens: tokens({ expiresIn: Number.MAX_VALUE, refreshExpiresIn: 8.64e12, claims: { sub: 'early-exp', exp: -8.64e12 } }),
    });
    const normal = stored('normal-lifetimes', {
      tokens: tokens({ expiresIn: 3600, refreshExpiresIn: 86_400, claims: { sub: 'normal-lifetimes', exp: 4102444800 } }),
    });
    const result = await store.recordCaptures([huge, early, normal]);
    expect(result.quarantined).to.deep.equal([]);
    const quarantined = await db.pool.query('SELECT count(*)::int AS n FROM quarantined_captures WHERE capture_id = ANY($1::uuid[])', [
      [huge.captureId, early.captureId, normal.captureId],
    ]);
    expect(quarantined.rows[0].n).to.equal(0);
    for (const subject of ['huge-lifetimes', 'early-exp']) {
      const grant = (await store.findGrant('acme', subject))!;
      expect(grant, subject).to.include({ accessTokenExpiresAt: null, refreshTokenExpiresAt: null, idTokenExpiresAt: null });
      expect(grant.accessToken, subject).to.be.a('string');
    }
    const kept = (await store.findGrant('acme', 'normal-lifetimes'))!;
    expect(kept.accessTokenExpiresAt!.getTime()).to.equal(normal.observedAt.getTime() + 3_600_000);
    expect(kept.refreshTokenExpiresAt!.getTime()).to.equal(normal.observedAt.getTime() + 86_400_000);
    expect(kept.idTokenExpiresAt!.toISOString()).to.equal('2100-01-01T00:00:00.000Z');
  });
});
