// Who may call the TokenVault API: API keys (hashed, per IdP and operation) on every call, and
// client certificates when mTLS is configured. Every refusal is audited like any other call.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { expect } from 'chai';
import { generateApiKey } from '../../src/api/api-key-token.js';
import { ApiKeyRepository } from '../../src/api/api-keys.js';
import { generateKeySpec } from '../../src/keys/key-ring.js';
import { syntheticCapture } from '../support/captures.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { createApiKey, startVaultSidecar, statusOf, tempDir, vaultClient, type VaultClient, type VaultSidecar } from '../support/token-vault.js';

/** A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl. */
function certificates(): { dir: string; ca: string; serverCert: string; serverKey: string; clientCert: string; clientKey: string } {
  const dir = tempDir('mtls');
  const file = (name: string) => path.join(dir, name);
  const openssl = (...args: string[]) => execFileSync('openssl', args, { stdio: 'ignore' });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl('req', '-x509', ...ec, '-days', '1', '-subj', '/CN=token-tap test CA', '-keyout', file('ca.key'), '-out', file('ca.pem'));
  for (const [name, subject, extension] of [
    ['server', '/CN=localhost', 'subjectAltName=DNS:localhost,IP:127.0.0.1'],
    ['client', '/CN=billing-service', 'extendedKeyUsage=clientAuth'],
  ] as const) {
    openssl('req', ...ec, '-subj', subject, '-keyout', file(`${name}.key`), '-out', file(`${name}.csr`));
    execFileSync('bash', ['-c', `printf '%s\\n' '${extension}' > '${file(`${name}.ext`)}'`]);
    openssl(
      'x509',
      '-req',
      '-in',
      file(`${name}.csr`),
      '-CA',
      file('ca.pem'),
      '-CAkey',
      file('ca.key'),
      '-CAcreateserial',
      '-days',
      '1',
      '-extfile',
      file(`${name}.ext`),
      '-out',
      file(`${name}.pem`),
    );
  }
  return {
    dir,
    ca: file('ca.pem'),
    serverCert: file('server.pem'),
    serverKey: file('server.key'),
    clientCert: file('client.pem'),
    clientKey: file('client.key'),
  };
}

