// token_tap_listener_up: a configured listener that cannot start (here the token exchange with a
// TLS key that is no PEM) is only logged and the sidecar goes on capturing, so the gauge is what an
// alert sees: 0 for it, 1 for the API beside it. And the exchange's TLS handshakes are bounded.
import { writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { expect } from 'chai';
import { stringify } from 'yaml';
import { generateKeySpec } from '../../src/keys/key-ring.js';
import { TLS_HANDSHAKE_TIMEOUT_MS } from '../../src/exchange/server.js';
import { createTestCa } from '../support/certificates.js';
import { metricValue } from '../support/metrics.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { startVaultSidecar, tempDir, type VaultSidecar } from '../support/token-vault.js';

describe('listeners: token_tap_listener_up and the exchange TLS handshake bound', function () {
  this.timeout(60_000);
  let db: TestDatabase;
  let vault: VaultSidecar | undefined;
  let exchangeConfig: string;
  const ca = createTestCa();
  const leaf = ca.issue('token-tap-exchange', 'IP:127.0.0.1');

  before(async () => {
    db = await createTestDatabase('listener_up');
    exchangeConfig = path.join(tempDir('listener-up'), 'exchange.yaml');
    writeFileSync(
      exchangeConfig,
      stringify({
        subject_issuers: [{ issuer: 'https://okta.example.test/oauth2/default', audiences: ['api://default'] }],
        providers: [{ idp: 'entra', okta_idp_id: '0oaENTRA1', idp_claim: 'upstream_idp', match: 'claim:upstream_sub', allow_unverified: true }],
      }),
    );
  });
  afterEach(async () => {
    await vault?.close();
    vault = undefined;
  });
  after(async () => db?.drop());

  const exchangeEnv = (keyFile: string) => ({
    TOKEN_TAP_KEYS: generateKeySpec('k1'),
    TOKEN_TAP_EXCHANGE_LISTEN: '127.0.0.1:0',
    TOKEN_TAP_EXCHANGE_CONFIG: exchangeConfig,
    TOKEN_TAP_EXCHANGE_TLS_CERT: leaf.certFile,
    TOKEN_TAP_EXCHANGE_TLS_KEY: keyFile,
  });

  it('reads 0 for an exchange whose TLS key is no PEM, 1 for the API; no series for the hook, which is off', async () => {
    const badKey = path.join(tempDir('listener-up'), 'broken.key');
    writeFileSync(badKey, '-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n');
    vault = await startVaultSidecar(db, exchangeEnv(badKey));
    expect(vault.sidecar.exchange).to.equal(undefined);
    expect(vault.logs()).to.contain('the token exchange listener cannot start');
    const { metrics } = vault.sidecar;
    expect(await metricValue(metrics, 'listenerUp', { listener: 'exchange' })).to.equal(0);
    expect(await metricValue(metrics, 'listenerUp', { listener: 'api' })).to.equal(1);
    const exposition = await metrics.registry.metrics();
    expect(exposition).to.contain('token_tap_listener_up{listener="exchange"} 0').and.contain('token_tap_listener_up{listener="api"} 1');
    expect(exposition).to.not.contain('listener="hook"');
  });

  it("reads 1 for a working TLS exchange, and drops a client that never finishes its handshake after TLS_HANDSHAKE_TIMEOUT_MS, not Node's 120 s", async () => {
    expect(TLS_HANDSHAKE_TIMEOUT_MS).to.be.at.most(10_000);
    vault = await startVaultSidecar(db, exchangeEnv(leaf.keyFile));
    const exchange = vault.sidecar.exchange;
    if (!exchange) throw new Error(`the token exchange did not start:\n${vault.logs()}`);
    expect(await metricValue(vault.sidecar.metrics, 'listenerUp', { listener: 'exchange' })).to.equal(1);
    const started = Date.now();
    const closedAfter = await new Promise<number>((resolve, reject) => {
      const socket = net.connect(exchange.address.port, '127.0.0.1');
      socket.on('error', () => undefined);
      socket.on('close', () => resolve(Date.now() - started));
      setTimeout(() => {
        socket.destroy();
        reject(new Error('a silent client was still connected after 20 s'));
      }, 20_000);
    });
    expect(closedAfter).to.be.within(TLS_HANDSHAKE_TIMEOUT_MS - 500, TLS_HANDSHAKE_TIMEOUT_MS + 3_000);
  });
});
