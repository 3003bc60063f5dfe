// The token exchange client example (examples/token-exchange.ts: openid-client's genericGrantRequest),
// run as a service would run it, against a real sidecar with the exchange on, a login in its vault
// and Okta-shaped subject tokens from a stand-in Okta authorization server: the upstream token
// comes back, and the library surfaces the exchange's OAuth errors.
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { expect } from 'chai';
import { stringify } from 'yaml';
import { exchangeToken, ID_TOKEN } from '../../examples/token-exchange.js';
import type { Capture } from '../../src/capture/types.js';
import { TOKEN_EXCHANGE_PATH } from '../../src/contract.js';
import { generateKeySpec } from '../../src/keys/key-ring.js';
import { startOktaAuthorizationServer, type OktaAuthorizationServer, type OktaUser } from '../support/okta-authorization-server.js';
import { startTestIdp, type TestIdp } from '../support/oidc-idp.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { createApiKey, loginIntoVault, startVaultSidecar, tempDir, type VaultSidecar } from '../support/token-vault.js';

const EXAMPLE = fileURLToPath(new URL('../../examples/token-exchange.js', import.meta.url));
const ALICE: OktaUser = { id: '00uALICE1', login: 'alice@example.test' };

describe('the token exchange client example (examples/token-exchange.ts)', function () {
  this.timeout(30_000);
  let idp: TestIdp;
  let okta: OktaAuthorizationServer;
  let db: TestDatabase;
  let vault: VaultSidecar;
  let endpoint: string;
  let capture: Capture;

  before(async () => {
    idp = await startTestIdp({ accounts: { alice: { email: 'alice@example.test' } } });
    okta = await startOktaAuthorizationServer();
    db = await createTestDatabase('example_exchange');
    const file = path.join(tempDir('example-exchange'), 'exchange.yaml');
    // The login goes into the store directly (no id_token verification step here): allow_unverified.
    writeFileSync(
      file,
      stringify({
        subject_issuers: [{ issuer: okta.issuer, audiences: [okta.audience], client_ids: [okta.clientId] }],
        providers: [{ idp: 'entra', okta_idp_id: '0oaENTRA1', idp_claim: 'upstream_idp', match: 'claim:upstream_sub', allow_unverified: true }],
      }),
    );
    vault = await startVaultSidecar(db, { TOKEN_TAP_KEYS: generateKeySpec('k1'), TOKEN_TAP_EXCHANGE_LISTEN: '127.0.0.1:0', TOKEN_TAP_EXCHANGE_CONFIG: file });
    const address = vault.sidecar.exchange?.address;
    if (!address) throw new Error(`the token exchange did not start:\n${vault.logs()}`);
    endpoint = `http://127.0.0.1:${address.port}${TOKEN_EXCHANGE_PATH}`;
    ({ capture } = await loginIntoVault(idp, vault.sidecar, 'entra'));
  });
  after(async () => {
    await vault?.close();
    await okta?.close();
    await idp?.close();
    await db?.drop();
  });

  // The hook (or Okta's profile mapping) puts the upstream subject into Okta's tokens as upstream_sub.
  const oktaAccessToken = () => okta.accessToken(ALICE, { claims: { upstream_idp: '0oaENTRA1', upstream_sub: capture.subject } });

  it("run as a program with a key allowed `exchange`, says it received the user's upstream access token, printing none of it", async () => {
    const key = await createApiKey(db, 'billing-service', ['entra'], ['exchange']);
    const { stdout } = await promisify(execFile)(process.execPath, [EXAMPLE, endpoint, 'entra'], {
      env: { ...process.env, TOKEN_TAP_API_KEY: key.token, OKTA_TOKEN: await oktaAccessToken() },
    });
    const token = capture.tokens!.accessToken!;
    expect(stdout).to.contain(`entra: upstream access token received, ${token.length} characters (bearer, expires in`);
    expect(stdout).to.not.contain(token.slice(0, 8));
  });

  it('as a library: the whole upstream access token, and the upstream id_token for an Okta id_token', async () => {
    const key = await createApiKey(db, 'profile-service', ['entra'], ['exchange']);
    const access = await exchangeToken({ endpoint, apiKey: key.token, oktaToken: await oktaAccessToken(), idp: 'entra' });
    expect(access.access_token).to.equal(capture.tokens!.accessToken);
    expect(access.issued_token_type).to.equal('urn:ietf:params:oauth:token-type:access_token');
    const idToken = await exchangeToken({
      endpoint,
      apiKey: key.token,
      oktaToken: await okta.idToken(ALICE, { claims: { upstream_idp: '0oaENTRA1', upstream_sub: capture.subject } }),
      idp: 'entra',
      subjectTokenType: ID_TOKEN,
      requestedTokenType: ID_TOKEN,
    });
    expect(idToken.access_token).to.equal(capture.tokens!.idToken);
  });

  it("prints the exchange's OAuth error and exits 1: a key without `exchange` (unauthorized_client), another user's token (invalid_grant)", async () => {
    const run = async (apiKey: string, oktaToken: string) =>
      promisify(execFile)(process.execPath, [EXAMPLE, endpoint, 'entra'], { env: { ...process.env, TOKEN_TAP_API_KEY: apiKey, OKTA_TOKEN: oktaToken } }).then(
        () => 'exited 0',
        (error: { code: number; stderr: string }) => `${error.code} ${error.stderr}`,
      );
    const getOnly = await createApiKey(db, 'reader', ['entra'], ['get']);
    expect(await run(getOnly.token, await oktaAccessToken())).to.match(/^1 token exchange refused: unauthorized_client/);
    const key = await createApiKey(db, 'other-service', ['entra'], ['exchange']);
    const stranger = await okta.accessToken(
      { id: '00uBOB1', login: 'bob@example.test' },
      { claims: { upstream_idp: '0oaENTRA1', upstream_sub: 'nobody-upstream' } },
    );
    expect(await run(key.token, stranger)).to.match(/^1 token exchange refused: invalid_grant/);
  });
});
