// Erasure that sticks: DeleteSubject / `grants delete` writes a tombstone in its transaction, and
// the capture writer drops any capture of that user observed at or before it, however long it waited
// (in a spool, as a held grant, in a batch in flight, in the quarantine). A capture observed after it
// is a new login. The erasure reaches the quarantine (by the keyed subject fingerprint of each row),
// and an erasure at every IdP deletes the user's events at each IdP before it holds capture batches off.
// Real Postgres, the real sidecar (spool, pump, GrantStore) and its real gRPC API, the real CLI.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { generateKeySpec, parseKeyRing } from '../../src/keys/key-ring.js';
import { GrantStore } from '../../src/store/grants.js';
import { sealQuarantined } from '../../src/ingest/quarantine.js';
import { startBlackholeProxy } from '../support/blackhole-proxy.js';
import { syntheticCapture } from '../support/captures.js';
import { startInProcessSidecar } from '../support/in-process.js';
import { metricValue } from '../support/metrics.js';
import { waitFor } from '../support/ports.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { runCli } from '../support/sidecar.js';
import { createApiKey, startVaultSidecar, vaultClient, type VaultClient, type VaultSidecar } from '../support/token-vault.js';

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
/** Random text does not compress: 3,000 characters exceed a btree entry of grants_by_email, so the login is quarantined. */
const overlongEmail = () => `${randomBytes(2_250).toString('base64')}@example.test`;
const DAY_MS = 86_400_000;

