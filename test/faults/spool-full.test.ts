// Postgres is away and the spool reaches its cap (TOKEN_TAP_SPOOL_MAX_BYTES): new captures are
// dropped, counted and logged, and no login notices. What the spool kept reaches Postgres later.
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { generateKeySpec } from '../../src/vault/crypto.js';
import { driveLogins, metricSum, scrapeMetrics, startFaultEnvoy, waitForSidecarHealth, type FaultEnvoy } from '../support/faults.js';
import { startTestIdp, type TestIdp } from '../support/oidc-idp.js';
import { freePort, waitFor } from '../support/ports.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { startSidecarProcess, type SidecarProcess } from '../support/sidecar.js';

const CAP_BYTES = 64 * 1024;

describe('the spool at its size cap', function () {
  this.timeout(60_000);
  let idp: TestIdp;
  let db: TestDatabase;
  let port: number;
  let front: FaultEnvoy;
  let spoolDir: string;
  let sidecar: SidecarProcess | undefined;
  const keys = generateKeySpec('k1');

  before(async () => {
    idp = await startTestIdp();
    db = await createTestDatabase('spool_full');
    port = await freePort();
    spoolDir = mkdtempSync(path.join(os.tmpdir(), 'token-tap-spool-'));
    front = await startFaultEnvoy('buffered', idp, port);
  });
  after(async () => {
    await sidecar?.stop('SIGKILL');
    await front?.stop();
    await idp?.close();
    await db?.drop();
    rmSync(spoolDir, { recursive: true, force: true });
  });

  async function start(databaseUrl: string): Promise<SidecarProcess> {
    sidecar = await startSidecarProcess({
      port,
      env: { DATABASE_URL: databaseUrl, TOKEN_TAP_KEYS: keys, TOKEN_TAP_SPOOL_DIR: spoolDir, TOKEN_TAP_SPOOL_MAX_BYTES: String(CAP_BYTES), TOKEN_TAP_SHUTDOWN_GRACE_MS: '1000', LOG_LEVEL: 'info' },
    });
    await waitForSidecarHealth(front.envoy, true);
    return sidecar;
  }

  it('drops new captures, counts and logs each drop, and every login still succeeds', async () => {
    const running = await start(`postgres://postgres@127.0.0.1:${await freePort()}/nowhere`);
    const tally = await driveLogins(idp, front.tokenUrl, { count: 80 });
    const metrics = await waitFor(
      'every capture spooled or dropped',
      async () => {
        const { values } = await scrapeMetrics(running.opsPort);
        const spooled = metricSum(values, 'token_tap_spool_captures_total');
        const dropped = values.get('token_tap_captures_dropped_total{reason="spool_full"}') ?? 0;
        return spooled + dropped >= tally.ok ? { spooled, dropped, bytes: metricSum(values, 'token_tap_spool_bytes') } : undefined;
      },
      10_000,
    );
    // pino writes asynchronously: the last log lines may trail the counter by a moment.
    const countLogged = () => running.logs().split('\n').filter((line) => line.includes('"msg":"capture dropped"') && line.includes('"reason":"spool_full"')).length;
    const logged = await waitFor('every drop logged', async () => (countLogged() >= metrics.dropped ? countLogged() : undefined), 5_000).catch(countLogged);
    const readyz = (await (await fetch(`http://127.0.0.1:${running.opsPort}/readyz`)).json()) as { spool: { full: boolean } };
    console.log(
      `      spool cap ${CAP_BYTES} bytes, Postgres away: logins ok ${tally.ok}/${tally.total}, bytes unchanged ${tally.unchanged}/${tally.total}; ` +
        `spooled ${metrics.spooled} (${metrics.bytes} bytes), dropped ${metrics.dropped} (counter), ${logged} "capture dropped" log lines; /readyz spool.full ${readyz.spool.full}`,
    );
    expect(tally.failures).to.deep.equal([]);
    expect(tally.ok).to.equal(tally.total);
    expect(tally.unchanged).to.equal(tally.total);
    expect(metrics.dropped).to.be.greaterThan(0);
    expect(logged).to.equal(metrics.dropped);
    expect(metrics.bytes).to.be.at.most(CAP_BYTES);
    expect(readyz.spool.full).to.equal(true);

    await running.stop('SIGTERM');
    const restarted = await start(db.url);
    await waitFor(
      'the kept captures in Postgres',
      async () => (metricSum((await scrapeMetrics(restarted.opsPort)).values, 'token_tap_capture_queue_depth') === 0 ? true : undefined),
      20_000,
    );
    const { rows } = await db.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM capture_events');
    console.log(`      after Postgres came back: ${rows[0]!.n}/${metrics.spooled} spooled captures in Postgres`);
    expect(rows[0]!.n).to.equal(metrics.spooled);
  });
});
