// The operations surface of a running sidecar: /metrics, /healthz and /readyz over HTTP, and
// grpc.health.v1 on the ext_proc port, as Envoy's health check calls it.
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { expect } from 'chai';
import { service as healthService } from 'grpc-health-check';
import type { Sidecar } from '../../src/sidecar.js';
import { EXT_PROC_HEALTH_SERVICE } from '../../src/contract.js';
import { generateKeySpec } from '../../src/keys/key-ring.js';
import { startInProcessSidecar, type InProcessSidecar } from '../support/in-process.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';

type HealthClient = grpc.Client & {
  check(request: { service: string }, callback: (error: grpc.ServiceError | null, response?: { status: string }) => void): void;
};

describe('ops surface: /metrics, /healthz, /readyz and gRPC health (integration)', function () {
  this.timeout(20_000);
  let db: TestDatabase;
  let running: InProcessSidecar;
  let sidecar: Sidecar;
  let ops: string;
  let health: HealthClient;

  before(async () => {
    db = await createTestDatabase('ops');
    running = await startInProcessSidecar({ DATABASE_URL: db.url, TOKEN_TAP_KEYS: generateKeySpec('k1') }, 'silent');
    sidecar = running.sidecar;
    ops = `http://127.0.0.1:${sidecar.ops!.address.port}`;
    const Client = grpc.makeGenericClientConstructor(healthService as grpc.ServiceDefinition, 'Health');
    health = new Client(`127.0.0.1:${sidecar.address.port}`, grpc.credentials.createInsecure()) as unknown as HealthClient;
  });
  after(async () => {
    health?.close();
    await running?.close();
    await db?.drop();
  });

  const check = (service: string) =>
    new Promise<string>((resolve, reject) => health.check({ service }, (error, response) => (error ? reject(error) : resolve(response!.status))));

  it('serves the metrics the issue names, in Prometheus text format', async () => {
    const response = await fetch(`${ops}/metrics`);
    const text = await response.text();
    expect(response.status).to.equal(200);
    expect(response.headers.get('content-type')).to.contain('text/plain');
    for (const name of [
      'token_tap_captures_total',
      'token_tap_captures_dropped_total',
      'token_tap_capture_queue_depth',
      'token_tap_spool_bytes',
      'token_tap_spool_captures_total',
      'token_tap_spool_fsync_seconds',
      'token_tap_write_batch_seconds',
      'token_tap_postgres_errors_total',
      'token_tap_postgres_up',
      'token_tap_extproc_streams_open',
    ]) {
      expect(text, name).to.contain(`# TYPE ${name} `);
    }
    expect(text).to.match(/^token_tap_postgres_up 1$/m);
  });

  it('/healthz answers 200; /readyz answers 200 with the store and spool state; others are refused', async () => {
    const live = await fetch(`${ops}/healthz`);
    expect(live.status).to.equal(200);
    const ready = await fetch(`${ops}/readyz`);
    const body = (await ready.json()) as Record<string, any>;
    expect(ready.status).to.equal(200);
    expect(body.status).to.equal('serving');
    expect(body.store.condition).to.equal('ready');
    expect(body.spool).to.deep.include({ captures: 0, full: false });
    expect((await fetch(`${ops}/nothing`)).status).to.equal(404);
    expect((await fetch(`${ops}/metrics`, { method: 'POST' })).status).to.equal(405);
  });

  it('grpc.health.v1 on the ext_proc port says SERVING, and NOT_SERVING once the sidecar is stopping', async () => {
    expect(await check(EXT_PROC_HEALTH_SERVICE)).to.equal('SERVING');
    expect(await check('')).to.equal('SERVING');
    sidecar.health.stopping();
    expect(await check(EXT_PROC_HEALTH_SERVICE)).to.equal('NOT_SERVING');
    expect((await fetch(`${ops}/readyz`)).status).to.equal(503);
    expect((await fetch(`${ops}/healthz`)).status).to.equal(200);
    sidecar.health.serving();
  });

  it('/healthz and /readyz answer 503 with the reason, and grpc.health.v1 NOT_SERVING, once the spool lost its directory to another process', async () => {
    const spoolDir = mkdtempSync(path.join(os.tmpdir(), 'token-tap-ops-spool-'));
    const lockFile = path.join(spoolDir, 'lock');
    const failing = await startInProcessSidecar(
      { DATABASE_URL: db.url, TOKEN_TAP_KEYS: generateKeySpec('k1'), TOKEN_TAP_SPOOL_DIR: spoolDir, TOKEN_TAP_API_LISTEN: 'off' },
      'silent',
    );
    // Another process waits for the lock; the sidecar's flock(1) (this process's child, on this lock file) is killed.
    const waiter = spawn('flock', ['--exclusive', lockFile, 'sleep', '600'], { detached: true, stdio: 'ignore' });
    try {
      const ours = readdirSync('/proc')
        .filter((entry) => /^\d+$/.test(entry))
        .find((entry) => {
          try {
            const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
            const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
            return (
              path.basename(cmdline[0] ?? '') === 'flock' &&
              cmdline.includes('--nonblock') &&
              cmdline.includes(lockFile) &&
              Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === process.pid
            );
          } catch {
            return false;
          }
        });
      expect(ours, "the sidecar's flock(1)").to.not.equal(undefined);
      await new Promise((resolve) => setTimeout(resolve, 200));
      process.kill(Number(ours), 'SIGKILL');
      const failure = await failing.sidecar.failed;
      const where = `http://127.0.0.1:${failing.sidecar.ops!.address.port}`;
      const live = await fetch(`${where}/healthz`);
      const ready = await fetch(`${where}/readyz`);
      const body = (await ready.json()) as { failure?: string };
      const Client = grpc.makeGenericClientConstructor(healthService as grpc.ServiceDefinition, 'Health');
      const client = new Client(`127.0.0.1:${failing.sidecar.address.port}`, grpc.credentials.createInsecure()) as unknown as HealthClient;
      const serving = await new Promise<string>((resolve, reject) =>
        client.check({ service: EXT_PROC_HEALTH_SERVICE }, (error, response) => (error ? reject(error) : resolve(response!.status))),
      );
      client.close();
      expect(failure).to.match(
        /^the capture spool stopped: the spool lock this sidecar lost \(its flock\(1\) ended\) cannot be taken again within 3 s: another process holds it/,
      );
      expect(live.status).to.equal(503);
      expect(await live.text()).to.equal(`unhealthy: ${failure}\n`);
      expect(ready.status).to.equal(503);
      expect(body.failure).to.equal(failure);
      expect(serving).to.equal('NOT_SERVING');
    } finally {
      process.kill(-waiter.pid!, 'SIGKILL');
      await failing.close(500);
      rmSync(spoolDir, { recursive: true, force: true });
    }
  });
});
