// What a spooled record says of its own verification is no proof (the security review): anyone with
// TOKEN_TAP_KEYS and write access to a spool can frame a record claiming `verified`. Through the real
// spool, pump, verification step and Postgres: a login claiming it is stored unverified unless the
// step verified it in this process, and a refresh's answer is verified only as far as the grant it
// refreshes is (read under the row lock), never more, and never for a grant it creates.
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import type { Capture } from '../../src/capture/types.js';
import { CaptureVerifier } from '../../src/idp/verify.js';
import { CapturePump } from '../../src/ingest/pump.js';
import { StoreState } from '../../src/ingest/postgres-availability.js';
import { CaptureSpool } from '../../src/ingest/spool.js';
import { generateKeySpec, parseKeyRing } from '../../src/keys/key-ring.js';
import { createMetrics } from '../../src/ops/metrics.js';
import { GrantStore } from '../../src/store/grants.js';
import { sealQuarantined } from '../../src/ingest/quarantine.js';
import { migrate } from '../../src/store/migrate.js';
import { withTransaction } from '../../src/store/pool.js';
import { syntheticCapture, syntheticTokens } from '../support/captures.js';
import { fakeJwt } from '../support/jwt.js';
import { memoryLogger } from '../support/memory-log.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';

const ring = parseKeyRing(generateKeySpec('k1'));

/** A refresh's answer as the vault spools it (its outbox), claiming `verified`, with a new id_token. */
function refreshAnswer(subject: string, verified: boolean): Capture {
  const idToken = fakeJwt({ iss: 'https://acme.example', sub: subject, aud: 'okta', exp: Math.floor(Date.now() / 1000) + 3600 });
  return syntheticCapture('acme', subject, { issuer: undefined, clientId: undefined, tokens: syntheticTokens({ idToken }), verified, obtainedByRefresh: true });
}

describe('verified is proved in this process, never taken from a record (integration)', function () {
  this.timeout(60_000);
  let db: TestDatabase;
  let dir: string;

  beforeEach(async () => {
    db = await createTestDatabase('verified_claims');
    await migrate(db.pool);
    dir = mkdtempSync(path.join(os.tmpdir(), 'token-tap-verified-claims-'));
  });
  afterEach(async () => {
    await db.drop();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Spools `captures` (as a planted record would be) and lets the sidecar's pump and verification step write them. */
  async function throughThePump(captures: Capture[], verifier = true): Promise<void> {
    const { logger } = memoryLogger('silent');
    const metrics = createMetrics();
    const spool = await CaptureSpool.open({ dir, maxBytes: 16 * 1024 * 1024, fsyncIntervalMs: 2, keyRing: ring, logger, metrics });
    for (const capture of captures) expect(await spool.appendDurable(capture)).to.equal(true);
    const state = new StoreState({ pool: db.pool, logger, metrics });
    await state.prepare();
    // As the sidecar has it with no issuer for `acme` in TOKEN_TAP_IDP_CONFIG.
    const verification = verifier ? { verification: new CaptureVerifier({ idps: new Map(), cooldownMs: 0, maxWaitMs: 0 }) } : {};
    const pump = new CapturePump({
      spool,
      writer: new GrantStore(db.pool, ring, sealQuarantined),
      store: state,
      logger,
      metrics,
      gatherMs: 0,
      ...verification,
    });
    pump.start();
    try {
      expect(await pump.drain(10_000)).to.equal(true);
    } finally {
      await pump.close();
      await spool.close();
    }
  }

  async function verifiedOf(subject: string): Promise<boolean | undefined> {
    const { rows } = await db.pool.query<{ verified: boolean }>("SELECT verified FROM grants WHERE idp = 'acme' AND subject = $1", [subject]);
    return rows[0]?.verified;
  }

  it('a spooled login claiming verified, of an IdP with no issuer configured, is stored unverified (with a verification step and without one)', async () => {
    const idToken = fakeJwt({ iss: 'https://acme.example', sub: 'mallory', aud: 'okta' });
    await throughThePump([syntheticCapture('acme', 'mallory', { tokens: syntheticTokens({ idToken }), verified: true })]);
    expect(await verifiedOf('mallory')).to.equal(false);
    await throughThePump([syntheticCapture('acme', 'trent', { tokens: syntheticTokens({ idToken }), verified: true })], false);
    expect(await verifiedOf('trent')).to.equal(false);
  });

  it('a refresh answer claiming verified leaves an unverified grant unverified, creates none verified, and keeps a verified grant verified', async () => {
    const store = new GrantStore(db.pool, ring, sealQuarantined);
    // An unverified grant (its IdP has no issuer), and one verified by the step in an earlier process.
    await throughThePump([syntheticCapture('acme', 'unverified-user')]);
    await withTransaction(db.pool, async (client) => void (await store.upsertGrant(client, syntheticCapture('acme', 'verified-user', { verified: true }))));
    expect(await verifiedOf('unverified-user')).to.equal(false);
    expect(await verifiedOf('verified-user')).to.equal(true);

    await throughThePump([refreshAnswer('unverified-user', true), refreshAnswer('no-grant-user', true), refreshAnswer('verified-user', true)]);
    expect(await verifiedOf('unverified-user'), 'an unverified grant refreshed').to.equal(false);
    expect(await verifiedOf('no-grant-user'), 'a grant a refresh answer creates').to.equal(false);
    expect(await verifiedOf('verified-user'), 'a verified grant refreshed').to.equal(true);

    // Applied at once by the vault (writeObtainedTokens, under the row lock) too.
    await withTransaction(db.pool, async (client) => store.writeObtainedTokens(client, refreshAnswer('unverified-user', true)));
    expect(await verifiedOf('unverified-user')).to.equal(false);
    await withTransaction(db.pool, async (client) => store.writeObtainedTokens(client, refreshAnswer('verified-user', false)));
    expect(await verifiedOf('verified-user'), 'a refresh of an unverified source makes it unverified').to.equal(false);
  });
});
