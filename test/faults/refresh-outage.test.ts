// A Postgres outage longer than a refresh claim (the IdP timeout plus the apply window), begun
// after the IdP answered the refresh: the holder's answer cannot reach Postgres, and its claim
// expires while Postgres is down. Once Postgres is back, another sidecar asked to refresh the same
// grant must not take the expired claim over at once (it would present the spent refresh token, and
// the IdP's reuse detection revokes the whole grant): it waits one apply window, and the holder
// writes its kept answer as soon as Postgres answers, ahead of its spool. Real oidc-provider with
// rotation and reuse detection behind a proxy that holds the refresh; a Postgres cluster of the
// test's own, stopped and started with pg_ctl; two refreshers, each with its own pool, stand in for
// the two sidecars' TokenVault APIs (the holder's spool is one whose backlog it never reaches).
import { expect } from 'chai';
import { IdpClient } from '../../src/idp/client.js';
import { GrantRefresher } from '../../src/operations/refresh.js';
import { generateKeySpec, parseKeyRing } from '../../src/keys/key-ring.js';
import { GrantStore } from '../../src/store/grants.js';
import { sealQuarantined } from '../../src/ingest/quarantine.js';
import { migrate } from '../../src/store/migrate.js';
import { createPool } from '../../src/store/pool.js';
import { readClaim } from '../../src/store/refresh-claims.js';
import { refreshAsOkta } from '../support/okta-client.js';
import { startTestIdp, type TestIdp } from '../support/oidc-idp.js';
import { startSlowTokenProxy, type SlowTokenProxy } from '../support/slow-token-proxy.js';
import { startThrowawayPostgres, type ThrowawayPostgres } from '../support/throwaway-postgres.js';
import { loginIntoVault } from '../support/token-vault.js';

const IDP = 'acme';
const IDP_TIMEOUT_MS = 1_000;
const APPLY_WINDOW_MS = 3_000;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('refresh across a Postgres outage longer than the claim', function () {
  this.timeout(60_000);
  let cluster: ThrowawayPostgres;
  let idp: TestIdp;
  let proxy: SlowTokenProxy;
  const keys = generateKeySpec('k1');

  before(async () => {
    cluster = await startThrowawayPostgres();
    cluster.createDatabase('tap');
    idp = await startTestIdp({ rotateRefreshToken: true, accounts: { alice: { email: 'alice@example.test' } } });
    proxy = await startSlowTokenProxy(idp.tokenUrl);
  });
  after(async () => {
    await proxy?.close();
    await idp?.close();
    cluster?.destroy();
  });

  it('the other sidecar waits one apply window after Postgres is back, the holder writes its kept answer, and the IdP sees the old refresh token once', async () => {
    const pools = [0, 1, 2].map(() =>
      createPool({
        databaseUrl: cluster.url('tap'),
        max: 2,
        timeouts: { connectTimeoutMs: 1_000, statementTimeoutMs: 2_000, queryTimeoutMs: 3_000, idleInTransactionMs: 5_000, keepAliveMs: 1_000 },
      }),
    );
    const [testPool, poolA, poolB] = pools as [(typeof pools)[0], (typeof pools)[0], (typeof pools)[0]];
    try {
      await migrate(testPool);
      const ring = parseKeyRing(keys);
      const store = new GrantStore(testPool, ring, sealQuarantined);
      const { login } = await loginIntoVault(idp, { store } as never, IDP, { loginHint: 'alice' });
      const oldRefreshToken = login.tokens.refresh_token!;
      const client = () =>
        new IdpClient(
          {
            idp: IDP,
            tokenUrl: new URL(proxy.url),
            revocationUrl: undefined,
            clientId: idp.clientId,
            authMethod: 'client_secret_basic',
            timeoutMs: IDP_TIMEOUT_MS,
          },
          idp.clientSecret,
        );
      const refresher = (pool: typeof poolA) =>
        new GrantRefresher({
          pool,
          store: new GrantStore(pool, ring, sealQuarantined),
          clients: new Map([[IDP, client()]]),
          applyWindowMs: APPLY_WINDOW_MS,
          pollMs: 50,
          keptRetryMs: { initial: 50, max: 200 },
          outbox: async () => true,
        });
      const [a, b] = [refresher(poolA), refresher(poolB)];

      // A claims and calls the IdP; Postgres goes down while the IdP answers.
      proxy.holdMs = 300;
      const onA = a.refresh(IDP, 'alice').then(
        () => 'ok',
        (error: Error) => error.message,
      );
      await proxy.whenArrived(proxy.arrived.length + 1);
      cluster.stop('immediate');
      const outageStarted = Date.now();
      expect(await onA, "A's refresh: its write failed").to.not.equal('ok');
      expect(proxy.forwarded.filter((token) => token === oldRefreshToken)).to.have.length(1);
      // Longer than the claim: it has expired by Postgres's clock when Postgres is back.
      await sleep(IDP_TIMEOUT_MS + APPLY_WINDOW_MS + 1_000 - (Date.now() - outageStarted));
      cluster.start();
      const backAt = Date.now();

      const onB = await b.refresh(IDP, 'alice', { waitUntil: Date.now() + 15_000 }).then(
        (result) => ({ ok: true as const, result }),
        (error: Error) => ({ ok: false as const, message: error.message }),
      );
      console.log(
        `      outage ${backAt - outageStarted} ms (claim ${IDP_TIMEOUT_MS + APPLY_WINDOW_MS} ms); B answered ${Date.now() - backAt} ms after Postgres was back: ` +
          `${onB.ok ? `OK, refreshed_by_this_call ${onB.result.refreshedByThisCall}` : onB.message}; the IdP saw the old refresh token ${proxy.forwarded.filter((token) => token === oldRefreshToken).length} time(s)`,
      );
      expect(
        proxy.forwarded.filter((token) => token === oldRefreshToken),
        'times the IdP saw the old refresh token',
      ).to.have.length(1);
      expect(onB.ok, onB.ok ? '' : onB.message).to.equal(true);
      const stored = (await store.findGrant(IDP, 'alice'))!;
      expect(stored.status).to.equal('active');
      expect(stored.refreshToken).to.not.equal(oldRefreshToken);
      expect(await readClaim(testPool, IDP, 'alice'), 'the claim released by the holder').to.equal(undefined);
      const next = await refreshAsOkta(idp, idp.tokenUrl, stored.refreshToken!);
      expect(next.received.status, 'refreshing again at the IdP with the stored refresh token').to.equal(200);
    } finally {
      await Promise.all(pools.map((pool) => pool.end().catch(() => undefined)));
    }
  });
});
