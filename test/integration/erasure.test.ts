// Erasure that sticks: DeleteSubject / `grants delete` writes a tombstone in its transaction, and
// the capture writer drops any capture of that user observed at or before it, however long it waited
// (in a spool, as a held grant, in a batch in flight). A capture observed after it is a new login.
// Real Postgres, the real sidecar (spool, pump, GrantStore) and its real gRPC API, the real CLI.
import { expect } from 'chai';
import { generateKeySpec, parseKeyRing } from '../../src/keys/key-ring.js';
import { GrantStore } from '../../src/store/grants.js';
import { startBlackholeProxy } from '../support/blackhole-proxy.js';
import { syntheticCapture } from '../support/captures.js';
import { startInProcessSidecar } from '../support/in-process.js';
import { metricValue } from '../support/metrics.js';
import { waitFor } from '../support/ports.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { runCli } from '../support/sidecar.js';
import { createApiKey, startVaultSidecar, vaultClient, type VaultClient, type VaultSidecar } from '../support/token-vault.js';

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

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
    store = new GrantStore(db.pool, parseKeyRing(keys));
    key = (await createApiKey(db, 'eraser', ['*'], ['*'])).token;
  });
  after(async () => {
    client?.close();
    await vault?.close();
    await db?.drop();
  });

  /** The outcome recorded for a capture, once the writer has it. */
  const outcomeOf = (captureId: string) =>
    waitFor(`capture ${captureId} in Postgres`, async () => (await db.pool.query<{ outcome: string }>('SELECT outcome FROM capture_events WHERE capture_id = $1', [captureId])).rows[0]?.outcome);
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
    const earlyProfile = syntheticCapture('acme', undefined, { outcome: 'profile', tokens: undefined, profile: { accessToken: otherToken.tokens!.accessToken!, subject: 'carol', email: undefined } });
    await pause(5);
    await client.call('DeleteSubject', { idp: 'acme', subject: 'carol' }, key);

    const profile = syntheticCapture('acme', undefined, { outcome: 'profile', tokens: undefined, profile: { accessToken: held.tokens!.accessToken!, subject: 'carol', email: undefined } });
    vault.sidecar.pump.enqueue(profile);
    vault.sidecar.pump.enqueue(earlyProfile);
    vault.sidecar.pump.enqueue(otherToken);
    expect(await outcomeOf(profile.captureId), 'the profile naming the erased user').to.equal('erased');
    expect(await outcomeOf(earlyProfile.captureId), 'the profile observed before the erasure').to.equal('erased');
    expect(await outcomeOf(otherToken.captureId), 'its token response, with no hint to link it').to.equal('no_subject');
    expect(await outcomeOf(held.captureId), 'the held grant').to.equal('erased');
    expect(await store.findGrant('acme', 'carol')).to.equal(undefined);
    const { rows } = await db.pool.query<{ n: number }>("SELECT (SELECT count(*) FROM pending_grants WHERE capture_id = $1)::int + (SELECT count(*) FROM subject_hints WHERE subject = 'carol')::int AS n", [held.captureId]);
    expect(rows[0]!.n, 'held grant and hints of the erased user left').to.equal(0);
  });

  it('a capture that waits in a sidecar\'s spool across `grants delete` (its Postgres away meanwhile) is dropped when it is written', async () => {
    const before = syntheticCapture('acme', 'dave');
    vault.sidecar.pump.enqueue(before);
    expect(await outcomeOf(before.captureId)).to.equal('stored');
    // A second sidecar whose Postgres is unreachable: the login waits in its spool.
    const direct = new URL(db.url);
    const proxy = await startBlackholeProxy({ host: direct.hostname, port: Number(direct.port || 5432) });
    proxy.blackhole();
    const proxied = new URL(db.url);
    proxied.host = `127.0.0.1:${proxy.port}`;
    const spooling = await startInProcessSidecar({ DATABASE_URL: proxied.toString(), TOKEN_TAP_KEYS: keys, TOKEN_TAP_API_LISTEN: 'off', TOKEN_TAP_PG_CONNECT_TIMEOUT_MS: '300' });
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
      expect(await waitFor('the spooled login written', async () => (await db.pool.query<{ outcome: string }>('SELECT outcome FROM capture_events WHERE capture_id = $1', [waiting.captureId])).rows[0]?.outcome, 30_000)).to.equal('erased');
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
        (await db.pool.query("SELECT 1 FROM pg_stat_activity WHERE application_name = 'token-tap' AND wait_event_type = 'Lock' AND query LIKE '%INSERT INTO grants%'")).rowCount ? true : undefined,
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
});
