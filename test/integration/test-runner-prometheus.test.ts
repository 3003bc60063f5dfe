// `npm test` on a machine without Prometheus's binaries: the runner stops before any test with one
// line saying what to install (the alert tests run promtool and prometheus).
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import { prometheusBinaries } from '../support/prometheus-preflight.js';

const RUNNER = fileURLToPath(new URL('../run.js', import.meta.url));

function runner(pathVariable: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [RUNNER, 'unit'], { env: { ...process.env, PATH: pathVariable, CI: 'true' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('test runner: finding Prometheus (test/run.ts)', function () {
  this.timeout(60_000);

  it('without promtool on PATH, it stops before any test in one line naming what to install', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'token-tap-path-'));
    try {
      // prometheus is there, promtool is not.
      symlinkSync(prometheusBinaries().prometheus, path.join(dir, 'prometheus'));
      const result = await runner(dir);
      expect(result.code).to.equal(2);
      const lines = result.stderr.trim().split('\n');
      expect(lines, result.stderr).to.have.length(1);
      expect(lines[0]).to.equal(
        'token-tap tests: promtool not found on PATH (the alert tests run them): install Prometheus 2.x (Debian/Ubuntu: apt-get install --no-install-recommends prometheus, which brings both)',
      );
      expect(result.stdout).to.not.match(/passing|passed/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("finds both on the machine's PATH", () => {
    const found = prometheusBinaries();
    expect(path.basename(found.prometheus)).to.equal('prometheus');
    expect(path.basename(found.promtool)).to.equal('promtool');
    expect(() => prometheusBinaries('/nonexistent')).to.throw('prometheus and promtool not found on PATH');
  });
});
