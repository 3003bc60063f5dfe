// From the spool into the real Postgres: batches, retries with backoff, nothing skipped and
// nothing written twice; and a sidecar that starts while Postgres is not there.
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import type pg from 'pg';
import type { Logger } from 'pino';
import type { Capture } from '../../src/capture/types.js';
import { createMetrics } from '../../src/ops/metrics.js';
import { generateKeySpec, parseKeyRing } from '../../src/keys/key-ring.js';
import { createPool } from '../../src/store/pool.js';
import { CapturePump } from '../../src/ingest/pump.js';
import { migrate } from '../../src/store/migrate.js';
import type { CaptureWriter } from '../../src/ingest/pump.js';
import { CaptureSpool } from '../../src/ingest/spool.js';
import { StoreState } from '../../src/ingest/postgres-availability.js';
import { GrantStore } from '../../src/store/grants.js';
import { sealQuarantined } from '../../src/ingest/quarantine.js';
import { syntheticCapture } from '../support/captures.js';
import { startInProcessSidecar } from '../support/in-process.js';
import { memoryLogger } from '../support/memory-log.js';
import { waitFor } from '../support/ports.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { metricValue } from '../support/metrics.js';

const keys = generateKeySpec('k1');
const ring = parseKeyRing(keys);

/** An IdP error response, each with its own error code. */
function idpError(index: number): Capture {
  return syntheticCapture('acme', undefined, {
    httpStatus: 400,
    outcome: 'idp_error',
    issuer: undefined,
    clientId: undefined,
    tokens: undefined,
    errorCode: `invalid_grant_${index}`,
  });
}

