// With TOKEN_TAP_EXTPROC_THREAD: the ext_proc thread dies (an uncaught error in it): the main thread logs it, starts it again on
// the same port, and streams are served and handed over again; the open-streams gauge is not left high.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { once } from 'node:events';
import { expect } from 'chai';
import type { ObservedResponse } from '../../src/capture/types.js';
import { startExtProcThread } from '../../src/extproc/thread.js';
import { createMetrics } from '../../src/ops/metrics.js';
import { connectExtProc, openStream } from '../support/extproc-client.js';
import { memoryLogger } from '../support/memory-log.js';
import { waitFor } from '../support/ports.js';
import { metricValue } from '../support/metrics.js';
import { generateKeySpec } from '../../src/keys/key-ring.js';
import { startInProcessSidecar } from '../support/in-process.js';
import { createTestDatabase } from '../support/postgres.js';

const CRASHING_WORKER = new URL('../support/crash-once-worker.js', import.meta.url);

async function sendResponse(port: number, accessToken: string): Promise<void> {
  const client = connectExtProc(`127.0.0.1:${port}`);
  const call = openStream(client, 'acme');
  call.write({ response_headers: { headers: { headers: [{ key: ':status', raw_value: Buffer.from('200') }] } }, observability_mode: true });
  call.write({ response_body: { body: Buffer.from(JSON.stringify({ access_token: accessToken })), end_of_stream: true }, observability_mode: true });
  call.end();
  await once(call, 'status');
  client.close();
}

describe('the ext_proc thread dies and is started again', function () {
  this.timeout(20_000);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'token-tap-thread-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('logs it, serves the same port again, hands responses over, and leaves no stream counted open', async () => {
    const marker = path.join(dir, 'crash');
    writeFileSync(marker, '');
    process.env.TOKEN_TAP_TEST_CRASH_MARKER = marker;
    const log = memoryLogger('info');
    const metrics = createMetrics();
    const received: ObservedResponse[] = [];
    const thread = await startExtProcThread(
      { listen: '127.0.0.1:0', maxBodyBytes: 1024 * 1024, logLevel: 'info', maxBacklog: 100, nice: 0 },
      { onResponse: (observed) => received.push(observed), logger: log.logger, metrics, workerUrl: CRASHING_WORKER },
    );
    try {
      thread.setServing(true);
      await waitFor('the thread started again', async () => (log.text().includes('ext_proc thread started again') ? true : undefined), 10_000);
      delete process.env.TOKEN_TAP_TEST_CRASH_MARKER;
      await sendResponse(thread.port, 'at-after-restart');
      await waitFor('the response handed over', async () => (received.length > 0 ? true : undefined));
      const messages = log.lines().map((line) => line.msg);
      expect(messages).to.include('the ext_proc thread failed');
      expect(messages).to.include('the ext_proc thread stopped; starting it again (Envoy fails open meanwhile)');
      expect(received.map((observed) => JSON.parse(observed.body.toString()).access_token)).to.deep.equal(['at-after-restart']);
      expect(Buffer.isBuffer(received[0]!.body)).to.equal(true);
      expect(await metricValue(metrics, 'extProcStreamsOpen')).to.equal(0);
      expect(await metricValue(metrics, 'extProcStreams')).to.equal(1);
    } finally {
      delete process.env.TOKEN_TAP_TEST_CRASH_MARKER;
      await thread.close(1_000);
    }
  });
});

describe('TOKEN_TAP_EXTPROC_THREAD=true: the sidecar serves ext_proc on a thread of its own', function () {
  this.timeout(20_000);

  it('captures through it, names the thread in the ready line, and stops cleanly', async () => {
    const db = await createTestDatabase('extproc_thread');
    const running = await startInProcessSidecar({
      DATABASE_URL: db.url,
      TOKEN_TAP_KEYS: generateKeySpec('k1'),
      TOKEN_TAP_API_LISTEN: 'off',
      TOKEN_TAP_EXTPROC_THREAD: 'true',
    });
    try {
      await sendResponse(running.sidecar.address.port, 'at-through-the-thread');
      await waitFor('the capture in the spool', async () => ((await metricValue(running.sidecar.metrics, 'spoolAppended')) >= 1 ? true : undefined));
      expect(await metricValue(running.sidecar.metrics, 'extProcStreams')).to.equal(1);
      expect(running.log.text()).to.match(/"extProcThread":\d+/);
    } finally {
      await running.close();
      await db.drop();
    }
  });
});
