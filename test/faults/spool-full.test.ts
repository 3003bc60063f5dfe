// Postgres is away and the spool reaches its cap (TOKEN_TAP_SPOOL_MAX_BYTES): new captures are
// dropped, counted and logged, and no login notices. What the spool kept reaches Postgres later.
import { expect } from 'chai';
import { driveLogins, metricSum, scrapeMetrics, sidecarMetric, type SpoolRig, startSpoolRig, unreachableDatabaseUrl } from '../support/faults.js';
import { waitFor } from '../support/ports.js';

const CAP_BYTES = 64 * 1024;

describe('the spool at its size cap', function () {
  this.timeout(60_000);
  let rig: SpoolRig;

  before(async () => {
    rig = await startSpoolRig('buffered', 'spool_full');
  });
  after(async () => rig?.close());

  const start = (databaseUrl: string) => rig.start(databaseUrl, { TOKEN_TAP_SPOOL_MAX_BYTES: String(CAP_BYTES), TOKEN_TAP_SHUTDOWN_GRACE_MS: '1000' });

  it('drops new captures, counts and logs each drop, and every login still succeeds', async () => {
    const running = await start(await unreachableDatabaseUrl());
    const tally = await driveLogins(rig.idp, rig.front.tokenUrl, { count: 80 });
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
    const countLogged = () =>
      running
        .logs()
        .split('\n')
        .filter((line) => line.includes('"msg":"capture dropped"') && line.includes('"reason":"spool_full"')).length;
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

    await rig.stopSidecar('SIGTERM');
    const restarted = await start(rig.db.url);
    await waitFor(
      'the kept captures in Postgres',
      async () => ((await sidecarMetric(restarted.opsPort, 'token_tap_capture_queue_depth')) === 0 ? true : undefined),
      20_000,
    );
    const { rows } = await rig.db.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM capture_events');
    console.log(`      after Postgres came back: ${rows[0]!.n}/${metrics.spooled} spooled captures in Postgres`);
    expect(rows[0]!.n).to.equal(metrics.spooled);
  });
});
