// What the spool must not lose or touch, on real files: a held/ write a full disk cuts short (a small
// tmpfs, mounted as root), segments replayed at a start that a full spool must not evict, a count of
// held records while one is moved, held/'s size, a commit after close, temporaries a crash left, and
// links planted in the directory.
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statfsSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import type { Capture } from '../../src/capture/types.js';
import { segmentRecords, recordCaptureId } from '../../src/ingest/spool-codec.js';
import { spoolCensus } from '../../src/ingest/spool-census.js';
import { restoreHeld } from '../../src/ingest/spool-restore.js';
import { segmentName } from '../../src/ingest/spool-segments.js';
import { generateKeySpec, parseKeyRing } from '../../src/keys/key-ring.js';
import { syntheticCapture, syntheticTokens } from '../support/captures.js';
import { spoolOpener } from '../support/spools.js';
import { metricValue } from '../support/metrics.js';

const k0 = generateKeySpec('k0');
const k1 = generateKeySpec('k1');

function capture(index: number, padding = 0): Capture {
  return syntheticCapture('entra', `user-${index}`, {
    issuer: undefined,
    clientId: undefined,
    tokens: syntheticTokens({ accessToken: `at-${index}-${'x'.repeat(padding)}`, refreshToken: `rt-${index}`, expiresIn: 60 }),
  });
}

/** Every record in the spool's segments (not held/), as capture ids. */
function idsInSegments(dir: string): Set<string> {
  const ids = new Set<string>();
  for (const name of readdirSync(dir).filter((candidate) => candidate.endsWith('.seg'))) {
    for (const record of segmentRecords(readFileSync(path.join(dir, name)))) ids.add(recordCaptureId(record)!);
  }
  return ids;
}

/** held/'s files, name → records. */
function heldRecords(dir: string): Map<string, number> {
  const held = path.join(dir, 'held');
  if (!existsSync(held)) return new Map();
  return new Map(readdirSync(held).map((name) => [name, segmentRecords(readFileSync(path.join(held, name))).length]));
}

