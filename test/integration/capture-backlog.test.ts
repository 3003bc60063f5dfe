// The hand-over from the ext_proc thread to the capture thread is bounded: while the capture thread
// cannot take responses (here: its event loop blocked, as under sustained overload), the ext_proc
// thread keeps serving Envoy and drops what exceeds TOKEN_TAP_CAPTURE_BACKLOG, counted and logged.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import { loadSidecarConfig } from '../../src/config.js';
import { startSidecar, type Sidecar } from '../../src/main.js';
import { createLogger } from '../../src/ops/log.js';
import { generateKeySpec } from '../../src/vault/crypto.js';
import { waitFor } from '../support/ports.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';

const BURST = fileURLToPath(new URL('../support/extproc-burst.js', import.meta.url));
const STREAMS = 40;
const BACKLOG = 5;

describe('the capture backlog bound (ext_proc thread to capture thread)', function () {
  this.timeout(30_000);
  let db: TestDatabase;
  let sidecar: Sidecar;
  let logs = '';
  const spoolDir = mkdtempSync(path.join(os.tmpdir(), 'token-tap-spool-'));

  before(async () => {
    db = await createTestDatabase('backlog');
    const config = loadSidecarConfig(
      {
        DATABASE_URL: db.url,
        TOKEN_TAP_KEYS: generateKeySpec('k1'),
        TOKEN_TAP_SPOOL_DIR: spoolDir,
        TOKEN_TAP_OPS_LISTEN: '127.0.0.1:0',
        TOKEN_TAP_API_LISTEN: 'off',
        TOKEN_TAP_CAPTURE_NICE: '0',
        TOKEN_TAP_CAPTURE_BACKLOG: String(BACKLOG),
      },
      { listen: '127.0.0.1:0' },
    );
    const sink = new Writable({
      write(chunk: Buffer, _encoding, done) {
        logs += chunk.toString();
        done();
      },
    });
    sidecar = await startSidecar(config, { logger: createLogger('info', sink) });
  });
  after(async () => {
    await sidecar?.close(2_000);
    await db?.drop();
    rmSync(spoolDir, { recursive: true, force: true });
  });

  it('keeps serving streams while the capture thread is stuck, drops past the bound, counts and logs the drops, and takes the rest', async () => {
    const child = spawn(process.execPath, [BURST, `127.0.0.1:${sidecar.address.port}`, String(STREAMS)], { stdio: ['pipe', 'pipe', 'inherit'] });
    let output = '';
    child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
    await waitFor('the burst client', async () => (output.includes('ready') ? true : undefined));
    child.stdin!.write('go\n');
    // The capture thread (this one) is stuck for 1.5 s; the ext_proc thread is not.
    const until = Date.now() + 1_500;
    while (Date.now() < until) {
      /* busy */
    }
    const ended = Number(await waitFor('every stream to end', async () => /ended (\d+)/.exec(output)?.[1]));
    const dropped = async () => (await sidecar.metrics.capturesDropped.get()).values.find((value) => value.labels.reason === 'capture_backlog_full')?.value ?? 0;
    const spooled = async () => (await sidecar.metrics.spoolAppended.get()).values[0]?.value ?? 0;
    await waitFor('every stream spooled or dropped', async () => ((await dropped()) + (await spooled()) >= STREAMS ? true : undefined));
    const logged = logs.split('\n').filter((line) => line.includes('"reason":"capture_backlog_full"'));
    console.log(`      backlog bound ${BACKLOG}: streams ended ${ended}/${STREAMS}, spooled ${await spooled()}, dropped ${await dropped()} (${logged.length} log lines)`);
    expect(ended).to.equal(STREAMS);
    expect(await dropped()).to.be.greaterThan(0);
    expect((await spooled()) + (await dropped())).to.equal(STREAMS);
    expect(await spooled()).to.be.at.least(BACKLOG);
    expect(logged.length).to.be.greaterThan(0);
    child.kill();
  });
});
