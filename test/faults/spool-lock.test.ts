// One sidecar per spool directory, held by the kernel: a second live sidecar on the directory is
// refused with a message naming the holder, and of two started at the same moment exactly one runs.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { generateKeySpec } from '../../src/keys/key-ring.js';
import { unreachableDatabaseUrl } from '../support/faults.js';
import { freePort } from '../support/ports.js';
import { startSidecarProcess, type SidecarProcess } from '../support/sidecar.js';

describe('spool directory lock (real sidecar processes)', function () {
  this.timeout(60_000);
  let spoolDir: string;
  const running: SidecarProcess[] = [];

  beforeEach(() => {
    spoolDir = mkdtempSync(path.join(os.tmpdir(), 'token-tap-spool-lock-'));
  });
  afterEach(async () => {
    for (const sidecar of running.splice(0)) await sidecar.stop('SIGKILL');
    rmSync(spoolDir, { recursive: true, force: true });
  });

  async function start(): Promise<SidecarProcess> {
    // Postgres is not needed to take the lock and serve ext_proc; the API stays off (no fixed port).
    const sidecar = await startSidecarProcess({
      port: await freePort(),
      env: { DATABASE_URL: await unreachableDatabaseUrl(), TOKEN_TAP_KEYS: generateKeySpec('k1'), TOKEN_TAP_SPOOL_DIR: spoolDir, TOKEN_TAP_API_LISTEN: 'off' },
    });
    running.push(sidecar);
    return sidecar;
  }

  it('refuses a second live sidecar on the directory, naming the holder', async () => {
    const first = await start();
    const started = Date.now();
    const refusal = await start().then(
      () => '(started)',
      (error: Error) => error.message,
    );
    const line = /token-tap: (the spool directory .*)/.exec(refusal)?.[1];
    console.log(`      second sidecar refused in ${Date.now() - started} ms: "${line}"`);
    expect(refusal).to.match(/exited with 1/);
    expect(line).to.equal(`the spool directory ${spoolDir} is in use by another live token-tap (pid ${first.pid}): give each sidecar its own TOKEN_TAP_SPOOL_DIR`);
  });

  it('of two sidecars started at the same moment, exactly one runs (also over a stale lock file)', async () => {
    const rounds: string[] = [];
    for (let round = 0; round < 3; round += 1) {
      // A lock file left by a process that is gone: both starters see it, and only one may win.
      const gone = spawn('true');
      await new Promise((resolve) => gone.once('exit', resolve));
      writeFileSync(path.join(spoolDir, 'lock'), `${gone.pid}\n`);
      const outcomes = await Promise.allSettled([start(), start()]);
      const ran = outcomes.filter((outcome) => outcome.status === 'fulfilled').length;
      const refused = outcomes.filter((outcome) => outcome.status === 'rejected' && /is in use by another live token-tap \(pid \d+\)/.test(String(outcome.reason))).length;
      rounds.push(`round ${round + 1}: ran ${ran}, refused ${refused}`);
      expect({ ran, refused }, rounds.join('; ')).to.deep.equal({ ran: 1, refused: 1 });
      for (const sidecar of running.splice(0)) await sidecar.stop('SIGKILL');
    }
    console.log(`      ${rounds.join('; ')}`);
  });
});
