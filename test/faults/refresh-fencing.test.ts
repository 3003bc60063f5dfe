// One refresh per grant across sidecars: a refresh claims its grant in a committed Postgres row
// before it calls the IdP, and a refresh of the same grant on another sidecar waits for that
// claim's result instead of spending the refresh token again. The IdP is real oidc-provider with
// refresh-token rotation and reuse detection (a refresh token presented twice revokes the whole
// grant), behind a loopback proxy that holds requests (a slow IdP) and counts the refresh tokens
// it forwards; the sidecars are real `token-tap serve` processes on one Postgres, stopped, killed
// and signalled for real (SIGSTOP, SIGKILL, SIGTERM).
import * as grpc from '@grpc/grpc-js';
import { expect } from 'chai';
import { generateKeySpec, parseKeyRing } from '../../src/keys/key-ring.js';
import { GrantStore } from '../../src/store/grants.js';
import { sealQuarantined } from '../../src/ingest/quarantine.js';
import { migrate } from '../../src/store/migrate.js';
import { refreshAsOkta } from '../support/okta-client.js';
import { startTestIdp, type TestIdp } from '../support/oidc-idp.js';
import { freePort, waitFor } from '../support/ports.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { startSidecarProcess, type SidecarProcess } from '../support/sidecar.js';
import { startSlowTokenProxy, type SlowTokenProxy } from '../support/slow-token-proxy.js';
import { createApiKey, idpConfigFile, loginIntoVault, vaultClient, type VaultClient } from '../support/token-vault.js';

const IDP = 'acme';
const SECRET_ENV = 'TOKEN_TAP_TEST_ACME_SECRET';
const USERS = ['alice', 'bob', 'carol', 'dave', 'erin'];

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface VaultProcess {
  process: SidecarProcess;
  client: VaultClient;
}