/** A TCP door in front of Postgres: closed (connections reset) until opened. */
async function startDoor(target: URL): Promise<{ port: number; open(): void; close(): Promise<void> }> {
  let opened = false;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    sockets.add(client);
    client.on('close', () => sockets.delete(client));
    if (!opened) {
      client.destroy();
      return;
    }
    const upstream = net.connect(Number(target.port || 5432), target.hostname);
    sockets.add(upstream);
    upstream.on('close', () => sockets.delete(upstream));
    client.pipe(upstream).pipe(client);
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    open: () => {
      opened = true;
    },
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/** A migrated database, a fresh spool and the store's state, all logging to `logger`: what a pump needs. */
async function loggedPumpParts(pool: pg.Pool, logger: Logger, prefix: string) {
  await migrate(pool);
  const metrics = createMetrics();
  const spool = await CaptureSpool.open({
    dir: mkdtempSync(path.join(os.tmpdir(), prefix)),
    maxBytes: 16 * 1024 * 1024,
    fsyncIntervalMs: 2,
    keyRing: ring,
    logger,
    metrics,
  });
  const state = new StoreState({ pool, logger, metrics });
  await state.prepare();
  return { metrics, spool, state };
}

describe('capture pump, spool to Postgres (integration)', function () {
  this.timeout(30_000);
  let db: TestDatabase;
  let dir: string;

  beforeEach(async () => {
    db = await createTestDatabase('durable');
    dir = mkdtempSync(path.join(os.tmpdir(), 'token-tap-spool-test-'));
  });
  afterEach(async () => {
    await db.drop();
    rmSync(dir, { recursive: true, force: true });
  });

  async function eventCount(): Promise<number> {
    const { rows } = await db.pool.query<{ n: number; distinct: number }>('SELECT count(*)::int AS n FROM capture_events');
    return rows[0]!.n;
  }

  it('writes 450 captures in batches of at most 200 and empties the spool', async () => {
    await migrate(db.pool);
    const { logger } = memoryLogger('silent');
    const metrics = createMetrics();
    const spool = await CaptureSpool.open({ dir, maxBytes: 16 * 1024 * 1024, fsyncIntervalMs: 2, keyRing: ring, logger, metrics });
    const batches: number[] = [];
    const store = new GrantStore(db.pool, ring, sealQuarantined);
    const writer: CaptureWriter = {
      recordCaptures: (batch) => {
        batches.push(batch.length);
        return store.recordCaptures(batch);
      },
    };
    const state = new StoreState({ pool: db.pool, logger, metrics });
    await state.prepare();
    for (let index = 0; index < 450; index += 1) spool.append(idpError(index));
    const queue = new CapturePump({ spool, writer, store: state, logger, metrics });
    queue.start();
    expect(await queue.drain(10_000)).to.equal(true);
    await queue.close();
    await spool.close();
    console.log(`      batch sizes: ${batches.join(', ')}`);
    expect(await eventCount()).to.equal(450);
    expect(Math.max(...batches)).to.be.at.most(200);
    expect(spool.depth).to.equal(0);
    expect(state.regainedAt, 'never lost: nothing came back').to.equal(undefined);
  });

  it('logs a "capture recorded" debug line per capture (through its unredacted child logger) and an info line of counts, with no token in either', async () => {
    const log = memoryLogger('trace');
    const { metrics, spool, state } = await loggedPumpParts(db.pool, log.logger, 'token-tap-pump-log-');
    const pump = new CapturePump({ spool, writer: new GrantStore(db.pool, ring, sealQuarantined), store: state, logger: log.logger, metrics, gatherMs: 0 });
    pump.start();
    const marker = `canary-${randomUUID()}`;
    const capture = syntheticCapture('acme', 'log-user');
    capture.tokens = { ...capture.tokens!, accessToken: `at-${marker}`, refreshToken: `rt-${marker}`, idToken: undefined, extras: { note: marker } };
    pump.enqueue(capture);
    try {
      expect(await pump.drain(5_000)).to.equal(true);
    } finally {
      await pump.close();
      await spool.close();
    }
    const recorded = log.lines().filter((line) => line.msg === 'capture recorded');
    expect(recorded).to.have.length(1);
    expect(recorded[0]).to.include({ idp: 'acme', subject: 'log-user', captureId: capture.captureId, level: 20 });
    // At info, a line of counts instead of a line per capture.
    const summed = log.lines().filter((line) => line.msg === 'captures recorded');
    expect(summed).to.have.length(1);
    expect(summed[0]).to.deep.include({ level: 30, captures: 1, outcomes: { stored: 1 }, idps: { acme: 1 } });
    expect(log.text()).to.not.contain(marker);
  });

  it('a stop says what it counted before waiting for a write stuck on Postgres (the sidecar stops waiting after its grace)', async () => {
    const log = memoryLogger('info');
    const { metrics, spool, state } = await loggedPumpParts(db.pool, log.logger, 'token-tap-pump-stuck-');
    const store = new GrantStore(db.pool, ring, sealQuarantined);
    let writes = 0;
    // The first two batches are written; the third never comes back (a Postgres that stopped answering).
    const writer = {
      recordCaptures: (...args: Parameters<GrantStore['recordCaptures']>) =>
        ++writes <= 2 ? store.recordCaptures(...args) : new Promise<never>(() => undefined),
    };
    const pump = new CapturePump({ spool, writer, store: state, logger: log.logger, metrics, gatherMs: 0 });
    pump.start();
    pump.enqueue(syntheticCapture('acme', 'stuck-1'));
    expect(await pump.drain(5_000)).to.equal(true);
    pump.enqueue(syntheticCapture('acme', 'stuck-2'));
    expect(await pump.drain(5_000)).to.equal(true);
    pump.enqueue(syntheticCapture('acme', 'stuck-3'));
    await waitFor('the third write', async () => writes >= 3 || undefined, 5_000);
    // As the sidecar does: wait for the pump's close at most its grace, then go on.
    await Promise.race([pump.close(), new Promise((resolve) => setTimeout(resolve, 200))]);
    const counted = log
      .lines()
      .filter((line) => line.msg === 'captures recorded')
      .reduce((sum, line) => sum + Number(line.captures), 0);
    expect(counted, 'both written captures are in the log').to.equal(2);
    await spool.close();
  });

  it("waitForIdp resolves once the IdP's captures enqueued before it are in Postgres, and false when its time is up first", async () => {
    await migrate(db.pool);
    const { logger } = memoryLogger('silent');
    const metrics = createMetrics();
    const spool = await CaptureSpool.open({ dir, maxBytes: 16 * 1024 * 1024, fsyncIntervalMs: 2, keyRing: ring, logger, metrics });
    const store = new GrantStore(db.pool, ring, sealQuarantined);
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    const writer: CaptureWriter = {
      recordCaptures: async (batch) => {
        await held;
        return store.recordCaptures(batch);
      },
    };
    const state = new StoreState({ pool: db.pool, logger, metrics });
    await state.prepare();
    const pump = new CapturePump({ spool, writer, store: state, logger, metrics, gatherMs: 0 });
    pump.start();
    try {
      expect(await pump.waitForIdp('acme', 1_000)).to.equal(true);
      expect(pump.hasInFlight('acme')).to.equal(false);
      pump.enqueue(syntheticCapture('acme', 'alice'));
      pump.enqueue(syntheticCapture('acme', 'bob'));
      expect(pump.hasInFlight('acme')).to.equal(true);
      expect(pump.hasInFlight('other')).to.equal(false);
      const started = Date.now();
      expect(await pump.waitForIdp('acme', 150)).to.equal(false);
      expect(Date.now() - started).to.be.at.least(140);
      const waiting = pump.waitForIdp('acme', 5_000);
      setTimeout(release, 100);
      expect(await waiting).to.equal(true);
      const { rows } = await db.pool.query<{ subject: string }>("SELECT subject FROM grants WHERE idp = 'acme' ORDER BY subject");
      expect(rows.map((row) => row.subject)).to.deep.equal(['alice', 'bob']);
      expect(pump.hasInFlight('acme')).to.equal(false);
    } finally {
      release();
      await pump.close();
      await spool.close();
    }
  });

  it('retries a failed batch with backoff until it is written: none skipped, none twice', async () => {
    await migrate(db.pool);
    const { logger, lines } = memoryLogger('info');
    const metrics = createMetrics();
    const spool = await CaptureSpool.open({ dir, maxBytes: 16 * 1024 * 1024, fsyncIntervalMs: 2, keyRing: ring, logger, metrics });
    const store = new GrantStore(db.pool, ring, sealQuarantined);
    let failures = 3;
    const attempts: number[] = [];
    const writer: CaptureWriter = {
      recordCaptures: async (batch) => {
        attempts.push(Date.now());
        if (failures > 0) {
          failures -= 1;
          throw Object.assign(new Error('connection terminated unexpectedly'), { code: 'ECONNRESET' });
        }
        return store.recordCaptures(batch);
      },
    };
    const state = new StoreState({ pool: db.pool, logger, metrics });
    await state.prepare();
    const queue = new CapturePump({ spool, writer, store: state, logger, metrics, retryInitialMs: 20, retryMaxMs: 200 });
    queue.start();
    const captures = Array.from({ length: 30 }, (_, index) => idpError(index));
    for (const item of captures) spool.append(item);
    const conditions: string[] = [];
    await waitFor('the captures in Postgres', async () => {
      if (conditions.at(-1) !== state.condition) conditions.push(state.condition);
      return (await eventCount()) >= 30 ? true : undefined;
    });
    await queue.close();
    await spool.close();
    const { rows } = await db.pool.query<{ error_code: string }>('SELECT error_code FROM capture_events ORDER BY id');
    const errors = await metricValue(metrics, 'postgresErrors');
    console.log(
      `      ${attempts.length} attempts for ${rows.length} captures; Postgres errors counted ${errors}; store went through ${[...conditions, state.condition].join(' → ')}`,
    );
    expect(rows.map((row) => row.error_code).sort()).to.deep.equal(captures.map((item) => item.errorCode).sort());
    expect(errors).to.equal(3);
    expect(lines().filter((line) => line.msg === 'writing captures to Postgres failed; they stay in the spool and the write is retried')).to.have.length(3);
    expect(state.condition).to.equal('ready');
    // When it came back, for refreshes: no expired claim is taken over within an apply window of it.
    expect(state.regainedAt).to.be.a('number').and.at.least(attempts.at(-1)!).and.at.most(Date.now());
  });

  it('a verification step can hold a batch in the spool (nothing behind it is written), and a write retry does not verify again', async () => {
    await migrate(db.pool);
    const { logger } = memoryLogger('silent');
    const metrics = createMetrics();
    const spool = await CaptureSpool.open({ dir, maxBytes: 16 * 1024 * 1024, fsyncIntervalMs: 2, keyRing: ring, logger, metrics });
    const store = new GrantStore(db.pool, ring, sealQuarantined);
    let failures = 1;
    const writer: CaptureWriter = {
      recordCaptures: async (batch) => {
        if (failures-- > 0) throw Object.assign(new Error('connection terminated unexpectedly'), { code: 'ECONNRESET' });
        return store.recordCaptures(batch);
      },
    };
    let keysArrived = false;
    const verifyCalls: number[] = [];
    let verifiedOnce = 0;
    const verification = {
      verify: async (batch: readonly Capture[]) => {
        verifyCalls.push(batch.length);
        if (!keysArrived) return { retryAt: Date.now() + 30 };
        verifiedOnce += 1;
        return {
          captures: batch.map((capture) =>
            capture.subject === 'mallory' ? { ...capture, outcome: 'unverified' as const, detail: 'bad_signature' } : { ...capture, verified: true },
          ),
        };
      },
    };
    const state = new StoreState({ pool: db.pool, logger, metrics });
    await state.prepare();
    const pump = new CapturePump({ spool, writer, verification, store: state, logger, metrics, retryInitialMs: 20, retryMaxMs: 50 });
    pump.start();
    spool.append(syntheticCapture('acme', 'alice'));
    spool.append(syntheticCapture('acme', 'mallory'));
    spool.append(idpError(1));
    await waitFor('verification asked a few times', async () => (verifyCalls.length >= 3 ? true : undefined));
    expect(await eventCount(), 'held in the spool, not written').to.equal(0);
    expect(pump.depth).to.equal(3);
    keysArrived = true;
    await waitFor('the captures in Postgres', async () => ((await eventCount()) === 3 ? true : undefined));
    await pump.close();
    await spool.close();
    const { rows } = await db.pool.query<{ subject: string | null; outcome: string; verified: boolean | null }>(
      'SELECT e.subject, e.outcome, g.verified FROM capture_events e LEFT JOIN grants g ON g.idp = e.idp AND g.subject = e.subject ORDER BY e.id',
    );
    expect(rows).to.deep.equal([
      { subject: 'alice', outcome: 'stored', verified: true },
      { subject: 'mallory', outcome: 'unverified', verified: null },
      { subject: null, outcome: 'idp_error', verified: null },
    ]);
    // Verified once when the keys arrived; the failed write was retried with that result.
    expect(verifiedOnce).to.equal(1);
    expect(failures, 'the first write failed').to.equal(-1);
    expect(await metricValue(metrics, 'captures', { outcome: 'unverified' })).to.equal(1);
  });

  it("captures waiting for one IdP's keys go back to the end of the spool, so other IdPs' captures are written meanwhile", async () => {
    await migrate(db.pool);
    const { logger } = memoryLogger('silent');
    const metrics = createMetrics();
    const spool = await CaptureSpool.open({ dir, maxBytes: 16 * 1024 * 1024, fsyncIntervalMs: 2, keyRing: ring, logger, metrics });
    const store = new GrantStore(db.pool, ring, sealQuarantined);
    let slowKeysArrived = false;
    const verification = {
      verify: async (batch: readonly Capture[]) => {
        const waiting = slowKeysArrived ? [] : batch.filter((capture) => capture.idp === 'slow');
        const captures = batch.filter((capture) => !waiting.includes(capture)).map((capture) => ({ ...capture, verified: true }));
        return waiting.length > 0 ? { captures, waiting, retryAt: Date.now() + 100 } : { captures };
      },
    };
    const state = new StoreState({ pool: db.pool, logger, metrics });
    await state.prepare();
    const pump = new CapturePump({ spool, writer: store, verification, store: state, logger, metrics, retryInitialMs: 20, retryMaxMs: 50 });
    pump.start();
    const slow = syntheticCapture('slow', 'waits-for-keys');
    spool.append(slow);
    for (let index = 0; index < 5; index += 1) spool.append(syntheticCapture('fast', `fast-${index}`));
    const count = async (idp: string) => (await db.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM capture_events WHERE idp = $1', [idp])).rows[0]!.n;
    await waitFor("the other IdP's captures in Postgres", async () => ((await count('fast')) === 5 ? true : undefined), 3_000);
    expect(await count('slow'), 'still waiting for its keys').to.equal(0);
    expect(pump.depth, 'the waiting capture is kept in the spool').to.be.at.least(1);
    slowKeysArrived = true;
    await waitFor('the waiting capture in Postgres', async () => ((await count('slow')) === 1 ? true : undefined), 3_000);
    await waitFor('an empty spool', async () => (pump.depth === 0 ? true : undefined), 3_000);
    await pump.close();
    await spool.close();
    const { rows } = await db.pool.query('SELECT capture_id FROM capture_events WHERE idp = $1', ['slow']);
    expect(rows.map((row) => row.capture_id)).to.deep.equal([slow.captureId]);
  });

  it('a sidecar started while Postgres is unreachable serves ext_proc, spools, and writes once Postgres is reachable', async () => {
    const door = await startDoor(new URL(db.url));
    const url = new URL(db.url);
    url.host = `127.0.0.1:${door.port}`;
    const running = await startInProcessSidecar({ DATABASE_URL: url.toString(), TOKEN_TAP_KEYS: keys, TOKEN_TAP_SPOOL_DIR: dir });
    const { sidecar } = running;
    const { text } = running.log;
    try {
      expect(sidecar.storeState.condition).to.equal('preparing');
      const readyBefore = await fetch(`http://127.0.0.1:${sidecar.ops!.address.port}/readyz`);
      const bodyBefore = (await readyBefore.json()) as { status: string; store: { condition: string } };
      for (let index = 0; index < 5; index += 1) sidecar.pump.enqueue(idpError(index));
      await waitFor('the spool to have them', async () => (sidecar.pump.depth === 5 ? true : undefined));
      door.open();
      await waitFor('the schema and the captures in Postgres', async () => ((await eventCount().catch(() => 0)) === 5 ? true : undefined), 15_000);
      console.log(`      /readyz before Postgres: ${readyBefore.status} ${JSON.stringify(bodyBefore)}; after: store ${sidecar.storeState.condition}`);
      expect(readyBefore.status).to.equal(200);
      expect(bodyBefore).to.deep.include({ status: 'serving' });
      expect(bodyBefore.store.condition).to.equal('preparing');
      expect(text()).to.contain('Postgres is not available at start');
      expect(sidecar.storeState.condition).to.equal('ready');
      expect(sidecar.storeState.regainedAt, 'Postgres came back after the start').to.be.a('number');
    } finally {
      await running.close();
      await door.close();
    }
  });
});

// Keeps createPool's error handling honest: an idle connection whose backend dies is logged, not fatal.
describe('Postgres pool errors (integration)', function () {
  this.timeout(20_000);

  it('a backend terminated under an idle connection is counted and logged, and the process lives on', async () => {
    const db = await createTestDatabase('pool_errors');
    const { logger, text } = memoryLogger('warn');
    let errors = 0;
    const pool = createPool({ databaseUrl: db.url, max: 1, logger, onError: () => (errors += 1) });
    try {
      const { rows } = await pool.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
      await db.pool.query('SELECT pg_terminate_backend($1)', [rows[0]!.pid]);
      await waitFor('the pool error', async () => (errors > 0 ? true : undefined));
      const again = await pool.query<{ one: number }>('SELECT 1 AS one');
      expect(again.rows[0]!.one).to.equal(1);
      expect(text()).to.contain('idle Postgres connection failed');
    } finally {
      await pool.end();
      await db.drop();
    }
  });
});
