// The intake between ext_proc streams and capture work is bounded: while capture work has not
// taken the responses waiting (here: a gather window of 1 s, as when capture work falls behind
// under sustained overload), streams are served on and what exceeds TOKEN_TAP_CAPTURE_BACKLOG is
// dropped, counted and logged; what was kept is captured once the work runs.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import type { Sidecar } from '../../src/sidecar.js';
import { generateKeySpec } from '../../src/keys/key-ring.js';
import { startInProcessSidecar, type InProcessSidecar } from '../support/in-process.js';
import { waitFor } from '../support/ports.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { metricValue } from '../support/metrics.js';

const BURST = fileURLToPath(new URL('../support/extproc-burst.js', import.meta.url));
const STREAMS = 40;
const BACKLOG = 5;

describe('the capture backlog bound (ext_proc streams to capture work)', function () {
  this.timeout(30_000);
  let db: TestDatabase;
  let running: InProcessSidecar;
  let sidecar: Sidecar;

  before(async () => {
    db = await createTestDatabase('backlog');
    running = await startInProcessSidecar({
      DATABASE_URL: db.url,
      TOKEN_TAP_KEYS: generateKeySpec('k1'),
      TOKEN_TAP_API_LISTEN: 'off',
      TOKEN_TAP_CAPTURE_BACKLOG: String(BACKLOG),
      TOKEN_TAP_CAPTURE_GATHER_MS: '1000',
    });
    sidecar = running.sidecar;
  });
  after(async () => {
    await running?.close();
    await db?.drop();
  });

  it('keeps serving streams while capture work waits, drops past the bound, counts and logs the drops, and takes the rest', async () => {
    const child = spawn(process.execPath, [BURST, `127.0.0.1:${sidecar.address.port}`, String(STREAMS)], { stdio: ['pipe', 'pipe', 'inherit'] });
    let output = '';
    child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
    await waitFor('the burst client', async () => (output.includes('ready') ? true : undefined));
    child.stdin!.write('go\n');
    const ended = Number(await waitFor('every stream to end', async () => /ended (\d+)/.exec(output)?.[1]));
    const dropped = async () => metricValue(sidecar.metrics, 'capturesDropped', { reason: 'capture_backlog_full' });
    const spooled = async () => metricValue(sidecar.metrics, 'spoolAppended');
    await waitFor('every stream spooled or dropped', async () => ((await dropped()) + (await spooled()) >= STREAMS ? true : undefined));
    const logged = running.log
      .text()
      .split('\n')
      .filter((line) => line.includes('"reason":"capture_backlog_full"'));
    console.log(
      `      backlog bound ${BACKLOG}: streams ended ${ended}/${STREAMS}, spooled ${await spooled()}, dropped ${await dropped()} (${logged.length} log lines)`,
    );
    expect(ended).to.equal(STREAMS);
    expect(await dropped()).to.be.greaterThan(0);
    expect((await spooled()) + (await dropped())).to.equal(STREAMS);
    expect(await spooled()).to.equal(BACKLOG);
    expect(logged.length).to.be.greaterThan(0);
    child.kill();
  });
});
