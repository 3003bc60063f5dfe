// The CLI as operators meet it: help everywhere, clear refusals, exit codes.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { expect } from 'chai';
import { generateKeySpec } from '../../src/keys/key-ring.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { freePort, waitFor } from '../support/ports.js';
import { CLI, runCli, startSidecarProcess } from '../support/sidecar.js';

describe('token-tap CLI', function () {
  this.timeout(20_000);
  let db: TestDatabase;
  before(async () => {
    db = await createTestDatabase('cli');
  });
  after(async () => db?.drop());

  for (const command of [[], ['serve'], ['envoy-config'], ['grants'], ['grants', 'show']]) {
    it(`prints help for "${['token-tap', ...command].join(' ')}"`, async () => {
      const result = await runCli([...command, '--help'], {});
      expect(result.code).to.equal(0);
      expect(result.stdout).to.match(/^Usage: token-tap/);
    });
  }

  it('serve refuses to start without DATABASE_URL and TOKEN_TAP_KEYS, naming both', async () => {
    const result = await runCli(['serve'], { DATABASE_URL: '', TOKEN_TAP_KEYS: '' });
    expect(result.code).to.equal(78);
    expect(result.stderr).to.contain('DATABASE_URL is not set').and.contain('TOKEN_TAP_KEYS is not set');
  });

  it('serve refuses a malformed key without printing it', async () => {
    const result = await runCli(['serve'], { DATABASE_URL: db.url, TOKEN_TAP_KEYS: 'k1:dG9vLXNob3J0' });
    expect(result.code).to.equal(78);
    expect(result.stderr).to.contain('expected 32').and.not.contain('dG9vLXNob3J0');
  });

  it('serve starts without Postgres, says where it cannot reach it without the password, and exits 0 on SIGTERM', async () => {
    const sidecar = await startSidecarProcess({
      port: await freePort(),
      env: { DATABASE_URL: 'postgres://u:s3cr3t-pw@127.0.0.1:1/x', TOKEN_TAP_KEYS: generateKeySpec() },
    });
    await waitFor('the warning', async () => (sidecar.logs().includes('Postgres is not available at start') ? true : undefined));
    expect(await sidecar.stop('SIGTERM')).to.equal(0);
    expect(sidecar.logs()).to.contain('127.0.0.1:1').and.not.contain('s3cr3t-pw');
  });

  it('demo-idp refuses to start without a client secret, and serves its discovery document under the issuer it is given', async () => {
    const refused = await runCli(['demo-idp'], { DEMO_IDP_CLIENT_SECRET: '' });
    expect(refused.code).to.equal(1);
    expect(refused.stderr).to.contain('DEMO_IDP_CLIENT_SECRET');
    const port = await freePort();
    const child = spawn(process.execPath, [CLI, 'demo-idp', '--listen', `127.0.0.1:${port}`, '--issuer', 'http://demo-idp:3000'], {
      env: { ...process.env, DEMO_IDP_CLIENT_SECRET: 'a-demo-secret-of-some-length' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    try {
      const discovery = await waitFor('the demo IdP', async () => {
        const response = await fetch(`http://127.0.0.1:${port}/.well-known/openid-configuration`).catch(() => undefined);
        return response?.ok ? ((await response.json()) as { issuer: string; token_endpoint: string }) : undefined;
      });
      expect(discovery.issuer).to.equal('http://demo-idp:3000');
      // Endpoint URLs follow the Host the caller used (oidc-provider); only the issuer is fixed.
      expect(discovery.token_endpoint).to.equal(`http://127.0.0.1:${port}/token`);
    } finally {
      const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      expect(await exited).to.equal(0);
    }
  });

  it('serve runs at TOKEN_TAP_CAPTURE_NICE when set, and says so in its ready line', async () => {
    // No Postgres needed (and this file's database must stay without tables for the test below).
    const sidecar = await startSidecarProcess({
      port: await freePort(),
      env: { DATABASE_URL: `postgres://postgres@127.0.0.1:${await freePort()}/none`, TOKEN_TAP_KEYS: generateKeySpec(), TOKEN_TAP_CAPTURE_NICE: '10' },
    });
    try {
      // /proc/<pid>/stat: field 19 is the nice value of the main (the only JavaScript) thread.
      const nice = Number(readFileSync(`/proc/${sidecar.pid}/stat`, 'utf8').split(') ')[1]!.split(' ')[16]);
      expect(nice).to.equal(10);
      expect(sidecar.logs()).to.match(/"nice":10,"msg":"ext_proc server ready"/);
    } finally {
      await sidecar.stop();
    }
  });

  it('grants show exits 1 with a clear message when there is no such grant', async () => {
    const env = { DATABASE_URL: db.url, TOKEN_TAP_KEYS: generateKeySpec() };
    const before = await runCli(['grants', 'show', '--idp', 'x', '--subject', 'nobody'], env);
    expect(before.code).to.equal(1);
    expect(before.stderr).to.contain('no token-tap tables yet');
  });
});
