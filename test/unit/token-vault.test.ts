import { writeFileSync } from 'node:fs';
import path from 'node:path';
import * as protoLoader from '@grpc/proto-loader';
import { expect } from 'chai';
import { generateApiKey, hashApiKeySecret, parseApiKey, secretMatches } from '../../src/api/api-key-token.js';
import { readTokenVaultConfig } from '../../src/config/token-vault.js';
import { TOKEN_VAULT_PROTO, TOKEN_VAULT_PROTO_DIR } from '../../src/api/protocol.js';
import { fromProtoStruct, fromTimestamp, toProtoStruct, toTimestamp } from '../../src/api/wire.js';
import { checkApiKeyGrant } from '../../src/api/api-keys.js';
import { loadIdpClients } from '../../src/config/idp-file.js';
import { parseAge } from '../../src/store/purge.js';
import { tempDir } from '../support/token-vault.js';

function configFile(text: string): string {
  const file = path.join(tempDir('idp-config'), 'idps.yaml');
  writeFileSync(file, text);
  return file;
}

describe('TokenVault pieces', () => {
  describe('API keys', () => {
    it('parses only well-formed keys and matches a secret against its hash alone', () => {
      const key = generateApiKey();
      expect(parseApiKey(key.token)).to.deep.equal({ id: key.id, secret: key.secret });
      for (const bad of ['', 'ttk_', `${key.token}x`, key.token.replace('ttk_', 'ttx_'), `Bearer ${key.token}`])
        expect(parseApiKey(bad), bad).to.equal(undefined);
      expect(secretMatches(key.secret, hashApiKeySecret(key.secret))).to.equal(true);
      expect(secretMatches(generateApiKey().secret, hashApiKeySecret(key.secret))).to.equal(false);
      expect(secretMatches(key.secret, undefined)).to.equal(false);
    });

    it('reports every problem with a new key at once', () => {
      expect(checkApiKeyGrant('', ['bad idp!'], ['get', 'fly'])).to.have.length(3);
      expect(checkApiKeyGrant('svc', ['acme', '*'], ['*'])).to.deep.equal([]);
    });
  });

  describe('per-IdP client config (TOKEN_TAP_IDP_CONFIG)', () => {
    it('reads YAML with the secret from the environment, and JSON with the secret from a file', () => {
      const secretFile = path.join(tempDir('secret'), 'acme');
      writeFileSync(secretFile, 'file-secret\n');
      const problems: string[] = [];
      const yaml = loadIdpClients(
        {
          TOKEN_TAP_IDP_CONFIG: configFile('idps:\n  acme:\n    token_url: https://acme.example/token\n    client_id: c1\n    client_secret_env: ACME\n'),
          ACME: 'env-secret',
        },
        problems,
      );
      const json = loadIdpClients(
        {
          TOKEN_TAP_IDP_CONFIG: configFile(
            JSON.stringify({
              idps: {
                acme: {
                  token_url: 'http://127.0.0.1:9/token',
                  client_id: 'c2',
                  client_secret_file: secretFile,
                  revocation_url: 'https://acme.example/revoke',
                  auth_method: 'client_secret_post',
                },
              },
            }),
          ),
        },
        problems,
      );
      expect(problems).to.deep.equal([]);
      expect(yaml.get('acme')!.settings).to.include({ clientId: 'c1', authMethod: 'client_secret_basic', revocationUrl: undefined });
      expect(json.get('acme')!.settings).to.include({ clientId: 'c2', authMethod: 'client_secret_post' });
      expect(json.get('acme')!.canRevoke).to.equal(true);
      // The secret is in a private field: neither JSON nor inspection shows it.
      expect(JSON.stringify([...yaml.values(), ...json.values()]))
        .to.not.contain('env-secret')
        .and.not.contain('file-secret');
    });

    it('reports every problem of the file at once without echoing a secret', () => {
      const problems: string[] = [];
      loadIdpClients(
        {
          TOKEN_TAP_IDP_CONFIG: configFile(
            [
              'idps:',
              '  acme:',
              '    token_url: http://acme.example/token',
              '    client_secret: hunter2-inline',
              '    client_secret_env: MISSING_SECRET',
              '    tokenurl: typo',
              '  "bad name!":',
              '    token_url: https://x.example/token',
              '    client_id: c',
              '    client_secret_env: SET_SECRET',
              '    auth_method: private_key_jwt',
            ].join('\n'),
          ),
          SET_SECRET: 's3t',
        },
        problems,
      );
      const text = problems.join('\n');
      for (const expected of [
        'must be https',
        'client_secret must not be written',
        'MISSING_SECRET',
        'unknown field "tokenurl"',
        'client_id must be',
        'IdP name must be',
        'auth_method must be one of',
      ]) {
        expect(text).to.contain(expected);
      }
      expect(text).to.not.contain('hunter2-inline').and.not.contain('s3t');
      const syntax: string[] = [];
      loadIdpClients({ TOKEN_TAP_IDP_CONFIG: configFile('idps:\n  acme: {client_secret: "hunter2-quoted\n') }, syntax);
      expect(syntax.join('\n'))
        .to.match(/not valid YAML or JSON at line \d+/)
        .and.not.contain('hunter2');
    });

    it('joins the API settings with the rest of the config problems', () => {
      const problems: string[] = [];
      const config = readTokenVaultConfig(
        { TOKEN_TAP_PURGE_INTERVAL: '1h', TOKEN_TAP_API_TLS_CERT: '/nonexistent.pem', TOKEN_TAP_EVENT_RETENTION: 'forever' },
        { apiListen: 'nowhere' },
        problems,
      );
      expect(problems.join('\n'))
        .to.contain('--api-listen')
        .and.contain('TOKEN_TAP_API_TLS_CERT and TOKEN_TAP_API_TLS_KEY go together')
        .and.contain('TOKEN_TAP_EVENT_RETENTION')
        .and.contain('nothing to purge');
      expect(config.listen).to.equal(undefined);
      expect(readTokenVaultConfig({}, {}, []).listen).to.deep.equal({ host: '127.0.0.1', port: 50052 });
      expect(readTokenVaultConfig({ TOKEN_TAP_API_LISTEN: 'off' }, {}, []).listen).to.equal(undefined);
    });

    it('reads retention ages', () => {
      expect(parseAge('90d')).to.equal(90 * 86_400_000);
      expect(parseAge('45s')).to.equal(45_000);
      for (const bad of ['', '0d', '3w', '1.5h', '-1d']) expect(parseAge(bad), bad).to.equal(undefined);
    });
  });

  describe('wire', () => {
    it('carries claims (Struct) and expiries (Timestamp) through the real proto encoding unchanged', () => {
      const definition = protoLoader.loadSync(TOKEN_VAULT_PROTO, {
        keepCase: true,
        longs: String,
        enums: String,
        defaults: true,
        oneofs: true,
        includeDirs: [TOKEN_VAULT_PROTO_DIR],
      });
      const Grant = definition['token_tap.v1.Grant'] as unknown as { serialize(value: unknown): Buffer; deserialize(bytes: Buffer): any };
      const claims = { sub: 'bob', aud: ['a', 'b'], email_verified: true, exp: 1_900_000_000, nested: { groups: ['x'], none: null } };
      const expiresAt = new Date('2030-01-02T03:04:05.678Z');
      const decoded = Grant.deserialize(Grant.serialize({ id_token_claims: toProtoStruct(claims), access_token_expires_at: toTimestamp(expiresAt) }));
      expect(fromProtoStruct(decoded.id_token_claims)).to.deep.equal(claims);
      expect(fromTimestamp(decoded.access_token_expires_at)!.toISOString()).to.equal(expiresAt.toISOString());
      expect(toTimestamp(null)).to.equal(null);
    });
  });
});
