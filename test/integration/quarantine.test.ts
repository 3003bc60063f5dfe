// Poison-proof ingest, against the real Postgres: a capture that fails alone (a subject or email over
// the btree limit, a held grant sealed under other key material, a verification step that throws on
// it) is sealed into quarantined_captures in the batch's own transaction, counted and logged, and
// everything else is written; Postgres being unavailable during the one-by-one write still retries
// the whole batch and quarantines nothing.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import type pg from 'pg';
import type { Capture } from '../../src/capture/types.js';
import { createMetrics, type Metrics } from '../../src/ops/metrics.js';
import { generateKeySpec, parseKeyRing, type KeyRing } from '../../src/keys/key-ring.js';
import { createPool } from '../../src/store/pool.js';
import { CapturePump, type CaptureVerification } from '../../src/ingest/pump.js';
import { migrate } from '../../src/store/migrate.js';
import { CaptureSpool } from '../../src/ingest/spool.js';
import { openSealedCapture } from '../../src/ingest/spool-codec.js';
import { StoreState } from '../../src/ingest/postgres-availability.js';
import { GrantStore } from '../../src/store/grants.js';
import { openQuarantined, sealQuarantined } from '../../src/ingest/quarantine.js';
import { startBlackholeProxy } from '../support/blackhole-proxy.js';
import { syntheticCapture, syntheticTokens } from '../support/captures.js';
import { memoryLogger } from '../support/memory-log.js';
import { waitFor } from '../support/ports.js';
import { createTestDatabase, dumpAllRowsAsText, plaintextForms, type TestDatabase } from '../support/postgres.js';
import { metricValue } from '../support/metrics.js';

/** Random text does not compress, so 3,000 characters of it exceed a btree entry (2,704 bytes). */
const overBtreeLimit = () => randomBytes(2_250).toString('base64');

interface QuarantineRow {
  capture_id: string;
  idp: string;
  stage: string;
  reason: string;
  attempts: number;
  key_id: string;
  record: Buffer;
}

async function quarantineRows(pool: pg.Pool): Promise<QuarantineRow[]> {
  return (await pool.query<QuarantineRow>('SELECT * FROM quarantined_captures ORDER BY quarantined_at, capture_id')).rows;
}

async function grantSubjects(pool: pg.Pool, idp: string): Promise<string[]> {
  return (await pool.query<{ subject: string }>('SELECT subject FROM grants WHERE idp = $1 ORDER BY subject', [idp])).rows.map((row) => row.subject);
}

/** A batch of normal logins with one over-long subject and one over-long email among them. */
function poisonedBatch(): { batch: Capture[]; longSubject: Capture; longEmail: Capture; normal: string[] } {
  const longSubject = syntheticCapture('acme', overBtreeLimit());
  const longEmail = syntheticCapture('acme', 'long-email-user', { email: `${overBtreeLimit()}@example.test` });
  const batch = [syntheticCapture('acme', 'alice'), longSubject, syntheticCapture('acme', 'bob'), longEmail, syntheticCapture('acme', 'carol')];
  return { batch, longSubject, longEmail, normal: ['alice', 'bob', 'carol'] };
}

function expectSealedNotPlain(row: QuarantineRow, capture: Capture, ring: KeyRing): void {
  for (const token of [capture.tokens!.accessToken!, capture.tokens!.refreshToken!]) {
    expect(row.record.includes(Buffer.from(token, 'utf8')), 'plaintext token in the record').to.equal(false);
  }
  // Sealed as the spool seals a capture but bound to the quarantine: it does not open as a spool
  // record (nor a spool record as a quarantined capture), so neither passes for the other.
  expect(() => openSealedCapture(ring, row.key_id, row.record, row.capture_id), 'a quarantine record opened as a spool record').to.throw();
  const opened = openQuarantined(ring, row.key_id, row.record, row.capture_id);
  expect(opened.tokens!.accessToken).to.equal(capture.tokens!.accessToken);
  expect(opened.observedAt.getTime()).to.equal(capture.observedAt.getTime());
}

