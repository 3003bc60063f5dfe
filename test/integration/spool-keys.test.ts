// Nothing in the spool is lost to a key that left the ring, nor to a Postgres that lost its last
// commits: the spool and the pump against the real Postgres, restarted as a sidecar would be.
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import type { Capture } from '../../src/capture/types.js';
import { CapturePump } from '../../src/ingest/pump.js';
import { StoreState } from '../../src/ingest/postgres-availability.js';
import { CaptureSpool } from '../../src/ingest/spool.js';
import { generateKeySpec, parseKeyRing, type KeyRing } from '../../src/keys/key-ring.js';
import { createMetrics, type Metrics } from '../../src/ops/metrics.js';
import { GrantStore } from '../../src/store/grants.js';
import { sealQuarantined } from '../../src/ingest/quarantine.js';
import { migrate } from '../../src/store/migrate.js';
import { syntheticCapture } from '../support/captures.js';
import { memoryLogger } from '../support/memory-log.js';
import { metricValue } from '../support/metrics.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';

describe('spool records across key changes and lost Postgres commits (real spool and Postgres)', function () {
  this.timeout(30_000);
  let db: TestDatabase;
  let dir: string;

  beforeEach(async () => {
    db = await createTestDatabase('spool_keys');
    await migrate(db.pool);
    dir = mkdtempSync(path.join(os.tmpdir(), 'token-tap-spool-keys-'));
  });
  afterEach(async () => {
    await db.drop();
    rmSync(dir, { recursive: true, force: true });
  });

  /** One sidecar run: the spool under `ring`, the pump writing to Postgres, `captures` enqueued, drained, stopped. */
  async function run(ring: KeyRing, captures: Capture[] = [], graceMs = 60_000): Promise<{ metrics: Metrics; log: string; drained: boolean }> {
    const log = memoryLogger('info');
    const metrics = createMetrics();
    const spool = await CaptureSpool.open({ dir, maxBytes: 16 * 1024 * 1024, fsyncIntervalMs: 2, keyRing: ring, logger: log.logger, metrics, graceMs });
    const state = new StoreState({ pool: db.pool, logger: log.logger, metrics });
    await state.prepare();
    const pump = new CapturePump({ spool, writer: new GrantStore(db.pool, ring, sealQuarantined), store: state, logger: log.logger, metrics, gatherMs: 0 });
    pump.start();
    for (const capture of captures) pump.enqueue(capture);
    const drained = await pump.drain(10_000);
    await pump.close();
    await spool.close();
    return { metrics, log: log.text(), drained };
  }

  async function subjects(): Promise<string[]> {
    const { rows } = await db.pool.query<{ subject: string }>('SELECT subject FROM capture_events ORDER BY subject');
    return rows.map((row) => row.subject);
  }

  const heldFiles = () => readdirSync(path.join(dir, 'held')).sort();

  it('holds records sealed under a key the ring lacks (counted and logged by key id), and replays them into Postgres once the key is back', async () => {
    const k0 = generateKeySpec('k0');
    const k1 = generateKeySpec('k1');
    // Spooled under k0 while Postgres was away.
    const spooled = Array.from({ length: 5 }, (_, index) => syntheticCapture('acme', `old-${index}`));
    const before = parseKeyRing(k0);
    const spool = await CaptureSpool.open({
      dir,
      maxBytes: 16 * 1024 * 1024,
      fsyncIntervalMs: 2,
      keyRing: before,
      logger: memoryLogger('silent').logger,
      metrics: createMetrics(),
      graceMs: 0,
    });
    for (const capture of spooled) spool.append(capture);
    await spool.close();

    // Restarted with k0 gone from the ring (the old key dropped too early).
    const without = await run(parseKeyRing(k1), [syntheticCapture('acme', 'new-0'), syntheticCapture('acme', 'new-1')]);
    expect(without.drained).to.equal(true);
    expect(await subjects()).to.deep.equal(['new-0', 'new-1']);
    expect(await metricValue(without.metrics, 'spoolRecordsHeld', { reason: 'key_missing', key_id: 'k0' })).to.equal(5);
    expect(await metricValue(without.metrics, 'spoolRecordsHeldTotal', { reason: 'key_missing', key_id: 'k0' })).to.equal(5);
    expect(heldFiles()).to.have.length(1);
    expect(heldFiles()[0]).to.match(/^key-k0-[0-9a-f]{16}\.seg$/);
    expect(without.log).to.contain('"keyId":"k0"').and.contain('TOKEN_TAP_KEYS lacks');
    for (const secret of [k0, k1].map((spec) => spec.slice(3))) expect(without.log).to.not.contain(secret);

    // A restart without it still holds them (the count is logged at start), once: the segment they
    // were in is replayed (its grace window), and a record held already is not held again.
    const still = await run(parseKeyRing(k1));
    expect(await metricValue(still.metrics, 'spoolRecordsHeld', { reason: 'key_missing', key_id: 'k0' })).to.equal(5);
    expect(still.log).to.contain('spool records are held for a key id TOKEN_TAP_KEYS lacks');
    expect(await subjects()).to.deep.equal(['new-0', 'new-1']);

    // k0 back in the ring (after the active one) and a restart: every record reaches Postgres.
    const back = await run(parseKeyRing(`${k1},${k0}`));
    console.log(
      `      5 records under k0, restarted without k0: held ${await metricValue(without.metrics, 'spoolRecordsHeld', { reason: 'key_missing', key_id: 'k0' })}; with k0 back: ${(await subjects()).length - 2} replayed`,
    );
    expect(back.drained).to.equal(true);
    expect(await subjects()).to.deep.equal(['new-0', 'new-1', ...spooled.map((capture) => capture.subject!)].sort());
    expect(back.log).to.contain('back in the spool');
    expect(heldFiles()).to.deep.equal([]);
    expect(await metricValue(back.metrics, 'spoolRecordsHeld', { reason: 'key_missing' })).to.equal(0);
    const store = new GrantStore(db.pool, parseKeyRing(`${k1},${k0}`), sealQuarantined);
    expect((await store.findGrant('acme', 'old-3'))?.accessToken).to.equal(spooled[3]!.tokens!.accessToken);
  });

  it('keeps held records whose key id is in the ring with other material held (a key mismatch, logged by key id), and replays them once the right key is back', async () => {
    const k0 = generateKeySpec('k0');
    const otherK0 = generateKeySpec('k0');
    const k1 = generateKeySpec('k1');
    const spooled = Array.from({ length: 5 }, (_, index) => syntheticCapture('acme', `old-${index}`));
    const spool = await CaptureSpool.open({
      dir,
      maxBytes: 16 * 1024 * 1024,
      fsyncIntervalMs: 2,
      keyRing: parseKeyRing(k0),
      logger: memoryLogger('silent').logger,
      metrics: createMetrics(),
      graceMs: 0,
    });
    for (const capture of spooled) spool.append(capture);
    await spool.close();

    // No grace window: what is held is nowhere else.
    await run(parseKeyRing(k1), [], 0);
    expect(heldFiles()).to.have.length(1);
    expect(heldFiles()[0]).to.match(/^key-k0-[0-9a-f]{16}\.seg$/);

    // k0 back in the ring, but with other material under that id: the held file stays as it is.
    const wrong = await run(parseKeyRing(`${k1},${otherK0}`), [], 0);
    expect(heldFiles()).to.have.length(1);
    expect(heldFiles()[0]).to.match(/^key-k0-[0-9a-f]{16}\.seg$/);
    expect(await metricValue(wrong.metrics, 'spoolRecordsHeld', { reason: 'key_mismatch', key_id: 'k0' })).to.equal(5);
    expect(await metricValue(wrong.metrics, 'spoolRecordsHeld', { reason: 'unreadable' })).to.equal(0);
    expect(wrong.log).to.contain('"keyId":"k0"').and.contain('other key material');
    for (const secret of [k0, otherK0, k1].map((spec) => spec.slice(3))) expect(wrong.log).to.not.contain(secret);
    expect(await subjects()).to.deep.equal([]);

    // The right k0: every record reaches Postgres.
    const right = await run(parseKeyRing(`${k1},${k0}`), [], 0);
    console.log(
      `      5 records under k0; ring {k1}: held; ring {k1, other k0}: still held (${await metricValue(wrong.metrics, 'spoolRecordsHeld', { reason: 'key_mismatch', key_id: 'k0' })} key_mismatch); ring {k1, k0}: ${(await subjects()).length} in Postgres`,
    );
    expect(right.drained).to.equal(true);
    expect(await subjects()).to.deep.equal(spooled.map((capture) => capture.subject!).sort());
    expect(heldFiles()).to.deep.equal([]);
  });

  it('replays the grace window at a restart into a Postgres that lost its last commits (an async standby promoted)', async () => {
    const ring = parseKeyRing(generateKeySpec('k1'));
    const captures = Array.from({ length: 10 }, (_, index) => syntheticCapture('acme', `user-${index}`));
    const first = await run(ring, captures, 60_000);
    expect(first.drained).to.equal(true);
    expect((await subjects()).length).to.equal(10);
    // The failover: the last commits are gone from the Postgres now in charge.
    await db.pool.query('DELETE FROM capture_events');
    await db.pool.query('DELETE FROM grants');
    const restarted = await run(ring, [], 60_000);
    const replayed = await subjects();
    console.log(`      10 captures committed, then lost by Postgres; restart within the 60 s grace window: ${replayed.length} back in Postgres`);
    expect(restarted.drained).to.equal(true);
    expect(replayed).to.deep.equal(captures.map((capture) => capture.subject!).sort());
    // A second replay into a Postgres that has them all changes nothing.
    await run(ring, [], 60_000);
    expect((await subjects()).length).to.equal(10);
  });
});