describe('TokenVault API authentication and authorization', function () {
  this.timeout(30_000);
  let db: TestDatabase;
  let vault: VaultSidecar;
  let client: VaultClient;
  const keys = generateKeySpec('k1');

  before(async () => {
    db = await createTestDatabase('vault_auth');
    vault = await startVaultSidecar(db, { TOKEN_TAP_KEYS: keys });
    client = vaultClient(vault.apiPort);
    await vault.sidecar.store.recordCaptures([syntheticCapture('acme', 'alice'), syntheticCapture('other', 'olga')]);
  });
  after(async () => {
    client?.close();
    await vault?.close();
    await db?.drop();
  });

  async function lastEvent(): Promise<Record<string, unknown>> {
    const { rows } = await db.pool.query('SELECT operation, outcome, api_key_id, caller, idp, subject, detail FROM access_events ORDER BY id DESC LIMIT 1');
    return rows[0];
  }

  it('answers UNAUTHENTICATED without a key, with a malformed key, an unknown key, a wrong secret and a revoked key, and audits each', async () => {
    const good = await createApiKey(db, 'reader', ['acme'], ['get']);
    const revoked = await createApiKey(db, 'retired', ['acme'], ['get']);
    await new ApiKeyRepository(db.pool).revoke(revoked.id);
    const stranger = generateApiKey();
    const wrongSecret = `ttk_${good.id}_${generateApiKey().secret}`;
    const cases: Array<[string, string | undefined, string, string | null]> = [
      ['no key', undefined, 'no API key presented', null],
      ['malformed key', 'not-a-key', 'malformed API key', null],
      ['unknown key', stranger.token, 'unknown API key id', stranger.id],
      ['wrong secret', wrongSecret, 'wrong secret for this API key id', good.id],
      ['revoked key', revoked.token, 'API key revoked at', revoked.id],
    ];
    for (const [name, key, detail, keyId] of cases) {
      const error = (await client.call('GetGrant', { idp: 'acme', subject: 'alice' }, key).then(
        () => undefined,
        (caught: grpc.ServiceError) => caught,
      ))!;
      expect(error?.code, name).to.equal(grpc.status.UNAUTHENTICATED);
      expect(error.details, name).to.contain('api-keys create');
      const event = await lastEvent();
      expect(event, name).to.include({ operation: 'GetGrant', outcome: 'unauthenticated', api_key_id: keyId, caller: null });
      expect(event.detail, name).to.contain(detail);
    }
    expect(await statusOf(client.call('GetGrant', { idp: 'acme', subject: 'alice' }, good.token)), 'the valid key').to.equal(grpc.status.OK);
  });

  it('answers PERMISSION_DENIED for another IdP or an operation the key lacks, and OK within its grant', async () => {
    const acmeReader = await createApiKey(db, 'acme-reader', ['acme'], ['get', 'list']);
    const lister = await createApiKey(db, 'lister', ['acme', 'other'], ['list']);
    const acmeDeleter = await createApiKey(db, 'acme-deleter', ['acme'], ['delete']);
    const cases: Array<[string, 'GetGrant' | 'ListGrants' | 'RefreshGrant' | 'RevokeGrant' | 'DeleteSubject', Record<string, unknown>, string, grpc.status]> = [
      ['key for another IdP', 'GetGrant', { idp: 'other', subject: 'olga' }, acmeReader.token, grpc.status.PERMISSION_DENIED],
      ['key for another IdP (list)', 'ListGrants', { idp: 'other' }, acmeReader.token, grpc.status.PERMISSION_DENIED],
      ['key without get', 'GetGrant', { idp: 'acme', subject: 'alice' }, lister.token, grpc.status.PERMISSION_DENIED],
      ['key without refresh', 'RefreshGrant', { idp: 'acme', subject: 'alice' }, acmeReader.token, grpc.status.PERMISSION_DENIED],
      [
        'key without refresh (automatic refresh asked)',
        'GetGrant',
        { idp: 'acme', subject: 'alice', refresh_if_expires_within_seconds: 60 },
        acmeReader.token,
        grpc.status.PERMISSION_DENIED,
      ],
      [
        'key without read_refresh_token',
        'GetGrant',
        { idp: 'acme', subject: 'alice', include_refresh_token: true },
        acmeReader.token,
        grpc.status.PERMISSION_DENIED,
      ],
      ['key without revoke', 'RevokeGrant', { idp: 'acme', subject: 'alice' }, acmeReader.token, grpc.status.PERMISSION_DENIED],
      ['key for one IdP deleting on every IdP', 'DeleteSubject', { subject: 'alice' }, acmeDeleter.token, grpc.status.PERMISSION_DENIED],
      ['within its grant (get)', 'GetGrant', { idp: 'acme', subject: 'alice' }, acmeReader.token, grpc.status.OK],
      ['within its grant (list)', 'ListGrants', { idp: 'other' }, lister.token, grpc.status.OK],
    ];
    for (const [name, method, request, key, expected] of cases) {
      expect(await statusOf(client.call(method, request, key)), name).to.equal(expected);
      const event = await lastEvent();
      expect(event, name).to.include({ operation: method, outcome: expected === grpc.status.OK ? 'ok' : 'permission_denied' });
    }
    const lastDenied = await db.pool.query("SELECT caller, detail FROM access_events WHERE outcome = 'permission_denied' ORDER BY id DESC LIMIT 1");
    expect(lastDenied.rows[0]).to.deep.equal({ caller: 'acme-deleter', detail: 'IdP * not allowed' });
    // A key with get on its IdP gets the tokens but not the refresh token.
    const grant = (await client.call('GetGrant', { idp: 'acme', subject: 'alice' }, acmeReader.token)).grant;
    expect(grant.access_token).to.match(/^at-/);
    expect(grant.refresh_token).to.equal('');
  });

  it('stores API keys as SHA-256 hashes of their secret only', async () => {
    const key = await createApiKey(db, 'hash-check', ['acme'], ['get']);
    const { rows } = await db.pool.query('SELECT id, secret_hash FROM api_keys WHERE id = $1', [key.id]);
    const secret = key.token.slice(`ttk_${key.id}_`.length);
    expect(rows[0].secret_hash).to.have.length(32);
    expect(Buffer.from(rows[0].secret_hash).toString('hex')).to.not.contain(Buffer.from(secret).toString('hex'));
    expect(JSON.stringify(await new ApiKeyRepository(db.pool).list()))
      .to.not.contain(secret)
      .and.not.contain('secret');
  });

  describe('with mTLS', () => {
    let tlsVault: VaultSidecar;
    let files: ReturnType<typeof certificates>;
    before(async () => {
      files = certificates();
      tlsVault = await startVaultSidecar(db, {
        TOKEN_TAP_KEYS: keys,
        TOKEN_TAP_API_TLS_CERT: files.serverCert,
        TOKEN_TAP_API_TLS_KEY: files.serverKey,
        TOKEN_TAP_API_TLS_CLIENT_CA: files.ca,
      });
    });
    after(async () => tlsVault?.close());

    it('refuses a caller without a client certificate, and records the certificate of one that has it', async () => {
      const key = await createApiKey(db, 'tls-reader', ['acme'], ['get']);
      const ca = readFileSync(files.ca);
      // Verified as "localhost": TLS server names cannot be IP addresses (RFC 6066).
      const name = { 'grpc.ssl_target_name_override': 'localhost' };
      const withoutCertificate = vaultClient(tlsVault.apiPort, grpc.credentials.createSsl(ca), name);
      const withCertificate = vaultClient(
        tlsVault.apiPort,
        grpc.credentials.createSsl(ca, readFileSync(files.clientKey), readFileSync(files.clientCert)),
        name,
      );
      const plaintext = vaultClient(tlsVault.apiPort);
      try {
        expect(await statusOf(withoutCertificate.call('GetGrant', { idp: 'acme', subject: 'alice' }, key.token))).to.equal(grpc.status.UNAVAILABLE);
        expect(await statusOf(plaintext.call('GetGrant', { idp: 'acme', subject: 'alice' }, key.token))).to.equal(grpc.status.UNAVAILABLE);
        expect(await statusOf(withCertificate.call('GetGrant', { idp: 'acme', subject: 'alice' }))).to.equal(grpc.status.UNAUTHENTICATED);
        expect(await statusOf(withCertificate.call('GetGrant', { idp: 'acme', subject: 'alice' }, key.token))).to.equal(grpc.status.OK);
        const { rows } = await db.pool.query("SELECT tls_client FROM access_events WHERE caller = 'tls-reader'");
        expect(rows).to.deep.equal([{ tls_client: 'billing-service' }]);
      } finally {
        for (const each of [withoutCertificate, withCertificate, plaintext]) each.close();
      }
    });
  });
});