describe('what the capture spool must not lose or touch (real files)', function () {
  this.timeout(30_000);
  let root: string;
  let dir: string;
  const { openSpool, closeAll, opened } = spoolOpener(() => ({ dir, keyRing: parseKeyRing(k0), fsyncIntervalMs: 2 }));

  beforeEach(() => {
    root = mkdtempSync(path.join(os.tmpdir(), 'token-tap-spool-safety-'));
    dir = path.join(root, 'spool');
  });
  afterEach(async () => {
    for (const spool of opened.splice(0)) await spool.close();
    rmSync(root, { recursive: true, force: true });
  });

  it('a held/ write the disk cuts short (a full disk) fails the read: nothing committed, and once there is room held/ keeps every record, counted once', async () => {
    // A 256 KiB tmpfs of its own (as root), so the disk can be filled without touching anything else.
    const mount = path.join(root, 'small');
    mkdirSync(mount);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=256k', 'tmpfs', mount]);
    try {
      dir = path.join(mount, 'spool');
      const { spool } = await openSpool();
      const captures = Array.from({ length: 20 }, (_, index) => capture(index, 3000));
      for (const item of captures) spool.append(item);
      await spool.flush();
      await closeAll();
      const segmentBytes = readdirSync(dir)
        .filter((name) => name.endsWith('.seg'))
        .reduce((sum, name) => sum + statSync(path.join(dir, name)).size, 0);
      // Restarted without k0: all 20 records go into held/, but the disk has room for about a third of them.
      const { bavail, bsize } = statfsSync(mount);
      const filler = path.join(mount, 'filler');
      writeFileSync(filler, Buffer.alloc(Math.max(0, bavail * bsize - Math.floor(segmentBytes / 3))));
      const { spool: restarted, metrics } = await openSpool({ keyRing: parseKeyRing(k1) });
      const failure = await restarted.read(100).then(
        (batch) => `read ${batch?.records} records`,
        (error: NodeJS.ErrnoException) => error.code,
      );
      const heldAfterFailure = heldRecords(dir);
      expect(failure, 'the read fails').to.be.oneOf(['ENOSPC', 'ESHORTWRITE']);
      expect(restarted.depth).to.equal(20);
      expect(existsSync(path.join(dir, 'checkpoint.json')), 'nothing committed').to.equal(false);
      expect(
        [...heldAfterFailure.values()].reduce((sum, count) => sum + count, 0),
        'nothing counted held',
      ).to.equal(0);
      expect(await metricValue(metrics, 'spoolRecordsHeld', { reason: 'key_missing', key_id: 'k0' })).to.equal(0);

      // Room again: the next read moves every record, and the segments go only after that.
      rmSync(filler);
      const batch = (await restarted.read(100))!;
      expect(batch.records).to.equal(20);
      await restarted.commit(batch);
      const held = heldRecords(dir);
      const heldBytes = readdirSync(path.join(dir, 'held')).reduce((sum, name) => sum + statSync(path.join(dir, 'held', name)).size, 0);
      console.log(
        `      20 records to hold, room for a third: read failed (${failure}), 0 committed; with room: held ${[...held.values()]} in ${held.size} file(s), ${heldBytes} bytes`,
      );
      expect([...held.keys()]).to.have.length(1);
      expect([...held.values()]).to.deep.equal([20]);
      expect(idsInSegments(dir).size).to.equal(0);
      expect(await metricValue(metrics, 'spoolRecordsHeld', { reason: 'key_missing', key_id: 'k0' })).to.equal(20);
      expect(await metricValue(metrics, 'spoolHeldBytes')).to.equal(heldBytes);
      await closeAll();

      // The next start counts the same (a capture id in held/ is its whole record, never a torn one).
      const { metrics: again } = await openSpool({ keyRing: parseKeyRing(k1) });
      expect(await metricValue(again, 'spoolRecordsHeld', { reason: 'key_missing', key_id: 'k0' })).to.equal(20);
      expect(await metricValue(again, 'spoolHeldBytes')).to.equal(heldBytes);
      await closeAll();
    } finally {
      await closeAll();
      execFileSync('umount', [mount]);
    }
  });

  it('a segment replayed at a start (its grace window) is not evicted by a full spool before this run has it in Postgres again', async () => {
    const options = { maxBytes: 64 * 1024, segmentBytes: 4096, graceMs: 600_000 };
    const { spool } = await openSpool(options);
    for (let group = 0; group < 5; group += 1) {
      for (let index = 4 * group; index < 4 * group + 4; index += 1) spool.append(capture(index, 800));
      await spool.flush();
    }
    for (let batch: Awaited<ReturnType<typeof spool.read>>; (batch = await spool.read(100)); ) await spool.commit(batch);
    await closeAll();

    // Restarted within the window; Postgres lost those commits and is away now: the replay's first
    // batch is read and not committed, and new captures fill the spool.
    const { spool: restarted, metrics } = await openSpool(options);
    const pending = (await restarted.read(4))!;
    let accepted = 0;
    for (let index = 100; index < 200; index += 1) {
      if (restarted.append(capture(index, 800))) accepted += 1;
      if (index % 4 === 3) await restarted.flush();
    }
    await restarted.flush();
    const onDisk = idsInSegments(dir);
    const kept = pending.captures.filter((item) => onDisk.has(item.captureId)).length;
    const dropped = await metricValue(metrics, 'capturesDropped', { reason: 'spool_full' });
    console.log(`      pending replay batch of ${pending.records}: ${kept} still on disk after ${accepted} appends filled the spool (${dropped} dropped)`);
    expect(kept).to.equal(pending.records);
    expect(dropped).to.be.greaterThan(0);
    expect(restarted.bytes).to.be.at.most(64 * 1024);

    // Committed again by this run, it is a grace segment like any other: a full spool may now give it up.
    await restarted.commit(pending);
    expect(restarted.graceBytes).to.be.greaterThan(0);
  });

  it('counts a held file that a start moves back into the spool while the count runs (keys rotate never reports 0 for records that exist)', async () => {
    const { spool } = await openSpool();
    for (let index = 0; index < 5; index += 1) spool.append(capture(index));
    await spool.flush();
    await closeAll();
    const { spool: without } = await openSpool({ keyRing: parseKeyRing(k1) });
    await without.commit((await without.read(100))!);
    await closeAll();
    const [heldName] = [...heldRecords(dir).keys()];
    expect(heldName).to.match(/^key-k0-/);

    // The move lands between the count's read of the segments and its read of held/.
    let next = 999;
    const census = await spoolCensus(dir, async () => void (await restoreHeld(dir, heldName!, 4096, () => segmentName(next++, '00000000000000ab'))));
    const underK0 = (census.records.k0 ?? 0) + (census.held.keyMissing.get('k0') ?? 0);
    console.log(`      held file moved back during the count: segments ${census.records.k0 ?? 0}, held ${census.held.keyMissing.get('k0') ?? 0} under k0`);
    expect(underK0).to.be.at.least(5);
    expect(idsInSegments(dir).size, 'the move happened').to.equal(5);
  });

  it('a commit after close (a writer that outlived the shutdown grace) neither writes the checkpoint nor deletes a segment', async () => {
    const { spool } = await openSpool();
    for (let index = 0; index < 5; index += 1) spool.append(capture(index));
    await spool.flush();
    const late = (await spool.read(100))!;
    await closeAll();
    // The next sidecar has the directory by the time the late commit comes.
    const { spool: next } = await openSpool();
    const segments = readdirSync(dir).filter((name) => name.endsWith('.seg'));
    await spool.commit(late);
    expect(readdirSync(dir).filter((name) => name.endsWith('.seg'))).to.deep.equal(segments);
    expect(existsSync(path.join(dir, 'checkpoint.json'))).to.equal(false);
    expect(next.depth).to.equal(5);
    expect((await next.read(100))!.records).to.equal(5);
  });

  it('a segment deleted under it (another process manages the directory): the write is not reported durable, and the spool stops', async () => {
    const { spool, metrics } = await openSpool();
    expect(await spool.appendDurable(capture(0))).to.equal(true);
    const [segment] = readdirSync(dir).filter((name) => name.endsWith('.seg'));
    rmSync(path.join(dir, segment!));
    const durable = await spool.appendDurable(capture(1));
    const reason = await Promise.race([spool.whenStopped(), new Promise((resolve) => setTimeout(() => resolve('(running)'), 1_000))]);
    console.log(`      active segment deleted by another process: appendDurable ${durable}; spool: "${reason}"`);
    expect(durable).to.equal(false);
    expect(reason).to.match(/was deleted while this sidecar wrote to it/);
    expect(spool.append(capture(2))).to.equal(false);
    expect(await metricValue(metrics, 'capturesDropped', { reason: 'spool_stopped' })).to.equal(2);
    expect(await spool.read(100)).to.equal(undefined);
  });

  it('removes checkpoint and holder temporaries a crash left at start, and nothing else', async () => {
    mkdirSync(dir);
    const left = [`checkpoint.json.${randomUUID()}.tmp`, `holder.json.${randomUUID()}.tmp`];
    for (const name of [...left, 'notes.tmp', 'checkpoint.json.tmp']) writeFileSync(path.join(dir, name), '{}');
    await openSpool();
    const names = readdirSync(dir);
    for (const name of left) expect(names).to.not.include(name);
    expect(names).to.include.members(['notes.tmp', 'checkpoint.json.tmp']);
  });

  it('follows no link planted in the directory: a segment-named link to a file outside is neither read nor cut back, a held file that is a link is not restored', async () => {
    mkdirSync(path.join(dir, 'held'), { recursive: true });
    // Outside the spool: bytes that would read as a damaged segment (copied aside, then cut back to 8 bytes).
    const outside = path.join(root, 'precious');
    const precious = Buffer.concat([Buffer.from('TTSPOOL1'), Buffer.from([0xff, 0xff, 0xff, 0xff]), Buffer.from("not the spool's")]);
    writeFileSync(outside, precious);
    symlinkSync(outside, path.join(dir, segmentName(1, '00000000000000aa')));
    symlinkSync(outside, path.join(dir, 'held', 'key-k0-00000000000000aa.seg'));
    const { spool, log } = await openSpool();
    expect(readFileSync(outside).equals(precious), 'the file outside is unchanged').to.equal(true);
    expect(spool.depth).to.equal(0);
    expect(existsSync(path.join(dir, 'held', `damaged-${segmentName(1, '00000000000000aa')}`))).to.equal(false);
    expect(readdirSync(path.join(dir, 'held'))).to.deep.equal(['key-k0-00000000000000aa.seg']);
    expect(log.text()).to.contain('not a regular file');
  });

  it('refuses a held/ that is a link to a directory elsewhere (nothing is written there)', async () => {
    mkdirSync(dir);
    const elsewhere = path.join(root, 'elsewhere');
    mkdirSync(elsewhere);
    symlinkSync(elsewhere, path.join(dir, 'held'));
    const refusal = await openSpool().then(
      () => '(opened)',
      (error: Error) => error.message,
    );
    expect(refusal).to.contain('is a symbolic link, not a directory');
    expect(readdirSync(elsewhere)).to.deep.equal([]);
  });
});
