// Postgres goes away for 30 s while logins keep coming (a cluster of the test's own, stopped with
// pg_ctl): no login notices, the captures wait in the spool, and once Postgres is back every one
// of them is written, once.
import { expect } from 'chai';
import pg from 'pg';
import { parseKeyRing, generateKeySpec } from '../../src/keys/key-ring.js';
import {
  driveLogins,
  type FaultEnvoy,
  sidecarMetric,
  startFaultEnvoy,
  storedFingerprints,
  tallyFingerprints,
  waitForSidecarHealth,
} from '../support/faults.js';
import { startTestIdp, type TestIdp } from '../support/oidc-idp.js';
import { freePort, waitFor } from '../support/ports.js';
import { startSidecarProcess, type SidecarProcess } from '../support/sidecar.js';
import { startThrowawayPostgres, type ThrowawayPostgres } from '../support/throwaway-postgres.js';

const OUTAGE_MS = 30_000;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('Postgres unavailable for 30 s during steady logins', function () {
  this.timeout(150_000);
  let cluster: ThrowawayPostgres;
  let idp: TestIdp;
  let sidecar: SidecarProcess;
  let front: FaultEnvoy;
  const keys = generateKeySpec('k1');

  before(async () => {
    cluster = await startThrowawayPostgres();
    cluster.createDatabase('tap');
    idp = await startTestIdp();
    const port = await freePort();
    sidecar = await startSidecarProcess({ port, env: { DATABASE_URL: cluster.url('tap'), TOKEN_TAP_KEYS: keys, LOG_LEVEL: 'info' } });
    front = await startFaultEnvoy('observability', idp, port);
    await waitForSidecarHealth(front.envoy, true);
  });
  after(async () => {
    await front?.stop();
    await sidecar?.stop();
    await idp?.close();
    cluster?.destroy();
  });

  it('every login succeeds, and once Postgres is back every capture is in it exactly once', async () => {
    let done = false;
    const driving = driveLogins(idp, front.tokenUrl, { concurrency: 2, until: () => done });
    await sleep(3_000);

    cluster.stop('fast');
    const outageStarted = Date.now();
    const readyStatuses = new Set<number>();
    const storeConditions = new Set<string>();
    let livenessFailures = 0;
    let peakSpooled = 0;
    while (Date.now() - outageStarted < OUTAGE_MS) {
      const ready = await fetch(`http://127.0.0.1:${sidecar.opsPort}/readyz`);
      readyStatuses.add(ready.status);
      storeConditions.add(((await ready.json()) as { store: { condition: string } }).store.condition);
      if ((await fetch(`http://127.0.0.1:${sidecar.opsPort}/healthz`)).status !== 200) livenessFailures += 1;
      peakSpooled = Math.max(peakSpooled, await sidecarMetric(sidecar.opsPort, 'token_tap_capture_queue_depth'));
      await sleep(1_000);
    }
    cluster.start();
    const outageMs = Date.now() - outageStarted;
    await sleep(3_000);
    done = true;
    const tally = await driving;

    const pool = new pg.Pool({ connectionString: cluster.url('tap'), max: 1 });
    try {
      const recoveryStarted = Date.now();
      await waitFor(
        'every capture in Postgres',
        async () => {
          const { rows } = await pool.query<{ n: number }>('SELECT count(*)::int AS n FROM capture_events');
          return rows[0]!.n >= tally.ok ? true : undefined;
        },
        30_000,
        200,
      );
      const recoveredInMs = Date.now() - recoveryStarted;
      const events = await storedFingerprints(pool);
      const { stored, duplicated, missing } = tallyFingerprints(parseKeyRing(keys), tally.accessTokens, events);
      const spooledAfter = await sidecarMetric(sidecar.opsPort, 'token_tap_capture_queue_depth');
      console.log(
        `      Postgres down ${(outageMs / 1000).toFixed(1)} s: logins ok ${tally.ok}/${tally.total}, bytes unchanged ${tally.unchanged}/${tally.total}; ` +
          `captures stored ${stored}/${tally.ok}, duplicated ${duplicated}, missing ${missing}, events ${events.length}; ` +
          `spool peak ${peakSpooled}, after ${spooledAfter}; /readyz statuses [${[...readyStatuses]}] store [${[...storeConditions]}], /healthz failures ${livenessFailures}; ` +
          `all in Postgres ${recoveredInMs} ms after the test looked`,
      );
      expect(tally.failures).to.deep.equal([]);
      expect(tally.ok).to.equal(tally.total);
      expect(tally.unchanged).to.equal(tally.total);
      expect(peakSpooled, 'captures waited in the spool during the outage').to.be.greaterThan(0);
      expect([...storeConditions]).to.include('unavailable');
      expect([...readyStatuses]).to.deep.equal([200]);
      expect(livenessFailures).to.equal(0);
      expect({ stored, duplicated, missing, events: events.length }).to.deep.equal({ stored: tally.ok, duplicated: 0, missing: 0, events: tally.ok });
      expect(spooledAfter).to.equal(0);
    } finally {
      await pool.end();
    }
  });
});
