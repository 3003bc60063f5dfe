// Thousands of token calls through one Envoy: every one captured. Envoy ends ext_proc streams with
// RST_STREAM, and the sidecar's HTTP/2 server (nghttp2's reset-flood guard: a burst of 1,000,
// then 33/s) answers a flood of them with GOAWAY, refusing the streams in flight. The rendered
// config drains each sidecar connection after SIDECAR_STREAMS_PER_CONNECTION streams, so no
// connection gets there. Without it this test loses captures at about the 1,000th call.
import { expect } from 'chai';
import { Pool } from 'undici';
import { SIDECAR_STREAMS_PER_CONNECTION, type ProcessingMode } from '../../src/envoyconfig/render.js';
import { tokenRoutePath } from '../../src/contract.js';
import { generateKeySpec } from '../../src/keys/key-ring.js';
import { envoyStat, metricSum, scrapeMetrics } from '../support/faults.js';
import { startEnvoyFront, type RunningEnvoy } from '../support/envoy.js';
import { canned, startFixtureIdp, type FixtureIdp } from '../support/fixture-idp.js';
import { loadIdpFixtures } from '../support/fixtures.js';
import { freePort, waitFor } from '../support/ports.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { startSidecarProcess, type SidecarProcess } from '../support/sidecar.js';

const CALLS = 2_500;
const CONCURRENCY = 32;
const google = loadIdpFixtures().find((fixture) => fixture.idp === 'google')!.cases.find((c) => c.status === 200)!;

for (const mode of ['observability', 'buffered'] as ProcessingMode[]) {
  describe(`${CALLS} token calls through one Envoy (${mode} mode)`, function () {
    this.timeout(120_000);
    let upstream: FixtureIdp;
    let db: TestDatabase;
    let sidecar: SidecarProcess;
    let envoy: RunningEnvoy;
    let origin: string;

    before(async () => {
      upstream = await startFixtureIdp();
      // The fixture IdP closes its socket after each response; saying so keeps Envoy from reusing it.
      upstream.serve('/google/token', canned(google.status, { ...google.headers, Connection: 'close' }, google.body));
      db = await createTestDatabase(`many_${mode}`);
      const sidecarPort = await freePort();
      sidecar = await startSidecarProcess({ port: sidecarPort, env: { DATABASE_URL: db.url, TOKEN_TAP_KEYS: generateKeySpec('k1'), LOG_LEVEL: 'info' } });
      ({ envoy, origin } = await startEnvoyFront({ idps: [{ name: 'google', tokenUrl: new URL(upstream.url('/google/token')) }], sidecarPort, mode }));
    });
    after(async () => {
      await envoy?.stop();
      await sidecar?.stop();
      await upstream?.close();
      await db?.drop();
    });

    it('captures every one, and Envoy spreads the streams over fresh sidecar connections', async () => {
      const client = new Pool(origin, { connections: CONCURRENCY });
      let ok = 0;
      let next = 0;
      const failures = new Map<number, number>();
      const worker = async () => {
        while (next < CALLS) {
          next += 1;
          const response = await client.request({ method: 'POST', path: tokenRoutePath('google'), body: 'grant_type=authorization_code&code=x', headers: { 'content-type': 'application/x-www-form-urlencoded' } });
          await response.body.arrayBuffer();
          if (response.statusCode === 200) ok += 1;
          else failures.set(response.statusCode, (failures.get(response.statusCode) ?? 0) + 1);
        }
      };
      const started = Date.now();
      await Promise.all(Array.from({ length: CONCURRENCY }, worker));
      const seconds = (Date.now() - started) / 1000;
      await client.close();
      const count = async () => (await db.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM capture_events')).rows[0]!.n;
      const stored = await waitFor('every capture in Postgres', async () => ((await count()) >= ok ? count() : undefined), 30_000).catch(count);
      const { values } = await scrapeMetrics(sidecar.opsPort);
      const connections = await envoyStat(envoy, 'cluster.token_tap_sidecar.upstream_cx_total');
      console.log(
        `      ${mode}: ${ok}/${CALLS} calls ok in ${seconds.toFixed(1)} s, ${stored} captured, sidecar saw ${metricSum(values, 'token_tap_extproc_streams_total')} streams ` +
          `(${metricSum(values, 'token_tap_extproc_streams_incomplete_total')} cut short) over ${connections} Envoy connections`,
      );
      expect(Object.fromEntries(failures)).to.deep.equal({});
      expect(ok).to.equal(CALLS);
      expect(stored).to.equal(CALLS);
      expect(metricSum(values, 'token_tap_extproc_streams_incomplete_total')).to.equal(0);
      expect(connections).to.be.at.least(Math.floor(CALLS / SIDECAR_STREAMS_PER_CONNECTION));
    });
  });
}