describe('capture quarantine (integration)', function () {
  this.timeout(60_000);
  let db: TestDatabase;
  let dir: string;
  const ring = parseKeyRing(generateKeySpec('k1'));

  beforeEach(async () => {
    db = await createTestDatabase('quarantine');
    await migrate(db.pool);
    dir = mkdtempSync(path.join(os.tmpdir(), 'token-tap-quarantine-'));
  });
  afterEach(async () => {
    await db.drop();
    rmSync(dir, { recursive: true, force: true });
  });

  /** A pump over a real spool in `dir`, writing through `store`. */
  async function startPump(options: { store: GrantStore; keyRing: KeyRing; verification?: CaptureVerification; metrics?: Metrics; level?: 'silent' | 'info' }) {
    const log = memoryLogger(options.level ?? 'info');
    const metrics = options.metrics ?? createMetrics();
    const spool = await CaptureSpool.open({ dir, maxBytes: 16 * 1024 * 1024, fsyncIntervalMs: 2, keyRing: options.keyRing, logger: log.logger, metrics });
    const state = new StoreState({ pool: db.pool, logger: log.logger, metrics });
    await state.prepare();
    const pump = new CapturePump({
      spool,
      writer: options.store,
      ...(options.verification ? { verification: options.verification } : {}),
      store: state,
      logger: log.logger,
      metrics,
      gatherMs: 0,
      retryInitialMs: 20,
      retryMaxMs: 100,
    });
    pump.start();
    return {
      pump,
      spool,
      state,
      metrics,
      log,
      async close() {
        await pump.close();
        await spool.close();
      },
    };
  }

  it('GrantStore: writes the normal captures of a batch and quarantines a 3,000-character subject and email, sealed, in the same write', async () => {
    const store = new GrantStore(db.pool, ring, sealQuarantined);
    const { batch, longSubject, longEmail, normal } = poisonedBatch();
    const result = await store.recordCaptures(batch);
    expect(result.quarantined).to.deep.equal([
      { captureId: longSubject.captureId, idp: 'acme', label: 'refused_by_postgres', reason: 'Postgres refused it (SQLSTATE 54000)', known: false },
      { captureId: longEmail.captureId, idp: 'acme', label: 'refused_by_postgres', reason: 'Postgres refused it (SQLSTATE 54000)', known: false },
    ]);
    expect(await grantSubjects(db.pool, 'acme')).to.deep.equal(normal);
    const rows = await quarantineRows(db.pool);
    expect(rows.map((row) => [row.capture_id, row.stage, row.attempts])).to.have.deep.members([
      [longSubject.captureId, 'write', 1],
      [longEmail.captureId, 'write', 1],
    ]);
    expectSealedNotPlain(rows.find((row) => row.capture_id === longSubject.captureId)!, longSubject, ring);
    expectSealedNotPlain(rows.find((row) => row.capture_id === longEmail.captureId)!, longEmail, ring);
    const dump = await dumpAllRowsAsText(db.pool);
    for (const capture of [longSubject, longEmail]) for (const form of plaintextForms(capture.tokens!.accessToken!)) expect(dump).to.not.contain(form);

    // Written again (a spool replayed after a crash): nothing changes, and it is known, not new.
    const again = await store.recordCaptures(batch);
    expect(again.quarantined.map((entry) => entry.known)).to.deep.equal([true, true]);
    expect(await quarantineRows(db.pool)).to.have.length(2);
  });

  it('CapturePump: the same batch through a real spool is written at once, the two set aside, counted and logged once each; postgres_up stays 1', async () => {
    const store = new GrantStore(db.pool, ring, sealQuarantined);
    const running = await startPump({ store, keyRing: ring });
    const { batch, longSubject, longEmail, normal } = poisonedBatch();
    try {
      for (const capture of batch) running.pump.enqueue(capture);
      expect(await running.pump.waitForIdp('acme', 10_000), 'waitForIdp counts quarantined captures as written').to.equal(true);
      expect(await grantSubjects(db.pool, 'acme')).to.deep.equal(normal);
      expect(await running.pump.drain(5_000)).to.equal(true);
      const later = syntheticCapture('acme', 'dave');
      running.pump.enqueue(later);
      expect(await running.pump.waitForIdp('acme', 5_000)).to.equal(true);
      expect(await grantSubjects(db.pool, 'acme')).to.deep.equal([...normal, 'dave']);
    } finally {
      await running.close();
    }
    expect((await quarantineRows(db.pool)).map((row) => row.capture_id)).to.have.members([longSubject.captureId, longEmail.captureId]);
    expect(await metricValue(running.metrics, 'capturesQuarantined', { idp: 'acme', reason: 'refused_by_postgres' })).to.equal(2);
    expect(await metricValue(running.metrics, 'postgresUp')).to.equal(1);
    expect(await metricValue(running.metrics, 'postgresErrors')).to.equal(0);
    expect(running.spool.depth).to.equal(0);
    const logged = running.log.lines().filter((line) => String(line.msg).startsWith('capture quarantined'));
    expect(logged.map((line) => [line.level, line.captureId, line.idp, line.reason])).to.have.deep.members([
      [50, longSubject.captureId, 'acme', 'refused_by_postgres'],
      [50, longEmail.captureId, 'acme', 'refused_by_postgres'],
    ]);
    const text = running.log.text();
    for (const capture of batch) expect(text).to.not.contain(capture.tokens!.accessToken!);
    expect(text).to.not.contain(longSubject.subject!).and.not.contain(longEmail.email!);
  });

  it('a profile capture whose held grant is sealed under other material for its key id is quarantined; other IdPs go on, also after restarts over the same spool', async () => {
    const fingerprintKey = randomBytes(32).toString('base64');
    const ringX = parseKeyRing(generateKeySpec('k1'), fingerprintKey);
    const ringY = parseKeyRing(generateKeySpec('k1'), fingerprintKey);
    const held = syntheticCapture('github', undefined, { tokens: syntheticTokens({ idToken: undefined }) });
    await new GrantStore(db.pool, ringX, sealQuarantined).recordCaptures([held]);
    expect((await db.pool.query('SELECT count(*)::int AS n FROM pending_grants')).rows[0].n).to.equal(1);
    const profile = syntheticCapture('github', undefined, {
      outcome: 'profile',
      tokens: undefined,
      profile: { accessToken: held.tokens!.accessToken!, subject: 'octocat', email: undefined },
    });

    // A sidecar with k1=Y spooled the profile and a login of another IdP, and died before writing them.
    const first = await CaptureSpool.open({
      dir,
      maxBytes: 16 * 1024 * 1024,
      fsyncIntervalMs: 2,
      keyRing: ringY,
      logger: memoryLogger('silent').logger,
      metrics: createMetrics(),
    });
    expect(await first.appendAllDurable([profile, syntheticCapture('acme', 'before-restart')])).to.equal(true);
    await first.close();

    const store = new GrantStore(db.pool, ringY, sealQuarantined);
    const restarted = await startPump({ store, keyRing: ringY });
    try {
      await waitFor(
        'the replayed login of the other IdP',
        async () => ((await grantSubjects(db.pool, 'acme')).includes('before-restart') ? true : undefined),
        10_000,
      );
      restarted.pump.enqueue(syntheticCapture('acme', 'after-restart'));
      expect(await restarted.pump.waitForIdp('acme', 10_000)).to.equal(true);
      expect(await restarted.pump.drain(5_000)).to.equal(true);
    } finally {
      await restarted.close();
    }
    const rows = await quarantineRows(db.pool);
    expect(rows.map((row) => [row.capture_id, row.idp, row.reason])).to.deep.equal([[profile.captureId, 'github', 'cannot open a held grant (DecryptError)']]);
    expect(await metricValue(restarted.metrics, 'capturesQuarantined', { idp: 'github', reason: 'unreadable' })).to.equal(1);
    expect(await metricValue(restarted.metrics, 'postgresUp')).to.equal(1);
    expect((await db.pool.query('SELECT count(*)::int AS n FROM pending_grants')).rows[0].n, 'the held grant is left as it was').to.equal(1);

    // Another restart over the same spool: nothing is replayed twice, new logins go straight in.
    const again = await startPump({ store, keyRing: ringY });
    try {
      again.pump.enqueue(syntheticCapture('acme', 'second-restart'));
      expect(await again.pump.waitForIdp('acme', 10_000)).to.equal(true);
    } finally {
      await again.close();
    }
    expect(await grantSubjects(db.pool, 'acme')).to.deep.equal(['after-restart', 'before-restart', 'second-restart']);
    expect(await quarantineRows(db.pool)).to.have.length(1);
    expect(await metricValue(again.metrics, 'capturesQuarantined')).to.equal(0);
  });

  it('a verification step that throws for one capture only: that capture is quarantined (stage verification), the rest are verified and written', async () => {
    const poison = syntheticCapture('acme', 'breaks-the-verifier');
    const verification: CaptureVerification = {
      verify: async (batch) => {
        if (batch.some((capture) => capture.captureId === poison.captureId)) throw new TypeError('a bug meets an odd id_token');
        return { captures: batch.map((capture) => ({ ...capture, verified: true })) };
      },
    };
    const running = await startPump({ store: new GrantStore(db.pool, ring, sealQuarantined), keyRing: ring, verification });
    const others = [syntheticCapture('acme', 'alice'), syntheticCapture('acme', 'bob')];
    try {
      for (const capture of [others[0]!, poison, others[1]!]) running.spool.append(capture);
      await waitFor('the others written', async () => ((await grantSubjects(db.pool, 'acme')).length === 2 ? true : undefined), 10_000);
      expect(await running.pump.drain(5_000)).to.equal(true);
    } finally {
      await running.close();
    }
    expect(await grantSubjects(db.pool, 'acme')).to.deep.equal(['alice', 'bob']);
    const { rows: verified } = await db.pool.query('SELECT bool_and(verified) AS all FROM grants');
    expect(verified[0].all).to.equal(true);
    const rows = await quarantineRows(db.pool);
    expect(rows.map((row) => [row.capture_id, row.stage, row.reason])).to.deep.equal([[poison.captureId, 'verification', 'verifying it failed (TypeError)']]);
    expectSealedNotPlain(rows[0]!, poison, ring);
    expect(await metricValue(running.metrics, 'capturesQuarantined', { idp: 'acme', reason: 'failed' })).to.equal(1);
    expect(running.log.text()).to.not.contain('a bug meets an odd id_token');
  });

  /** Waits until the writer has failed `count` times, then checks that nothing was quarantined or written meanwhile. */
  async function expectRetriesWithoutQuarantine(running: Awaited<ReturnType<typeof startPump>>, count: number): Promise<void> {
    await waitFor(`${count} failed writes`, async () => ((await metricValue(running.metrics, 'postgresErrors')) >= count ? true : undefined), 30_000);
    expect(await quarantineRows(db.pool), 'nothing quarantined while Postgres is unavailable').to.deep.equal([]);
    expect(await grantSubjects(db.pool, 'acme')).to.deep.equal([]);
    expect(await metricValue(running.metrics, 'postgresUp')).to.equal(0);
    expect(running.state.condition).to.equal('unavailable');
  }

  it('Postgres blackholed during the one-by-one write: the batch is retried, nothing is quarantined; once it heals, only the poison is', async () => {
    const proxy = await startBlackholeProxy({ host: new URL(db.url).hostname, port: Number(new URL(db.url).port || 5432) });
    const url = new URL(db.url);
    url.host = `127.0.0.1:${proxy.port}`;
    const pool = createPool({
      databaseUrl: url.toString(),
      max: 2,
      timeouts: { connectTimeoutMs: 500, statementTimeoutMs: 500, queryTimeoutMs: 700, idleInTransactionMs: 5_000, keepAliveMs: 1_000 },
    });
    // The first savepoint of the one-by-one write is where the network goes.
    let outage = true;
    pool.on('connect', (client) => {
      const query = client.query.bind(client) as (...args: unknown[]) => unknown;
      (client as unknown as { query: (...args: unknown[]) => unknown }).query = (...args: unknown[]) => {
        if (outage && args[0] === 'SAVEPOINT capture') proxy.blackhole();
        return query(...args);
      };
    });
    const running = await startPump({ store: new GrantStore(pool, ring, sealQuarantined), keyRing: ring });
    const { batch, normal } = poisonedBatch();
    try {
      for (const capture of batch) running.pump.enqueue(capture);
      await expectRetriesWithoutQuarantine(running, 2);
      outage = false;
      proxy.heal();
      expect(await running.pump.waitForIdp('acme', 20_000)).to.equal(true);
    } finally {
      await running.close();
      await pool.end();
      await proxy.close();
    }
    expect(await grantSubjects(db.pool, 'acme')).to.deep.equal(normal);
    expect(await quarantineRows(db.pool)).to.have.length(2);
    expect(await metricValue(running.metrics, 'postgresUp')).to.equal(1);
  });

  it('a statement timeout (a grant row locked elsewhere) during the one-by-one write: the batch is retried, nothing is quarantined', async () => {
    const store = new GrantStore(db.pool, ring, sealQuarantined);
    await store.recordCaptures([syntheticCapture('acme', 'locked-user')]);
    const pool = createPool({
      databaseUrl: db.url,
      max: 2,
      timeouts: { connectTimeoutMs: 1_000, statementTimeoutMs: 300, queryTimeoutMs: 1_000, idleInTransactionMs: 5_000, keepAliveMs: 1_000 },
    });
    const locker = await db.pool.connect();
    const running = await startPump({ store: new GrantStore(pool, ring, sealQuarantined), keyRing: ring });
    const poison = syntheticCapture('acme', overBtreeLimit());
    try {
      await locker.query('BEGIN');
      await locker.query("SELECT * FROM grants WHERE subject = 'locked-user' FOR UPDATE");
      // The poison makes the batch go one by one; the first capture then waits for the lock.
      for (const capture of [syntheticCapture('acme', 'locked-user'), poison, syntheticCapture('acme', 'zoe')]) running.pump.enqueue(capture);
      await waitFor('failed writes', async () => ((await metricValue(running.metrics, 'postgresErrors')) >= 2 ? true : undefined), 30_000);
      expect(await quarantineRows(db.pool), 'nothing quarantined while the row is locked').to.deep.equal([]);
      expect(await grantSubjects(db.pool, 'acme')).to.deep.equal(['locked-user']);
      await locker.query('COMMIT');
      expect(await running.pump.waitForIdp('acme', 20_000)).to.equal(true);
    } finally {
      locker.release();
      await running.close();
      await pool.end();
    }
    expect(await grantSubjects(db.pool, 'acme')).to.deep.equal(['locked-user', 'zoe']);
    expect((await quarantineRows(db.pool)).map((row) => row.capture_id)).to.deep.equal([poison.captureId]);
  });
});