describe('erasure that sticks: tombstones (integration)', function () {
  this.timeout(60_000);
  let db: TestDatabase;
  let vault: VaultSidecar;
  let client: VaultClient;
  let store: GrantStore;
  let key: string;
  const keys = generateKeySpec('k1');

  before(async () => {
    db = await createTestDatabase('erasure');
    vault = await startVaultSidecar(db, { TOKEN_TAP_KEYS: keys });
    client = vaultClient(vault.apiPort);
    store = new GrantStore(db.pool, parseKeyRing(keys), sealQuarantined);
    key = (await createApiKey(db, 'eraser', ['*'], ['*'])).token;
  });
  after(async () => {
    client?.close();
    await vault?.close();
    await db?.drop();
  });

  /** Which of `captures` are in the quarantine. */
  const stillQuarantined = async (...captures: Array<{ captureId: string }>) =>
    (
      await db.pool.query<{ capture_id: string }>('SELECT capture_id FROM quarantined_captures WHERE capture_id = ANY($1::uuid[])', [
        captures.map((capture) => capture.captureId),
      ])
    ).rows.map((row) => row.capture_id);

  /** The outcome recorded for a capture, once the writer has it. */
  const outcomeOf = (captureId: string) =>
    waitFor(
      `capture ${captureId} in Postgres`,
      async () => (await db.pool.query<{ outcome: string }>('SELECT outcome FROM capture_events WHERE capture_id = $1', [captureId])).rows[0]?.outcome,
    );
  const erasedCount = () => metricValue(vault.sidecar.metrics, 'captures', { outcome: 'erased' });

  it('a capture observed before DeleteSubject but written after it leaves no grant; one observed after it is a new login', async () => {
    const first = syntheticCapture('acme', 'alice');
    vault.sidecar.pump.enqueue(first);
    expect(await outcomeOf(first.captureId)).to.equal('stored');
    const observedBefore = syntheticCapture('acme', 'alice');
    await pause(5);
    const result = await client.call('DeleteSubject', { idp: 'acme', subject: 'alice' }, key);
    expect(result.deleted).to.deep.equal([{ idp: 'acme', subject: 'alice' }]);
    const erasedBefore = await erasedCount();

    vault.sidecar.pump.enqueue(observedBefore);
    expect(await outcomeOf(observedBefore.captureId), 'the late capture').to.equal('erased');
    expect(await store.findGrant('acme', 'alice'), 'grant after the late capture').to.equal(undefined);
    expect((await erasedCount()) - erasedBefore, 'token_tap_captures_total{outcome="erased"}').to.equal(1);

    await pause(5);
    const observedAfter = syntheticCapture('acme', 'alice');
    vault.sidecar.pump.enqueue(observedAfter);
    expect(await outcomeOf(observedAfter.captureId), 'a login after the erasure').to.equal('stored');
    expect((await store.findGrant('acme', 'alice'))?.accessToken).to.equal(observedAfter.tokens!.accessToken);
  });

  it('DeleteSubject for every IdP also stops a capture at an IdP where the user had no grant yet', async () => {
    const elsewhere = syntheticCapture('other', 'bob');
    await pause(5);
    await client.call('DeleteSubject', { subject: 'bob' }, key);
    vault.sidecar.pump.enqueue(elsewhere);
    expect(await outcomeOf(elsewhere.captureId)).to.equal('erased');
    expect(await store.findGrant('other', 'bob')).to.equal(undefined);
    const { rows } = await db.pool.query("SELECT idp FROM tombstones WHERE subject = 'bob'");
    expect(rows).to.deep.equal([{ idp: '*' }]);
  });

  it('held grants too: a token response without a user, observed before the erasure, is not linked to the erased user by a later profile', async () => {
    // Held (no id_token), waiting for its profile call.
    const held = syntheticCapture('acme', undefined);
    vault.sidecar.pump.enqueue(held);
    expect(await outcomeOf(held.captureId)).to.equal('no_subject');
    // A profile observed before the erasure, of another token of the user: it must leave no hint behind.
    const otherToken = syntheticCapture('acme', undefined);
    const earlyProfile = syntheticCapture('acme', undefined, {
      outcome: 'profile',
      tokens: undefined,
      profile: { accessToken: otherToken.tokens!.accessToken!, subject: 'carol', email: undefined },
    });
    await pause(5);
    await client.call('DeleteSubject', { idp: 'acme', subject: 'carol' }, key);

    const profile = syntheticCapture('acme', undefined, {
      outcome: 'profile',
      tokens: undefined,
      profile: { accessToken: held.tokens!.accessToken!, subject: 'carol', email: undefined },
    });
    vault.sidecar.pump.enqueue(profile);
    vault.sidecar.pump.enqueue(earlyProfile);
    vault.sidecar.pump.enqueue(otherToken);
    expect(await outcomeOf(profile.captureId), 'the profile naming the erased user').to.equal('erased');
    expect(await outcomeOf(earlyProfile.captureId), 'the profile observed before the erasure').to.equal('erased');
    expect(await outcomeOf(otherToken.captureId), 'its token response, with no hint to link it').to.equal('no_subject');
    expect(await outcomeOf(held.captureId), 'the held grant').to.equal('erased');
    expect(await store.findGrant('acme', 'carol')).to.equal(undefined);
    const { rows } = await db.pool.query<{ n: number }>(
      "SELECT (SELECT count(*) FROM pending_grants WHERE capture_id = $1)::int + (SELECT count(*) FROM subject_hints WHERE subject = 'carol')::int AS n",
      [held.captureId],
    );
    expect(rows[0]!.n, 'held grant and hints of the erased user left').to.equal(0);
  });

  it("a capture that waits in a sidecar's spool across `grants delete` (its Postgres away meanwhile) is dropped when it is written", async () => {
    const before = syntheticCapture('acme', 'dave');
    vault.sidecar.pump.enqueue(before);
    expect(await outcomeOf(before.captureId)).to.equal('stored');
    // A second sidecar whose Postgres is unreachable: the login waits in its spool.
    const direct = new URL(db.url);
    const proxy = await startBlackholeProxy({ host: direct.hostname, port: Number(direct.port || 5432) });
    proxy.blackhole();
    const proxied = new URL(db.url);
    proxied.host = `127.0.0.1:${proxy.port}`;
    const spooling = await startInProcessSidecar({
      DATABASE_URL: proxied.toString(),
      TOKEN_TAP_KEYS: keys,
      TOKEN_TAP_API_LISTEN: 'off',
      TOKEN_TAP_PG_CONNECT_TIMEOUT_MS: '300',
    });
    try {
      const waiting = syntheticCapture('acme', 'dave');
      spooling.sidecar.pump.enqueue(waiting);
      await waitFor('the login fsynced in the spool', async () => ((await metricValue(spooling.sidecar.metrics, 'spoolAppended')) >= 1 ? true : undefined));
      await pause(5);
      const deleted = await runCli(['grants', 'delete', '--idp', 'acme', '--subject', 'dave'], { DATABASE_URL: db.url });
      expect(deleted.code, deleted.stderr).to.equal(0);
      expect(JSON.parse(deleted.stdout).deleted).to.deep.equal([{ idp: 'acme', subject: 'dave' }]);
      expect(spooling.sidecar.pump.depth, 'still in the spool at the erasure').to.equal(1);
      proxy.heal();
      expect(
        await waitFor(
          'the spooled login written',
          async () =>
            (await db.pool.query<{ outcome: string }>('SELECT outcome FROM capture_events WHERE capture_id = $1', [waiting.captureId])).rows[0]?.outcome,
          30_000,
        ),
      ).to.equal('erased');
      expect(await store.findGrant('acme', 'dave')).to.equal(undefined);
      expect(await metricValue(spooling.sidecar.metrics, 'captures', { outcome: 'erased' })).to.equal(1);
    } finally {
      await spooling.close();
      await proxy.close();
    }
  });

  it('an erasure waits for a capture batch in flight, so that batch cannot write the grant back after the DELETE', async () => {
    // An uncommitted row of the same grant holds the writer's upsert in the middle of its batch
    // (after it looked for tombstones). The erasure must wait for the batch, then delete what it wrote.
    const blocker = await db.pool.connect();
    try {
      await blocker.query('BEGIN');
      await blocker.query("INSERT INTO grants (idp, subject, key_id, captured_at) VALUES ('acme', 'eve', 'k1', now())");
      const inFlight = syntheticCapture('acme', 'eve');
      vault.sidecar.pump.enqueue(inFlight);
      await waitFor('the writer waiting in its upsert', async () =>
        (
          await db.pool.query(
            "SELECT 1 FROM pg_stat_activity WHERE application_name = 'token-tap' AND wait_event_type = 'Lock' AND query LIKE '%INSERT INTO grants%'",
          )
        ).rowCount
          ? true
          : undefined,
      );
      await pause(5);
      const erasure = client.call('DeleteSubject', { idp: 'acme', subject: 'eve' }, key);
      await pause(300);
      await blocker.query('ROLLBACK');
      const result = await erasure;
      await waitFor('the batch done', async () => (vault.sidecar.pump.depth === 0 ? true : undefined));
      expect(result.deleted, 'what the erasure deleted').to.deep.equal([{ idp: 'acme', subject: 'eve' }]);
      expect(await store.findGrant('acme', 'eve'), 'grant after the erasure').to.equal(undefined);
    } finally {
      await blocker.query('ROLLBACK').catch(() => undefined);
      blocker.release();
    }
  });

  it("DeleteSubject deletes the quarantined captures of the user (a 3,000-character email), at its IdP and then at every IdP; other users' stay", async () => {
    const mine = syntheticCapture('acme', 'frank', { email: overlongEmail() });
    const mineElsewhere = syntheticCapture('other', 'frank', { email: overlongEmail() });
    const someoneElse = syntheticCapture('acme', 'frances', { email: overlongEmail() });
    const written = await store.recordCaptures([mine, mineElsewhere, someoneElse]);
    expect(written.quarantined.map((entry) => entry.captureId)).to.have.members([mine.captureId, mineElsewhere.captureId, someoneElse.captureId]);
    // The row names its user by a keyed fingerprint only, never the subject itself.
    const { rows } = await db.pool.query<{ subject_fp: string }>('SELECT subject_fp FROM quarantined_captures WHERE capture_id = $1', [mine.captureId]);
    expect(rows[0]!.subject_fp).to.match(/^k1:[A-Za-z0-9_-]{32}$/);

    const atAcme = await client.call('DeleteSubject', { idp: 'acme', subject: 'frank' }, key);
    expect(atAcme.deleted).to.deep.equal([]);
    expect(await stillQuarantined(mine, mineElsewhere, someoneElse)).to.have.members([mineElsewhere.captureId, someoneElse.captureId]);
    const { rows: audit } = await db.pool.query<{ detail: string }>(
      "SELECT detail FROM access_events WHERE operation = 'DeleteSubject' AND subject = 'frank' ORDER BY id",
    );
    expect(audit[0]!.detail).to.contain('1 quarantined captures');

    await client.call('DeleteSubject', { subject: 'frank' }, key);
    expect(await stillQuarantined(mine, mineElsewhere, someoneElse)).to.deep.equal([someoneElse.captureId]);
  });

  it("`grants delete` deletes the user's quarantined captures with TOKEN_TAP_KEYS; without it, while the quarantine holds captures, it refuses and deletes nothing", async () => {
    const login = syntheticCapture('acme', 'gus');
    const quarantined = syntheticCapture('acme', 'gus', { email: overlongEmail() });
    expect((await store.recordCaptures([login, quarantined])).quarantined.map((entry) => entry.captureId)).to.deep.equal([quarantined.captureId]);

    const refused = await runCli(['grants', 'delete', '--all-idps', '--subject', 'gus'], { DATABASE_URL: db.url, TOKEN_TAP_KEYS: '' });
    expect(refused.code).to.equal(1);
    expect(refused.stderr).to.contain('set TOKEN_TAP_KEYS').and.contain('nothing was deleted');
    expect(await store.findGrant('acme', 'gus'), 'the grant after the refusal').to.not.equal(undefined);
    expect(await stillQuarantined(quarantined)).to.deep.equal([quarantined.captureId]);

    const deleted = await runCli(['grants', 'delete', '--all-idps', '--subject', 'gus'], { DATABASE_URL: db.url, TOKEN_TAP_KEYS: keys });
    expect(deleted.code, deleted.stderr).to.equal(0);
    expect(JSON.parse(deleted.stdout)).to.deep.include({ deleted: [{ idp: 'acme', subject: 'gus' }], quarantined_captures_deleted: 1 });
    expect(await stillQuarantined(quarantined)).to.deep.equal([]);
  });

  it('a capture of an erased user, observed before the erasure, that would be quarantined (its verification threw) is dropped instead', async () => {
    const observedBefore = syntheticCapture('acme', 'ivy');
    await pause(5);
    await client.call('DeleteSubject', { idp: 'acme', subject: 'ivy' }, key);
    const result = await store.recordCaptures(
      [],
      [{ capture: observedBefore, stage: 'verification', label: 'failed', reason: 'verifying it failed (TypeError)' }],
    );
    expect(result.quarantined).to.deep.equal([]);
    expect(result.erased).to.deep.equal([observedBefore.captureId]);
    expect(await stillQuarantined(observedBefore)).to.deep.equal([]);
  });

  it('a quarantined capture the erasure cannot find (from before migration 000011) keeps its tombstone past the retention; `captures retry` then drops it, no grant comes back', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'token-tap-erasure-'));
    try {
      // Observed 401 days ago, quarantined now (its verification threw), without a subject fingerprint as before 000011.
      const old = syntheticCapture('acme', 'hank', { observedAt: new Date(Date.now() - 401 * DAY_MS) });
      await store.recordCaptures([], [{ capture: old, stage: 'verification', label: 'failed', reason: 'verifying it failed (TypeError)' }]);
      await db.pool.query('UPDATE quarantined_captures SET subject_fp = NULL WHERE capture_id = $1', [old.captureId]);
      await client.call('DeleteSubject', { idp: 'acme', subject: 'hank' }, key);
      expect(await stillQuarantined(old), 'a row without a fingerprint is not found').to.deep.equal([old.captureId]);

      // The erasure was 400 days ago, after the capture was observed; events are kept 365 days.
      await db.pool.query("UPDATE tombstones SET erased_at = now() - interval '400 days' WHERE subject = 'hank'");
      const env = { DATABASE_URL: db.url, TOKEN_TAP_KEYS: keys };
      const purged = await runCli(['purge', '--events-older-than', '365d'], env);
      expect(purged.code, purged.stderr).to.equal(0);
      expect(JSON.parse(purged.stdout)).to.include({ quarantined_captures: 0, tombstones: 0 });
      expect((await db.pool.query("SELECT 1 FROM tombstones WHERE subject = 'hank'")).rowCount, 'the tombstone the quarantined capture needs').to.equal(1);

      const idpFile = path.join(dir, 'idps.yaml');
      writeFileSync(idpFile, 'idps:\n  other:\n    issuer: "https://other.example"\n    client_id: "okta"\n');
      const retried = await runCli(['captures', 'retry', '--capture-id', old.captureId], { ...env, TOKEN_TAP_IDP_CONFIG: idpFile });
      expect(retried.code, retried.stdout + retried.stderr).to.equal(0);
      expect(retried.stdout).to.contain(`erased   ${old.captureId}`).and.contain('retried 1: 0 written, 1 dropped (user erased), 0 stayed');
      expect(await store.findGrant('acme', 'hank'), 'the grant after the retry').to.equal(undefined);
      expect(await outcomeOf(old.captureId)).to.equal('erased');
      expect(await stillQuarantined(old)).to.deep.equal([]);

      // Nothing in the quarantine needs it now: the next purge takes it.
      expect(JSON.parse((await runCli(['purge', '--events-older-than', '365d'], env)).stdout)).to.include({ tombstones: 1 });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('an erasure at every IdP deletes every capture event of the user at every IdP (grant or not), and deletes them before it holds capture batches off', async () => {
    const eventsOf = async (subject: string) =>
      (await db.pool.query<{ idp: string }>('SELECT idp FROM capture_events WHERE subject = $1 ORDER BY idp', [subject])).rows.map((row) => row.idp);
    // At "third" only an event (its id_token did not verify), no grant.
    await store.recordCaptures([
      syntheticCapture('acme', 'jane'),
      syntheticCapture('other', 'jane'),
      syntheticCapture('third', 'jane', { outcome: 'unverified' }),
      syntheticCapture('acme', 'janet'),
    ]);
    expect(await eventsOf('jane')).to.deep.equal(['acme', 'other', 'third']);
    // A capture batch in flight holds ROW SHARE on tombstones: the erasure waits for it, with the events already gone.
    const batch = await db.pool.connect();
    try {
      await batch.query('BEGIN');
      await batch.query('LOCK TABLE tombstones IN ROW SHARE MODE');
      const erasure = client.call('DeleteSubject', { subject: 'jane' }, key);
      await waitFor('the events deleted while the erasure waits for the batch', async () => ((await eventsOf('jane')).length === 0 ? true : undefined));
      expect(await store.findGrant('acme', 'jane'), 'the grant, deleted with the tombstone').to.not.equal(undefined);
      await batch.query('COMMIT');
      const result = await erasure;
      expect(result.deleted).to.deep.equal([
        { idp: 'acme', subject: 'jane' },
        { idp: 'other', subject: 'jane' },
      ]);
      expect(Number(result.capture_events_deleted)).to.equal(3);
    } finally {
      await batch.query('ROLLBACK').catch(() => undefined);
      batch.release();
    }
    expect(await store.findGrant('other', 'jane')).to.equal(undefined);
    expect(await eventsOf('janet'), "another user's events").to.deep.equal(['acme']);
  });
});
