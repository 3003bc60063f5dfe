import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { loadSidecarConfig } from '../../src/config/sidecar.js';
import { ConfigError, parseHostPort, parseListenAddress } from '../../src/config/values.js';
import { generateKeySpec } from '../../src/keys/key-ring.js';

describe('config', () => {
  const valid = { DATABASE_URL: 'postgres://u:pw@127.0.0.1:5432/db', TOKEN_TAP_KEYS: generateKeySpec('k1') };

  it('defaults the listen address to 127.0.0.1:50051 and reads the key ring', () => {
    const config = loadSidecarConfig(valid);
    expect(config.listen).to.deep.equal({ host: '127.0.0.1', port: 50051 });
    expect(config.keyRing.activeKeyId).to.equal('k1');
    expect(config.maxBodyBytes).to.equal(1024 * 1024);
  });

  it('reports every problem at once and never echoes a secret', () => {
    try {
      loadSidecarConfig({ TOKEN_TAP_KEYS: 'k1:c2hvcnQ=', TOKEN_TAP_MAX_BODY_BYTES: 'lots' }, { listen: 'nowhere', logLevel: 'loud' });
      expect.fail('should have thrown');
    } catch (error) {
      expect(error).to.be.instanceOf(ConfigError);
      const { problems, message } = error as ConfigError;
      expect(problems).to.have.length(5);
      expect(message).to.contain('DATABASE_URL is not set');
      expect(message).to.contain('--listen must be HOST:PORT');
      expect(message).to.contain('5 bytes, expected 32');
      expect(message).to.contain('TOKEN_TAP_MAX_BODY_BYTES');
      expect(message).to.contain('log level');
      expect(message).to.not.contain('c2hvcnQ=');
    }
  });

  it('ext_proc: unix:/path or loopback; beyond loopback only with allowRemoteExtproc', () => {
    expect(loadSidecarConfig({ ...valid, TOKEN_TAP_LISTEN: 'unix:/run/token-tap/extproc.sock' }).listen).to.deep.equal({
      socket: '/run/token-tap/extproc.sock',
    });
    expect(loadSidecarConfig(valid, { listen: '127.0.0.2:1' }).listen).to.deep.equal({ host: '127.0.0.2', port: 1 });
    expect(() => loadSidecarConfig(valid, { listen: '0.0.0.0:50051' })).to.throw(ConfigError, /--allow-remote-extproc/);
    expect(() => loadSidecarConfig(valid, { listen: '10.1.2.3:50051' })).to.throw(ConfigError, /reachable from other machines/);
    const withoutMtls = { ...valid, TOKEN_TAP_ALLOW_REMOTE_EXTPROC_WITHOUT_MTLS: 'true' };
    expect(loadSidecarConfig(withoutMtls, { listen: '0.0.0.0:50051', allowRemoteExtproc: true }).allowRemoteExtProc).to.equal(true);
    expect(loadSidecarConfig({ ...withoutMtls, TOKEN_TAP_ALLOW_REMOTE_EXTPROC: 'true' }, { listen: '[::]:50051' }).listen).to.deep.equal({
      host: '::',
      port: 50051,
    });
    expect(() => loadSidecarConfig({ ...valid, TOKEN_TAP_ALLOW_REMOTE_EXTPROC: 'yes please' })).to.throw(ConfigError, /true or false/);
    expect(() => loadSidecarConfig({ ...valid, TOKEN_TAP_EXTPROC_TLS_CERT: '/x.pem' })).to.throw(
      ConfigError,
      /TOKEN_TAP_EXTPROC_TLS_CERT and TOKEN_TAP_EXTPROC_TLS_KEY go together/,
    );
    expect(() => loadSidecarConfig(valid, { listen: `unix:/${'a'.repeat(120)}` })).to.throw(ConfigError, /longer than 107 bytes/);
  });

  describe('a remote ext_proc needs mTLS, or a second opt-in for NetworkPolicy-only clusters', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'token-tap-config-'));
    const pem = (name: string) => {
      const file = path.join(dir, name);
      writeFileSync(file, `-----BEGIN ${name}-----\n-----END ${name}-----\n`);
      return file;
    };
    const tls = { TOKEN_TAP_EXTPROC_TLS_CERT: pem('cert'), TOKEN_TAP_EXTPROC_TLS_KEY: pem('key') };

    it('--allow-remote-extproc / TOKEN_TAP_ALLOW_REMOTE_EXTPROC alone, or with TLS but no client CA, is refused, saying what to set', () => {
      for (const [env, flags] of [
        [valid, { listen: '0.0.0.0:50051', allowRemoteExtproc: true }],
        [{ ...valid, TOKEN_TAP_ALLOW_REMOTE_EXTPROC: 'true' }, { listen: '10.1.2.3:50051' }],
        [
          { ...valid, ...tls },
          { listen: '0.0.0.0:50051', allowRemoteExtproc: true },
        ],
      ] as const) {
        expect(() => loadSidecarConfig(env, flags)).to.throw(
          ConfigError,
          /needs mTLS to Envoy[\s\S]*_CLIENT_CA[\s\S]*TOKEN_TAP_ALLOW_REMOTE_EXTPROC_WITHOUT_MTLS=true/,
        );
      }
    });

    it('with TOKEN_TAP_EXTPROC_TLS_CLIENT_CA (mTLS) it is allowed, and with the explicit opt-in without it', () => {
      const mtls = loadSidecarConfig({ ...valid, ...tls, TOKEN_TAP_EXTPROC_TLS_CLIENT_CA: pem('ca') }, { listen: '0.0.0.0:50051', allowRemoteExtproc: true });
      expect(mtls.extProcTls?.clientCa).to.be.instanceOf(Buffer);
      expect(mtls.allowRemoteExtProcWithoutMtls).to.equal(false);
      const bare = loadSidecarConfig(
        { ...valid, TOKEN_TAP_ALLOW_REMOTE_EXTPROC: 'true', TOKEN_TAP_ALLOW_REMOTE_EXTPROC_WITHOUT_MTLS: 'true' },
        { listen: '0.0.0.0:50051' },
      );
      expect(bare.allowRemoteExtProcWithoutMtls).to.equal(true);
      expect(() => loadSidecarConfig({ ...valid, TOKEN_TAP_ALLOW_REMOTE_EXTPROC_WITHOUT_MTLS: 'true' })).to.throw(
        ConfigError,
        /only means something with --allow-remote-extproc/,
      );
    });

    it('the TokenVault API beyond loopback needs TLS, or TOKEN_TAP_ALLOW_INSECURE_API=true', () => {
      for (const [env, flags] of [
        [valid, { apiListen: '0.0.0.0:50052' }],
        [{ ...valid, TOKEN_TAP_API_LISTEN: '10.0.0.7:50052' }, {}],
        [{ ...valid, TOKEN_TAP_API_LISTEN: '[::]:50052' }, {}],
      ] as const) {
        expect(() => loadSidecarConfig(env, flags)).to.throw(
          ConfigError,
          /reachable from other machines[\s\S]*TOKEN_TAP_API_TLS_CERT[\s\S]*TOKEN_TAP_ALLOW_INSECURE_API=true/,
        );
      }
      expect(loadSidecarConfig(valid, { apiListen: '127.0.0.1:50052' }).vault.listen).to.deep.equal({ host: '127.0.0.1', port: 50052 });
      const withTls = loadSidecarConfig(
        { ...valid, TOKEN_TAP_API_TLS_CERT: pem('api-cert'), TOKEN_TAP_API_TLS_KEY: pem('api-key') },
        { apiListen: '0.0.0.0:50052' },
      );
      expect(withTls.vault.tls).to.be.an('object');
      const insecure = loadSidecarConfig({ ...valid, TOKEN_TAP_ALLOW_INSECURE_API: 'true' }, { apiListen: '0.0.0.0:50052' });
      expect(insecure.vault).to.include({ allowInsecure: true, tls: undefined });
    });
  });

  it('a listen address with a control character is refused (a newline would reach rendered files and logs)', () => {
    expect(() => parseListenAddress('unix:/a\nb', '--sidecar')).to.throw(/--sidecar must not contain control characters \(found U\+000A/);
    for (const text of ['unix:/run/x.sock\r', '127.0.0.1\u0001:50051', 'unix:/a\u0000b', 'unix:/a\u2028b', 'localhost:1\u007f']) {
      expect(() => parseListenAddress(text, '--listen'), JSON.stringify(text)).to.throw(/control characters/);
    }
    expect(() => parseHostPort('127.0.0.1\u0001:1', 'TOKEN_TAP_OPS_LISTEN')).to.throw(/control characters/);
    expect(() => loadSidecarConfig(valid, { listen: 'unix:/run/token-tap/x\n# injected: true' })).to.throw(ConfigError, /control characters/);
    expect(parseListenAddress('unix:/run/token-tap/extproc.sock', '--listen')).to.deep.equal({ socket: '/run/token-tap/extproc.sock' });
  });

  it('reads the Postgres timeouts of the writer and of the API apart, with defaults, and every bad one at once', () => {
    const defaults = loadSidecarConfig(valid);
    expect(defaults.postgres).to.deep.equal({
      connectTimeoutMs: 5_000,
      statementTimeoutMs: 10_000,
      queryTimeoutMs: 12_000,
      keepAliveMs: 10_000,
      idleInTransactionMs: 10_000,
    });
    expect(defaults.vault.postgres).to.deep.equal({
      connectTimeoutMs: 2_000,
      statementTimeoutMs: 2_000,
      queryTimeoutMs: 2_250,
      keepAliveMs: 10_000,
      idleInTransactionMs: 180_000,
    });
    const set = loadSidecarConfig({
      ...valid,
      TOKEN_TAP_PG_STATEMENT_TIMEOUT_MS: '30000',
      TOKEN_TAP_API_PG_CONNECT_TIMEOUT_MS: '1000',
      TOKEN_TAP_PG_KEEPALIVE_MS: '5000',
    });
    expect(set.postgres).to.include({ statementTimeoutMs: 30_000, queryTimeoutMs: 32_000, keepAliveMs: 5_000 });
    expect(set.vault.postgres).to.include({ connectTimeoutMs: 1_000, keepAliveMs: 5_000 });
    try {
      loadSidecarConfig({
        ...valid,
        TOKEN_TAP_PG_CONNECT_TIMEOUT_MS: 'soon',
        TOKEN_TAP_PG_KEEPALIVE_MS: '0',
        TOKEN_TAP_API_PG_STATEMENT_TIMEOUT_MS: '4000',
        TOKEN_TAP_API_PG_QUERY_TIMEOUT_MS: '3000',
      });
      expect.fail('should have thrown');
    } catch (error) {
      expect(error).to.be.instanceOf(ConfigError);
      expect((error as ConfigError).problems).to.deep.equal([
        'TOKEN_TAP_PG_CONNECT_TIMEOUT_MS must be a positive integer, got "soon"',
        'TOKEN_TAP_PG_KEEPALIVE_MS must be a positive integer, got "0"',
        'TOKEN_TAP_API_PG_QUERY_TIMEOUT_MS (3000) must be at least TOKEN_TAP_API_PG_STATEMENT_TIMEOUT_MS (4000): the server should cancel a slow statement before the client drops the connection',
      ]);
    }
  });

  it('TOKEN_TAP_REFUSAL_SUMMARY_MS: 60 s by default, from 100 ms to an hour', () => {
    expect(loadSidecarConfig(valid).refusalSummaryMs).to.equal(60_000);
    expect(loadSidecarConfig({ ...valid, TOKEN_TAP_REFUSAL_SUMMARY_MS: '500' }).refusalSummaryMs).to.equal(500);
    for (const bad of ['99', '3600001', 'soon', '0']) {
      expect(() => loadSidecarConfig({ ...valid, TOKEN_TAP_REFUSAL_SUMMARY_MS: bad }), bad).to.throw(ConfigError, /TOKEN_TAP_REFUSAL_SUMMARY_MS/);
    }
  });

  it('says how to make a key when TOKEN_TAP_KEYS is missing', () => {
    expect(() => loadSidecarConfig({ DATABASE_URL: valid.DATABASE_URL })).to.throw(ConfigError, /openssl rand -base64 32/);
  });

  it('rejects a DATABASE_URL that is not postgres without printing it', () => {
    expect(() => loadSidecarConfig({ ...valid, DATABASE_URL: 'mysql://root:hunter2@x/db' }))
      .to.throw(ConfigError, /postgres:\/\//)
      .and.not.match(/hunter2/);
  });

  it('parses host:port, including IPv6 in brackets', () => {
    expect(parseHostPort('[::1]:9000', 'x')).to.deep.equal({ host: '::1', port: 9000 });
    expect(parseHostPort('sidecar:50051', 'x')).to.deep.equal({ host: 'sidecar', port: 50051 });
    expect(() => parseHostPort('host:70000', 'x')).to.throw(/HOST:PORT/);
  });
  it('refuses TOKEN_TAP_FAULT_INJECTION outside NODE_ENV=test', () => {
    expect(() => loadSidecarConfig({ ...valid, NODE_ENV: 'production', TOKEN_TAP_FAULT_INJECTION: 'kill-after-refresh-answer' })).to.throw(
      ConfigError,
      /only with NODE_ENV=test/,
    );
    expect(loadSidecarConfig({ ...valid, NODE_ENV: 'test', TOKEN_TAP_FAULT_INJECTION: 'kill-after-refresh-answer' }).vault.faultInjection).to.equal(
      'kill-after-refresh-answer',
    );
  });
});
