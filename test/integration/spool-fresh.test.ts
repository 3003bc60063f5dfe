// The spool hands the reader this run's records from memory once they are durable, and still reads
// from disk what is not there (an earlier run's records, records past the bound), in order, each once.
import { mkdtempSync, readdirSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import type { Capture } from '../../src/capture/types.js';
import { generateKeySpec, parseKeyRing } from '../../src/keys/key-ring.js';
import { MAX_FRESH_RECORDS } from '../../src/ingest/spool-fresh.js';
import { syntheticCapture, syntheticTokens } from '../support/captures.js';
import { spoolOpener } from '../support/spools.js';

const ring = parseKeyRing(generateKeySpec('k1'));

function capture(index: number): Capture {
  return syntheticCapture('entra', `user-${index}`, { tokens: syntheticTokens({ accessToken: `at-${index}`, refreshToken: `rt-${index}` }) });
}

describe("capture spool: this run's records read from memory", function () {
  this.timeout(30_000);
  let dir: string;
  const { openSpool, closeAll } = spoolOpener(() => ({ dir, keyRing: ring, fsyncIntervalMs: 5 }));

  beforeEach(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'token-tap-spool-fresh-'));
  });
  afterEach(async () => {
    await closeAll();
    rmSync(dir, { recursive: true, force: true });
  });

  it('does not read back a record it wrote and still holds: the capture comes whole even once its bytes on disk are overwritten', async () => {
    const { spool } = await openSpool();
    const item = capture(1);
    spool.append(item);
    await spool.flush();
    const [name] = readdirSync(dir).filter((file) => file.endsWith('.seg'));
    const file = path.join(dir, name!);
    const bytes = readFileSync(file);
    bytes.fill(0x41, 8 + 64);
    writeFileSync(file, bytes);
    const batch = (await spool.read(10))!;
    expect(batch.records).to.equal(1);
    expect(batch.captures.map((read) => read.tokens?.accessToken)).to.deep.equal(['at-1']);
    expect(readdirSync(dir), 'nothing set aside').to.not.include('held');
  });

  it("hands an earlier run's records (from disk) first, then this run's, and records past the bound from disk, each once, in order", async () => {
    const first = await openSpool();
    for (let index = 0; index < 5; index += 1) first.spool.append(capture(index));
    await closeAll();
    const { spool } = await openSpool();
    const total = MAX_FRESH_RECORDS + 300;
    const appended = Array.from({ length: total }, (_, index) => capture(100 + index));
    for (const item of appended) expect(spool.append(item)).to.equal(true);
    await spool.flush();
    const read: string[] = [];
    for (let batch = await spool.read(200); batch; batch = await spool.read(200)) {
      read.push(...batch.captures.map((item) => item.subject!));
      await spool.commit(batch);
    }
    expect(read).to.deep.equal([...[0, 1, 2, 3, 4], ...appended.map((_, index) => 100 + index)].map((index) => `user-${index}`));
    expect(spool.depth).to.equal(0);
  });
});
