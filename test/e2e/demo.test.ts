// The README's main command, headless: `token-tap demo --once` on the embedded default.
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { freePorts } from '../support/ports.js';
import { CLI } from '../support/sidecar.js';

describe('token-tap demo --once (embedded Postgres)', function () {
  this.timeout(90_000);

  it('starts the stack, logs in through Envoy, prints the captured grant and exits 0', async () => {
    const stateDir = mkdtempSync(path.join(os.tmpdir(), 'token-tap-demo-'));
    const ports = await freePorts(3);
    const env: NodeJS.ProcessEnv = { ...process.env };
    delete env.DATABASE_URL;
    delete env.TOKEN_TAP_KEYS;
    const child = spawn(
      process.execPath,
      [CLI, 'demo', '--once', '--envoy-port', String(ports[0]), '--sidecar-port', String(ports[1]), '--admin-port', String(ports[2]), '--state-dir', stateDir],
      { env, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 80_000);
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    clearTimeout(timer);
    expect(code, output).to.equal(0);
    expect(output).to.contain('embedded default (PGlite)');
    expect(output).to.match(/subject\s+alice/);
    expect(output).to.match(/refresh_token\s+\S{10}…\S{4} \(\d+ chars\)/);
    expect(output).to.contain('same tokens Okta received: yes');
    expect(output).to.match(/issuer\s+http:\/\/127\.0\.0\.1:\d+\s+verified yes/);
    // The hook's answer for the demo login carries the demo IdP's groups and tid.
    expect(output).to.match(/token inline hook .* answered HTTP 200/);
    expect(output).to.contain('"type": "com.okta.identity.patch"');
    expect(output).to.contain('"path": "/claims/upstream_groups"');
    expect(output).to.contain('"value": "demo-tenant-1"');
    expect(output).to.contain('Stopped.');
  });
});
