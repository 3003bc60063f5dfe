// Thousands of token calls through one Envoy: every one captured. Envoy ends ext_proc streams with
// RST_STREAM, and the sidecar's HTTP/2 server (nghttp2's reset-flood guard: a burst of 1,000,
// then 33/s) answers a flood of them with GOAWAY, refusing the streams in flight. The rendered
// config drains each sidecar connection after SIDECAR_STREAMS_PER_CONNECTION streams, so no
// connection gets there. Without it this test loses captures at about the 1,000th call.
// Envoy 1.40 counts each connection it drains that way in upstream_cx_protocol_error: it closes
// the connection from inside the frame callback that ended its last stream, and its HTTP/2 codec
// reports that as "Connection was closed while dispatching frames" (docs/envoy-stats.md has the
// source). So the counter is 0 until a connection reaches the limit, then at most one per drained
// connection, with nothing lost; anything beyond that would be a real protocol error.
import { expect } from 'chai';
import { Pool } from 'undici';
import { SIDECAR_STREAMS_PER_CONNECTION } from '../../src/envoyconfig/clusters.js';
import type { ProcessingMode } from '../../src/envoyconfig/options.js';
import { tokenRoutePath } from '../../src/contract.js';
import { generateKeySpec } from '../../src/keys/key-ring.js';
import { metricSum, scrapeMetrics } from '../support/faults.js';
import { startEnvoyFront, type RunningEnvoy } from '../support/envoy.js';
import { canned, startFixtureIdp, type FixtureIdp } from '../support/fixture-idp.js';
import { loadIdpFixtures } from '../support/fixtures.js';
import { freePort, waitFor } from '../support/ports.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { startSidecarProcess, type SidecarProcess } from '../support/sidecar.js';

const CALLS = 2_500;
const CONCURRENCY = 32;
const google = loadIdpFixtures()
  .find((fixture) => fixture.idp === 'google')!
  .cases.find((c) => c.status === 200)!;

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
      const sidecarStats = async () => {
        const stats = await envoy.stats();
        const stat = (name: string) => stats.get(`cluster.token_tap_sidecar.${name}`) ?? 0;
        return {
          connections: stat('upstream_cx_total'),
          drained: stat('upstream_cx_max_requests'),
          protocolErrors: stat('upstream_cx_protocol_error'),
          // What would be a real fault of the sidecar's side: its GOAWAY, a connection it closed under streams, a stream it reset.
          goaways: stat('upstream_cx_close_notify'),
          closedUnderStreams: stat('upstream_cx_destroy_remote_with_active_rq'),
          streamsResetBySidecar: stat('upstream_rq_rx_reset'),
        };
      };
      let limit = 0;
      const worker = async () => {
        while (next < limit) {
          next += 1;
          const response = await client.request({
            method: 'POST',
            path: tokenRoutePath('google'),
            body: 'grant_type=authorization_code&code=x',
            headers: { 'content-type': 'application/x-www-form-urlencoded' },
          });
          await response.body.arrayBuffer();
          if (response.statusCode === 200) ok += 1;
          else failures.set(response.statusCode, (failures.get(response.statusCode) ?? 0) + 1);
        }
      };
      const started = Date.now();
      // First fewer streams than one connection carries: no connection drained, no protocol error.
      limit = SIDECAR_STREAMS_PER_CONNECTION - 100;
      await Promise.all(Array.from({ length: CONCURRENCY }, worker));
      const belowLimit = await sidecarStats();
      limit = CALLS;
      await Promise.all(Array.from({ length: CONCURRENCY }, worker));
      const seconds = (Date.now() - started) / 1000;
      await client.close();
      const count = async () => (await db.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM capture_events')).rows[0]!.n;
      const stored = await waitFor('every capture in Postgres', async () => ((await count()) >= ok ? count() : undefined), 30_000).catch(count);
      const { values } = await scrapeMetrics(sidecar.opsPort);
      const all = await sidecarStats();
      const connections = all.connections;
      console.log(
        `      ${mode}: Envoy's sidecar cluster after ${SIDECAR_STREAMS_PER_CONNECTION - 100} calls ${JSON.stringify(belowLimit)}; after ${CALLS} ${JSON.stringify(all)}`,
      );
      console.log(
        `      ${mode}: ${ok}/${CALLS} calls ok in ${seconds.toFixed(1)} s, ${stored} captured, sidecar saw ${metricSum(values, 'token_tap_extproc_streams_total')} streams ` +
          `(${metricSum(values, 'token_tap_extproc_streams_incomplete_total')} cut short) over ${connections} Envoy connections`,
      );
      expect(Object.fromEntries(failures)).to.deep.equal({});
      expect(ok).to.equal(CALLS);
      expect(stored).to.equal(CALLS);
      expect(metricSum(values, 'token_tap_extproc_streams_incomplete_total')).to.equal(0);
      expect(connections).to.be.at.least(Math.floor(CALLS / SIDECAR_STREAMS_PER_CONNECTION));
      expect(belowLimit, 'below the per-connection limit').to.deep.include({ drained: 0, protocolErrors: 0 });
      expect(all.drained).to.be.at.least(Math.floor(CALLS / SIDECAR_STREAMS_PER_CONNECTION) - 1);
      // At most one per connection Envoy drained itself: the close it makes while dispatching (docs/envoy-stats.md).
      expect(all.protocolErrors, 'upstream_cx_protocol_error').to.be.at.most(all.drained);
      expect(all, 'nothing from the sidecar ended a connection or a stream').to.deep.include({ goaways: 0, closedUnderStreams: 0, streamsResetBySidecar: 0 });
    });
  });
}