describe('refresh fencing across sidecars: a refresh token is spent once', function () {
  this.timeout(90_000);
  let idp: TestIdp;
  let proxy: SlowTokenProxy;
  let db: TestDatabase;
  let store: GrantStore;
  let apiKey: string;
  const keys = generateKeySpec('k1');
  const started: VaultProcess[] = [];

  before(async () => {
    idp = await startTestIdp({ rotateRefreshToken: true, accounts: Object.fromEntries(USERS.map((user) => [user, { email: `${user}@example.test` }])) });
    proxy = await startSlowTokenProxy(idp.tokenUrl);
    db = await createTestDatabase('refresh_fencing');
    await migrate(db.pool);
    store = new GrantStore(db.pool, parseKeyRing(keys), sealQuarantined);
    apiKey = (await createApiKey(db, 'fencing', [IDP], ['get', 'refresh'])).token;
  });
  afterEach(async () => {
    for (const vault of started.splice(0)) {
      vault.client.close();
      try {
        process.kill(vault.process.pid, 'SIGCONT');
      } catch {
        // gone already
      }
      await vault.process.stop('SIGKILL');
    }
    proxy.holdMs = 0;
  });
  after(async () => {
    await proxy?.close();
    await idp?.close();
    await db?.drop();
  });

  /** A sidecar process with its TokenVault API; its IdP token URL is the slow proxy. */
  async function startVault(env: Record<string, string> = {}): Promise<VaultProcess> {
    const apiPort = await freePort();
    const sidecar = await startSidecarProcess({
      port: await freePort(),
      env: {
        DATABASE_URL: db.url,
        TOKEN_TAP_KEYS: keys,
        TOKEN_TAP_IDP_CONFIG: idpConfigFile(idp, IDP, SECRET_ENV, { token_url: proxy.url, timeout_ms: 10_000 }),
        [SECRET_ENV]: idp.clientSecret,
        TOKEN_TAP_API_LISTEN: `127.0.0.1:${apiPort}`,
        LOG_LEVEL: 'info',
        ...env,
      },
    });
    await waitFor('the TokenVault API', async () => (sidecar.logs().includes('TokenVault API ready') ? true : undefined));
    const vault = { process: sidecar, client: vaultClient(apiPort) };
    started.push(vault);
    return vault;
  }

  const refreshOn = (vault: VaultProcess, subject: string, deadlineMs?: number) =>
    vault.client.call('RefreshGrant', { idp: IDP, subject }, apiKey, { deadlineMs }) as Promise<{
      grant: { access_token?: string };
      refreshed_by_this_call: boolean;
    }>;
  const settle = <T>(call: Promise<T>) =>
    call.then(
      (value) => ({ ok: true as const, value }),
      (error: grpc.ServiceError) => ({ ok: false as const, error }),
    );
  const timesForwarded = (refreshToken: string) => proxy.forwarded.filter((token) => token === refreshToken).length;

  /** The vault holds the refresh token the IdP issued last, and the IdP takes it (HTTP 200). */
  async function expectWorkingRefreshToken(subject: string): Promise<void> {
    const stored = (await store.findGrant(IDP, subject))!;
    expect(stored.status).to.equal('active');
    const next = await refreshAsOkta(idp, idp.tokenUrl, stored.refreshToken!);
    expect(next.received.status, 'refreshing again at the IdP with the stored refresh token').to.equal(200);
  }

  it('a refresh on sidecar A stopped while the IdP answers, and one of the same grant on sidecar B: B waits for A, the IdP sees the refresh token once', async () => {
    // A short idle-in-transaction timeout: whatever a stopped sidecar holds in a transaction, Postgres
    // takes away (as a failover or a partition would), while the IdP's answer is still on its way.
    const env = { TOKEN_TAP_API_PG_IDLE_IN_TRANSACTION_TIMEOUT_MS: '1500' };
    const [a, b] = [await startVault(env), await startVault(env)];
    const { login } = await loginIntoVault(idp, { store } as never, IDP, { loginHint: 'alice' });
    const oldRefreshToken = login.tokens.refresh_token!;
    proxy.holdMs = 1_000;
    const onA = settle(refreshOn(a, 'alice'));
    await proxy.whenArrived(proxy.arrived.length + 1);
    process.kill(a.process.pid, 'SIGSTOP');
    // The proxy forwards A's request meanwhile: the IdP rotates, and A, stopped, has not read the answer.
    await pause(2_500);
    proxy.holdMs = 0;
    const onB = settle(refreshOn(b, 'alice'));
    await pause(1_500);
    process.kill(a.process.pid, 'SIGCONT');
    const [resultA, resultB] = await Promise.all([onA, onB]);
    expect(timesForwarded(oldRefreshToken), 'times the IdP saw the old refresh token').to.equal(1);
    expect(resultB.ok, `B: ${resultB.ok ? '' : resultB.error.details}`).to.equal(true);
    expect(resultA.ok, `A: ${resultA.ok ? '' : resultA.error.details}`).to.equal(true);
    if (resultA.ok && resultB.ok) {
      expect(resultB.value.refreshed_by_this_call, 'B served the refresh A made').to.equal(false);
      expect(resultB.value.grant.access_token).to.equal(resultA.value.grant.access_token);
    }
    expect(b.process.logs()).to.contain('waiting for its result instead of spending the refresh token');
    await expectWorkingRefreshToken('alice');
  });

  it('20 RefreshGrant calls at once across two sidecars, the IdP slow: exactly one refresh reaches the IdP, and every call gets its result', async () => {
    const [a, b] = [await startVault(), await startVault()];
    const { login } = await loginIntoVault(idp, { store } as never, IDP, { loginHint: 'bob' });
    const forwardedBefore = proxy.forwarded.length;
    // Longer than the API's statement timeout (2 s): a caller blocked on a row lock would give up.
    proxy.holdMs = 3_000;
    const calls = await Promise.all(Array.from({ length: 20 }, (_, index) => settle(refreshOn(index % 2 === 0 ? a : b, 'bob'))));
    const failures = calls.flatMap((call) => (call.ok ? [] : [`${grpc.status[call.error.code]}: ${call.error.details}`]));
    expect(proxy.forwarded.length - forwardedBefore, 'refreshes that reached the IdP').to.equal(1);
    expect(timesForwarded(login.tokens.refresh_token!)).to.equal(1);
    expect(failures, 'calls that failed').to.deep.equal([]);
    const accessTokens = new Set(calls.map((call) => (call.ok ? call.value.grant.access_token : undefined)));
    expect(accessTokens.size, 'every call answered with the one refreshed access token').to.equal(1);
    expect(calls.filter((call) => call.ok && call.value.refreshed_by_this_call)).to.have.length(1);
    await expectWorkingRefreshToken('bob');
  });

  it('sidecar A claims, then is SIGKILLed before the IdP answers: B refreshes only once the claim has expired, and the token works', async () => {
    // A claim lasts the IdP timeout (2 s) plus the apply window (3 s).
    const env = {
      TOKEN_TAP_REFRESH_APPLY_WINDOW_MS: '3000',
      TOKEN_TAP_IDP_CONFIG: idpConfigFile(idp, IDP, SECRET_ENV, { token_url: proxy.url, timeout_ms: 2_000 }),
    };
    const [a, b] = [await startVault(env), await startVault(env)];
    const { login } = await loginIntoVault(idp, { store } as never, IDP, { loginHint: 'carol' });
    const oldRefreshToken = login.tokens.refresh_token!;
    proxy.holdMs = 30_000;
    const onA = settle(refreshOn(a, 'carol'));
    await proxy.whenArrived(proxy.arrived.length + 1);
    const killedAt = Date.now();
    expect(await a.process.stop('SIGKILL')).to.equal(null);
    expect((await onA).ok).to.equal(false);
    proxy.holdMs = 0;
    // Before the claim expires, B cannot know A is gone (A may be slow): it does not spend the token.
    const early = await settle(refreshOn(b, 'carol', 1_500));
    expect(early.ok, 'B before the claim expired').to.equal(false);
    if (!early.ok) expect(early.error.code).to.equal(grpc.status.UNAVAILABLE);
    expect(timesForwarded(oldRefreshToken), 'times the IdP saw the old refresh token before the claim expired').to.equal(0);
    const late = await refreshOn(b, 'carol');
    expect(Date.now() - killedAt, 'B refreshed only after the claim (5 s) expired').to.be.above(3_000);
    expect(late.refreshed_by_this_call).to.equal(true);
    expect(timesForwarded(oldRefreshToken), 'times the IdP saw the old refresh token').to.equal(1);
    expect(proxy.dropped, "A's request, cut by the kill, never reached the IdP").to.be.at.least(1);
    expect(b.process.logs()).to.contain('taking over an expired refresh claim');
    await expectWorkingRefreshToken('carol');
  });

  it('SIGTERM during a slow refresh: the sidecar waits for it within the grace period, answers the call, and the rotated token is stored', async () => {
    const a = await startVault({ TOKEN_TAP_SHUTDOWN_GRACE_MS: '9000' });
    const { login } = await loginIntoVault(idp, { store } as never, IDP, { loginHint: 'dave' });
    // Longer than half the grace period (what the API had before), shorter than the grace.
    proxy.holdMs = 6_000;
    const onA = settle(refreshOn(a, 'dave'));
    await proxy.whenArrived(proxy.arrived.length + 1);
    const exit = a.process.stop('SIGTERM');
    const result = await onA;
    expect(result.ok, `the RefreshGrant in flight at SIGTERM: ${result.ok ? '' : `${grpc.status[result.error.code]} ${result.error.details}`}`).to.equal(true);
    expect(await exit, 'exit code').to.equal(0);
    const stored = (await store.findGrant(IDP, 'dave'))!;
    expect(stored.refreshToken).to.not.equal(login.tokens.refresh_token);
    const logs = a.process.logs();
    expect(logs).to.match(/"refreshesInFlight":1,"idps":\["acme"\]/);
    expect(logs).to.contain('the refreshes in flight at the stop finished');
    await expectWorkingRefreshToken('dave');
  });

  it('SIGTERM with a refresh slower than the grace period: the stop is logged with what it cut (count and IdPs, no token)', async () => {
    const a = await startVault({ TOKEN_TAP_SHUTDOWN_GRACE_MS: '1500' });
    const { login } = await loginIntoVault(idp, { store } as never, IDP, { loginHint: 'erin' });
    proxy.holdMs = 8_000;
    const onA = settle(refreshOn(a, 'erin'));
    await proxy.whenArrived(proxy.arrived.length + 1);
    expect(await a.process.stop('SIGTERM'), 'exit code').to.equal(0);
    expect((await onA).ok).to.equal(false);
    const logs = a.process.logs();
    expect(logs).to.match(/"refreshesCut":1,"idps":\["acme"\]/);
    for (const token of [login.tokens.refresh_token!, login.tokens.access_token]) expect(logs).to.not.contain(token);
  });
});
