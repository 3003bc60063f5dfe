// Postgres blackholed for 20 s under steady logins through the real Envoy: connections stay open
// but nothing comes back (no reset, no refusal), so only the sidecar's own timeouts can tell.
// Logins go on, captures wait in the spool and all reach Postgres after the heal, and TokenVault
// calls answer (UNAVAILABLE is fine) within 5 s throughout.
import { expect } from 'chai';
import * as grpc from '@grpc/grpc-js';
import { parseKeyRing } from '../../src/keys/key-ring.js';
import { startBlackholeProxy, type BlackholeProxy } from '../support/blackhole-proxy.js';
import { driveLogins, sidecarMetric, type SpoolRig, startSpoolRig, storedFingerprints, tallyFingerprints } from '../support/faults.js';
import { freePort, waitFor } from '../support/ports.js';
import { createApiKey, vaultClient } from '../support/token-vault.js';

const BLACKHOLE_MS = 20_000;
const API_BOUND_MS = 5_000;

describe('Postgres blackholed for 20 s (connections open, nothing forwarded) during steady logins', function () {
  this.timeout(120_000);
  let rig: SpoolRig;
  let proxy: BlackholeProxy;

  beforeEach(async () => {
    rig = await startSpoolRig('observability', 'pg_blackhole');
    const direct = new URL(rig.db.url);
    proxy = await startBlackholeProxy({ host: direct.hostname, port: Number(direct.port || 5432) });
  });
  afterEach(async () => {
    await rig?.close();
    await proxy?.close();
  });

  it('logins all succeed, every capture reaches Postgres after the heal, and the API answers within 5 s', async () => {
    const proxied = new URL(rig.db.url);
    proxied.host = `127.0.0.1:${proxy.port}`;
    const apiPort = await freePort();
    const sidecar = await rig.start(proxied.toString(), { TOKEN_TAP_API_LISTEN: `127.0.0.1:${apiPort}` });
    await waitFor('the schema', async () => ((await sidecarMetric(sidecar.opsPort, 'token_tap_postgres_up')) === 1 ? true : undefined), 20_000);
    const key = (await createApiKey(rig.db, 'blackhole-probe', ['demo'], ['get'])).token;
    const api = vaultClient(apiPort);

    const warm = await driveLogins(rig.idp, rig.front.tokenUrl, { count: 5, concurrency: 1 });
    await waitFor('the first captures in Postgres', async () => ((await storedFingerprints(rig.db.pool)).length >= warm.ok ? true : undefined), 20_000);
    const { rows } = await rig.db.pool.query<{ subject: string }>("SELECT subject FROM grants WHERE idp = 'demo' LIMIT 1");
    const subject = rows[0]!.subject;

    // The phases, by the clock: 3 s healthy, 20 s blackhole, 5 s after the heal.
    const started = Date.now();
    const holeAt = started + 3_000;
    const healAt = holeAt + BLACKHOLE_MS;
    const endAt = healAt + 5_000;
    let holed = false;
    let healed = false;
    const calls: Array<{ at: 'before' | 'during' | 'after'; ms: number; code: grpc.status }> = [];
    const probe = async () => {
      while (Date.now() < endAt) {
        const at = holed ? (healed ? 'after' : 'during') : 'before';
        const callStarted = Date.now();
        let code: grpc.status = grpc.status.OK;
        try {
          await api.call('GetGrant', { idp: 'demo', subject }, key);
        } catch (error) {
          code = (error as grpc.ServiceError).code;
        }
        calls.push({ at, ms: Date.now() - callStarted, code });
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
    };
    const faults = (async () => {
      await new Promise((resolve) => setTimeout(resolve, holeAt - Date.now()));
      proxy.blackhole();
      holed = true;
      await new Promise((resolve) => setTimeout(resolve, healAt - Date.now()));
      proxy.heal();
      healed = true;
    })();
    // Four callers at once: each waits on the key check and the audit row, queued behind the others'.
    const [tally] = await Promise.all([
      driveLogins(rig.idp, rig.front.tokenUrl, { until: () => Date.now() >= endAt, concurrency: 2 }),
      ...[1, 2, 3, 4].map(() => probe()),
      faults,
    ]);
    api.close();

    const healedAt = Date.now();
    const all = [...warm.accessTokens, ...tally.accessTokens];
    const ok = warm.ok + tally.ok;
    await waitFor(
      'every capture in Postgres after the heal',
      async () => ((await storedFingerprints(rig.db.pool)).length >= ok ? true : undefined),
      60_000,
      200,
    );
    const caughtUpMs = Date.now() - healedAt;
    const { stored, duplicated, missing } = tallyFingerprints(parseKeyRing(rig.keys), all, await storedFingerprints(rig.db.pool));

    const during = calls.filter((call) => call.at === 'during');
    const after = calls.filter((call) => call.at === 'after');
    const slowest = Math.max(...calls.map((call) => call.ms));
    const slowestDuring = Math.max(...during.map((call) => call.ms));
    const codes = (list: typeof calls) =>
      Object.entries(
        list.reduce<Record<string, number>>((sum, call) => {
          sum[grpc.status[call.code]] = (sum[grpc.status[call.code]] ?? 0) + 1;
          return sum;
        }, {}),
      )
        .map(([code, n]) => `${code} ${n}`)
        .join(', ');
    console.log(
      `      blackhole ${BLACKHOLE_MS} ms: logins ok ${tally.ok}/${tally.total} (+${warm.ok} before), slowest login ${tally.slowestMs} ms, bytes unchanged ${tally.unchanged}/${tally.total}; ` +
        `captures in Postgres ${stored}/${ok}, duplicated ${duplicated}, missing ${missing}, all in ${caughtUpMs} ms after the last login (heal + 5 s); ` +
        `GetGrant during the blackhole ${during.length} calls (${codes(during)}), slowest ${slowestDuring} ms; after the heal ${after.length} (${codes(after)}); slowest API answer overall ${slowest} ms; ` +
        `proxy connections ${proxy.accepted}`,
    );
    expect(tally.ok).to.equal(tally.total);
    expect(tally.unchanged).to.equal(tally.total);
    expect({ stored, duplicated, missing }).to.deep.equal({ stored: ok, duplicated: 0, missing: 0 });
    expect(during.length).to.be.greaterThan(3);
    expect(slowest).to.be.below(API_BOUND_MS);
    expect(during.every((call) => call.code === grpc.status.UNAVAILABLE || call.code === grpc.status.OK)).to.equal(true);
    // Clients cut off by the blackhole were discarded, not reused: the API serves again after the heal.
    expect(after.some((call) => call.code === grpc.status.OK)).to.equal(true);
  });
});
