// The README's TypeScript client (examples/get-grant.ts), run as a service would run it, against a
// real sidecar with a real login in its vault: the documented example is code that works.
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { expect } from 'chai';
import { generateKeySpec } from '../../src/keys/key-ring.js';
import { startTestIdp, type TestIdp } from '../support/oidc-idp.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { createApiKey, loginIntoVault, startVaultSidecar, type VaultSidecar } from '../support/token-vault.js';

const EXAMPLE = fileURLToPath(new URL('../../examples/get-grant.js', import.meta.url));

describe('the README client example (examples/get-grant.ts)', function () {
  this.timeout(30_000);
  let idp: TestIdp;
  let db: TestDatabase;
  let vault: VaultSidecar;

  before(async () => {
    idp = await startTestIdp({ accounts: { alice: { email: 'alice@example.test' } } });
    db = await createTestDatabase('example_client');
    vault = await startVaultSidecar(db, { TOKEN_TAP_KEYS: generateKeySpec('k1') });
  });
  after(async () => {
    await vault?.close();
    await idp?.close();
    await db?.drop();
  });

  it('prints the captured grant with a key for the IdP, and fails with PERMISSION_DENIED with a key for another', async () => {
    const { capture } = await loginIntoVault(idp, vault.sidecar, 'entra');
    const allowed = await createApiKey(db, 'billing-service', ['entra'], ['get']);
    const run = (key: string) =>
      promisify(execFile)(process.execPath, [EXAMPLE, `127.0.0.1:${vault.apiPort}`, 'entra', 'alice@example.test'], {
        env: { ...process.env, TOKEN_TAP_API_KEY: key },
      });
    const { stdout } = await run(allowed.token);
    expect(stdout).to.contain(`${capture.subject} <alice@example.test>: access token ${capture.tokens!.accessToken!.slice(0, 12)}...`);
    expect(stdout).to.contain('id_token present');
    expect(stdout).to.not.contain(capture.tokens!.accessToken!);

    const other = await createApiKey(db, 'other-service', ['google'], ['get']);
    const refused = await run(other.token).then(
      () => undefined,
      (error: { stderr: string }) => error.stderr,
    );
    expect(refused).to.match(/PERMISSION_DENIED/);
  });
});
