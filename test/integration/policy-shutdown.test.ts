// A stopping sidecar starts no policy rotation: close() stops the runner (and the refresher refuses
// the policy's work) first, before it waits on its listeners, here a token exchange whose close takes
// seconds. The IdP's token endpoint counts every refresh it is asked for.
import { mkdtempSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { stringify } from 'yaml';
import { sealQuarantined } from '../../src/ingest/quarantine.js';
import { generateKeySpec, parseKeyRing } from '../../src/keys/key-ring.js';
import { GrantStore } from '../../src/store/grants.js';
import { migrate } from '../../src/store/migrate.js';
import { syntheticCapture } from '../support/captures.js';
import { startInProcessSidecar } from '../support/in-process.js';
import { freePort, waitFor } from '../support/ports.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';

/** A token endpoint that rotates every refresh token it is given, noting when each request came. */
async function startRotatingIdp(): Promise<{ url: string; calls: number[]; close(): Promise<void> }> {
  const calls: number[] = [];
  let n = 0;
  const server = http.createServer((req, res) => {
    calls.push(Date.now());
    req.resume();
    req.on('end', () => {
      res.setHeader('Content-Type', 'application/json');
      res.end(JSON.stringify({ access_token: `at-${(n += 1)}`, refresh_token: `rt-${n}`, token_type: 'Bearer', expires_in: 3600 }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}/token`,
    calls,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

describe('refresh-token policy at shutdown (Postgres, in-process sidecar)', () => {
  let db: TestDatabase;
  let idp: Awaited<ReturnType<typeof startRotatingIdp>>;

  before(async () => {
    db = await createTestDatabase('policy_shutdown');
    await migrate(db.pool);
    idp = await startRotatingIdp();
  });
  after(async () => {
    await idp?.close();
    await db?.drop();
  });

  it('no rotation starts after close() began, though the exchange takes seconds to close', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'token-tap-policy-stop-'));
    const idps = path.join(dir, 'idps.yaml');
    writeFileSync(
      idps,
      stringify({ idps: { acme: { client_id: 'c1', token_url: idp.url, client_secret_env: 'ACME_SECRET', refresh_token_policy: { rotate_every: '1s' } } } }),
    );
    const exchange = path.join(dir, 'exchange.yaml');
    writeFileSync(
      exchange,
      stringify({
        subject_issuers: [{ issuer: 'https://okta.example/oauth2/default', audiences: ['api://default'], jwks_uri: 'https://okta.example/keys' }],
        providers: [{ idp: 'acme', okta_idp_id: '0oaACME1', match: 'email' }],
      }),
    );
    const keys = generateKeySpec();
    const store = new GrantStore(db.pool, parseKeyRing(keys), sealQuarantined);
    await store.recordCaptures(
      ['u1', 'u2', 'u3'].map((subject) => syntheticCapture('acme', subject, { observedAt: new Date(Date.now() - 60_000), clientId: 'c1' })),
    );
    const running = await startInProcessSidecar({
      DATABASE_URL: db.url,
      TOKEN_TAP_KEYS: keys,
      TOKEN_TAP_FINGERPRINT_KEY: Buffer.alloc(32, 3).toString('base64'),
      TOKEN_TAP_IDP_CONFIG: idps,
      ACME_SECRET: 'acme-secret',
      TOKEN_TAP_POLICY_INTERVAL: '1s',
      TOKEN_TAP_API_LISTEN: 'off',
      TOKEN_TAP_EXCHANGE_LISTEN: `127.0.0.1:${await freePort()}`,
      TOKEN_TAP_EXCHANGE_CONFIG: exchange,
    });
    let closed = false;
    try {
      const exchangeServer = running.sidecar.exchange;
      expect(exchangeServer, running.log.text()).to.not.equal(undefined);
      // Rotating: each run refreshes the three grants again (rotate_every 1s).
      await waitFor('policy rotations', async () => (idp.calls.length >= 6 ? true : undefined), 20_000).catch((error: Error) => {
        throw new Error(`${error.message}\n${running.log.text()}`);
      });
      // An exchange whose callers take 3 s to finish: the vault's close used to wait for it.
      const close = exchangeServer!.close.bind(exchangeServer);
      exchangeServer!.close = async () => {
        await new Promise((resolve) => setTimeout(resolve, 3_000));
        await close();
      };
      const closeBegan = Date.now();
      closed = true;
      await running.close(10_000);
      // A request already on its way when close() began may land a few ms later; none starts after.
      const late = idp.calls.filter((at) => at > closeBegan + 100);
      expect(late, `${idp.calls.length} calls in all`).to.deep.equal([]);
    } finally {
      if (!closed) await running.close(1_000);
    }
  });
});
