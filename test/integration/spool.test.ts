// The capture spool on a real file system: group commit, order, trimming, replay after a crash,
// damaged records, the size cap, the directory lock, and no plaintext on disk.
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { appendFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import type { Capture } from '../../src/capture/types.js';
import { generateKeySpec, parseKeyRing } from '../../src/keys/key-ring.js';
import { SpoolLockedError } from '../../src/ingest/spool.js';
import { syntheticCapture, syntheticTokens } from '../support/captures.js';
import { spoolOpener } from '../support/spools.js';
import { metricValue } from '../support/metrics.js';
import { waitFor } from '../support/ports.js';

const ring = parseKeyRing(generateKeySpec('k1'));

function holder(dir: string): { id: string; pid: number; hostname: string; since: string } {
  return JSON.parse(readFileSync(path.join(dir, 'holder.json'), 'utf8'));
}

function capture(index: number, accessToken = `at-${index}`): Capture {
  return syntheticCapture('entra', `user-${index}`, {
    observedAt: new Date(Date.UTC(2025, 0, 1, 0, 0, index)),
    issuer: undefined,
    clientId: undefined,
    tokens: syntheticTokens({ accessToken, refreshToken: `rt-${index}`, expiresIn: 60 }),
  });
}

describe('capture spool (real files)', function () {
  this.timeout(20_000);
  let dir: string;
  const { openSpool, opened } = spoolOpener(() => ({ dir, keyRing: ring, fsyncIntervalMs: 5 }));

  beforeEach(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'token-tap-spool-test-'));
  });
  afterEach(async () => {
    for (const spool of opened.splice(0)) await spool.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('counts a capture in its depth while its group is being fsynced (the pump takes 0 to mean nothing is on its way)', async () => {
    const { spool } = await openSpool();
    expect(spool.append(capture(1))).to.equal(true);
    let flushed = false;
    const flushing = spool.flush().then(() => (flushed = true));
    let lowest = spool.depth;
    while (!flushed) {
      lowest = Math.min(lowest, spool.depth);
      await new Promise((resolve) => setImmediate(resolve));
    }
    await flushing;
    expect(lowest).to.equal(1);
    expect(spool.depth).to.equal(1);
  });

  it('fsyncs appends in groups and reads them back in order, observedAt as a Date', async () => {
    const { spool, metrics } = await openSpool();
    const captures = Array.from({ length: 50 }, (_, index) => capture(index));
    for (const item of captures) expect(spool.append(item)).to.equal(true);
    expect(await spool.read(100), 'nothing is read before it is durable').to.equal(undefined);
    await spool.flush();
    const fsyncs = (await metrics.spoolFsyncSeconds.get()).values.find((value) => value.metricName === 'token_tap_spool_fsync_seconds_count')!.value;
    const batch = (await spool.read(100))!;
    expect(batch.records).to.equal(50);
    expect(batch.captures.map((item) => item.captureId)).to.deep.equal(captures.map((item) => item.captureId));
    expect(batch.captures[7]!.observedAt).to.be.instanceOf(Date);
    expect(batch.captures[7]!.observedAt.getTime()).to.equal(captures[7]!.observedAt.getTime());
    expect(fsyncs, 'one group commit for 50 appends').to.equal(1);
    expect(await metricValue(metrics, 'spoolAppended')).to.equal(50);
  });

  it('after a commit, segments Postgres has are deleted and a reopen does not replay them', async () => {
    const { spool } = await openSpool({ segmentBytes: 4096 });
    const captures = Array.from({ length: 60 }, (_, index) => capture(index));
    for (const item of captures.slice(0, 30)) spool.append(item);
    await spool.flush();
    for (const item of captures.slice(30)) spool.append(item);
    await spool.flush();
    const segmentsBefore = readdirSync(dir).filter((name) => name.endsWith('.seg')).length;
    const first = (await spool.read(40))!;
    await spool.commit(first);
    const segmentsAfter = readdirSync(dir).filter((name) => name.endsWith('.seg')).length;
    expect(spool.depth).to.equal(20);
    await spool.close();
    opened.length = 0;

    const { spool: reopened, log } = await openSpool({ segmentBytes: 4096 });
    expect(reopened.depth).to.equal(20);
    const rest = (await reopened.read(100))!;
    expect(rest.captures.map((item) => item.captureId)).to.deep.equal(captures.slice(40).map((item) => item.captureId));
    expect(log.text()).to.contain('replaying them to Postgres');
    console.log(`      segments: ${segmentsBefore} before the commit, ${segmentsAfter} after it`);
    expect(segmentsAfter).to.be.lessThan(segmentsBefore);
  });

  it('after a crash, replays every durable record past the checkpoint and ignores a torn last record', async () => {
    const { spool } = await openSpool();
    const captures = Array.from({ length: 10 }, (_, index) => capture(index));
    for (const item of captures) spool.append(item);
    await spool.flush();
    await spool.commit((await spool.read(3))!);
    // The crash image: the files as they are now, the lock held by a process that is gone.
    const image = mkdtempSync(path.join(os.tmpdir(), 'token-tap-spool-crash-'));
    cpSync(dir, image, { recursive: true });
    writeFileSync(path.join(image, 'lock'), '2147483646\n');
    const segment = readdirSync(image).find((name) => name.endsWith('.seg'))!;
    appendFileSync(path.join(image, segment), Buffer.from([0, 0, 1, 0, 1, 2, 3]));
    try {
      const { spool: replayed, log } = await openSpool({ dir: image });
      expect(replayed.depth).to.equal(7);
      const batch = (await replayed.read(100))!;
      expect(batch.captures.map((item) => item.captureId)).to.deep.equal(captures.slice(3).map((item) => item.captureId));
      expect(log.text()).to.contain('ends in a partial record');
      await replayed.close();
    } finally {
      opened.pop();
      rmSync(image, { recursive: true, force: true });
    }
  });

  it('moves a record that cannot be opened aside into held/, counts and logs it without its content, and reads the rest', async () => {
    const { spool } = await openSpool();
    const captures = [capture(0, 'CANARY-damaged-0'), capture(1, 'CANARY-damaged-1'), capture(2, 'CANARY-damaged-2')];
    for (const item of captures) spool.append(item);
    await spool.flush();
    await spool.close();
    opened.length = 0;
    const file = path.join(dir, readdirSync(dir).find((name) => name.endsWith('.seg'))!);
    const bytes = readFileSync(file);
    const second = 8 + bytes.readUInt32BE(8) + 4;
    const secondFrame = Buffer.from(bytes.subarray(second, second + 4 + bytes.readUInt32BE(second)));
    bytes[second + 4 + 60] = bytes[second + 4 + 60]! ^ 0xff;
    secondFrame[4 + 60] = secondFrame[4 + 60]! ^ 0xff;
    writeFileSync(file, bytes);

    const { spool: reopened, log, metrics } = await openSpool();
    const batch = (await reopened.read(10))!;
    await reopened.commit(batch);
    await reopened.close();
    opened.length = 0;
    expect(batch.records).to.equal(3);
    expect(batch.captures.map((item) => item.captureId)).to.deep.equal([captures[0]!.captureId, captures[2]!.captureId]);
    expect(await metricValue(metrics, 'spoolRecordsHeld', { reason: 'unreadable' })).to.equal(1);
    expect(await metricValue(metrics, 'spoolRecordsHeldTotal', { reason: 'unreadable' })).to.equal(1);
    expect(await metricValue(metrics, 'capturesDropped', { reason: 'spool_unreadable' })).to.equal(0);
    expect(log.text()).to.contain('spool records cannot be opened').and.not.contain('CANARY');
    // The segment is gone (its readable records are in Postgres); the damaged record is kept, byte for byte.
    expect(readdirSync(dir).filter((name) => name.endsWith('.seg'))).to.deep.equal([]);
    const held = readdirSync(path.join(dir, 'held'));
    expect(held).to.have.length(1);
    expect(held[0]).to.match(/^unreadable-[0-9a-f]{16}\.seg$/);
    expect(readFileSync(path.join(dir, 'held', held[0]!)).equals(Buffer.concat([Buffer.from('TTSPOOL1'), secondFrame]))).to.equal(true);
  });

  it('moves a segment damaged in the middle (a record length that cannot be right) aside into held/ as it was, and replays the records before the damage', async () => {
    const { spool } = await openSpool();
    const captures = Array.from({ length: 10 }, (_, index) => capture(index));
    for (const item of captures) spool.append(item);
    await spool.flush();
    await spool.close();
    opened.length = 0;
    const name = readdirSync(dir).find((candidate) => candidate.endsWith('.seg'))!;
    const file = path.join(dir, name);
    const bytes = readFileSync(file);
    let at = 8;
    for (let index = 0; index < 4; index += 1) at += 4 + bytes.readUInt32BE(at);
    bytes.writeUInt32BE(0xffffffff, at);
    writeFileSync(file, bytes);

    const { spool: reopened, log, metrics } = await openSpool();
    const batch = (await reopened.read(100))!;
    await reopened.commit(batch);
    await reopened.close();
    opened.length = 0;
    const held = await metricValue(metrics, 'spoolRecordsHeld', { reason: 'damaged_segment' });
    console.log(`      10 records, the 5th record's length damaged: read ${batch.records}, held (damaged_segment) ${held} (one per damaged segment)`);
    expect(batch.captures.map((item) => item.captureId)).to.deep.equal(captures.slice(0, 4).map((item) => item.captureId));
    expect(held).to.equal(1);
    expect(await metricValue(metrics, 'capturesDropped', { reason: 'spool_damaged' })).to.equal(0);
    expect(log.text()).to.contain('spool segment is damaged').and.not.contain('partial record');
    // Not deleted: the segment as it was found is in held/, after its readable records went to Postgres.
    expect(readdirSync(dir).filter((candidate) => candidate.endsWith('.seg'))).to.deep.equal([]);
    expect(readFileSync(path.join(dir, 'held', `damaged-${name}`)).equals(bytes)).to.equal(true);
  });

  it('does not count a torn last record (a write a crash cut short) as damage', async () => {
    const { spool } = await openSpool();
    for (let index = 0; index < 3; index += 1) spool.append(capture(index));
    await spool.flush();
    await spool.close();
    opened.length = 0;
    appendFileSync(path.join(dir, readdirSync(dir).find((name) => name.endsWith('.seg'))!), Buffer.from([0, 0, 1, 0, 1, 2, 3]));
    const { spool: reopened, log, metrics } = await openSpool();
    expect(reopened.depth).to.equal(3);
    expect(await metricValue(metrics, 'spoolRecordsHeld', { reason: 'damaged_segment' })).to.equal(0);
    expect(log.text()).to.contain('ends in a partial record');
  });

  it('at the size cap, drops the capture, counts and logs it, and writes nothing for it', async () => {
    const { spool, log, metrics } = await openSpool({ maxBytes: 64 * 1024 });
    let accepted = 0;
    for (let index = 0; index < 200; index += 1) if (spool.append(capture(index, `at-${'x'.repeat(600)}-${index}`))) accepted += 1;
    await spool.flush();
    const dropped = await metricValue(metrics, 'capturesDropped', { reason: 'spool_full' });
    const onDisk = readdirSync(dir)
      .filter((name) => name.endsWith('.seg'))
      .reduce((sum, name) => sum + readFileSync(path.join(dir, name)).length, 0);
    console.log(`      cap 65536 bytes: accepted ${accepted}, dropped ${dropped}, on disk ${onDisk} bytes`);
    expect(accepted).to.be.greaterThan(0);
    expect(dropped).to.equal(200 - accepted);
    expect(onDisk).to.be.at.most(64 * 1024);
    expect(spool.depth).to.equal(accepted);
    expect(log.lines().filter((line) => line.msg === 'capture dropped' && line.reason === 'spool_full')).to.have.length(dropped);
  });

  it('counts a group that is being written against the cap, so appends during the fsync cannot overshoot it', async () => {
    const { spool } = await openSpool({ maxBytes: 64 * 1024, fsyncIntervalMs: 1 });
    let accepted = 0;
    let highest = 0;
    // Appends spread over many ticks land while earlier groups are in write() and fdatasync().
    for (let index = 0; index < 300; index += 1) {
      if (spool.append(capture(index, `at-${'x'.repeat(600)}-${index}`))) accepted += 1;
      highest = Math.max(highest, spool.bytes);
      if (index % 3 === 0) await new Promise((resolve) => setImmediate(resolve));
    }
    await spool.flush();
    const onDisk = readdirSync(dir)
      .filter((name) => name.endsWith('.seg'))
      .reduce((sum, name) => sum + readFileSync(path.join(dir, name)).length, 0);
    console.log(`      cap 65536 bytes, appends during writes: accepted ${accepted}, highest spool.bytes ${highest}, on disk ${onDisk} bytes`);
    expect(accepted).to.be.greaterThan(0).and.lessThan(300);
    expect(highest).to.be.at.most(64 * 1024);
    expect(onDisk).to.be.at.most(64 * 1024);
    expect(spool.bytes).to.equal(onDisk);
  });

  it('refuses a directory another sidecar holds, and is not held back by a lock or holder file left by a process that is gone', async () => {
    await openSpool();
    let refused: unknown;
    try {
      await openSpool();
    } catch (error) {
      refused = error;
    }
    expect(refused).to.be.instanceOf(SpoolLockedError);
    expect((refused as Error).message).to.contain('give each its own TOKEN_TAP_SPOOL_DIR');

    const other = mkdtempSync(path.join(os.tmpdir(), 'token-tap-spool-stale-'));
    writeFileSync(path.join(other, 'lock'), '2147483646\n');
    writeFileSync(
      path.join(other, 'holder.json'),
      JSON.stringify({ id: '0123456789abcdef', pid: 2147483646, hostname: 'gone', since: '2020-01-01T00:00:00.000Z' }),
    );
    try {
      const { spool } = await openSpool({ dir: other });
      expect(holder(other)).to.include({ pid: process.pid, hostname: os.hostname() });
      await spool.close();
      expect(existsSync(path.join(other, 'holder.json')), 'a clean stop removes the holder file').to.equal(false);
    } finally {
      opened.pop();
      rmSync(other, { recursive: true, force: true });
    }
  });

  it('is not blocked by a lock file naming a PID that now belongs to another live process', async () => {
    // After a restart in a container the dead holder's PID is often someone else's.
    const other = spawn('sleep', ['30'], { stdio: 'ignore' });
    try {
      writeFileSync(path.join(dir, 'lock'), `${other.pid}\n`);
      const { spool } = await openSpool();
      expect(holder(dir).pid).to.equal(process.pid);
      expect(spool.append(capture(0))).to.equal(true);
      await spool.flush();
      expect(spool.depth).to.equal(1);
    } finally {
      other.kill('SIGKILL');
    }
  });

  it('is held by an OS file lock on the directory: refused while another process holds it (naming the holder), free the moment that process is SIGKILLed', async () => {
    // Any process that holds flock(2) on `lock`, in whatever network namespace: here a Python one.
    writeFileSync(path.join(dir, 'lock'), '');
    const other = spawn(
      'python3',
      [
        '-c',
        'import fcntl,sys,time\nf=open(sys.argv[1],"a")\nfcntl.flock(f,fcntl.LOCK_EX)\nprint("locked",flush=True)\ntime.sleep(60)',
        path.join(dir, 'lock'),
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    await new Promise((resolve) => other.stdout!.once('data', resolve));
    writeFileSync(
      path.join(dir, 'holder.json'),
      JSON.stringify({ id: 'fedcba9876543210', pid: other.pid, hostname: 'elsewhere', since: '2025-01-01T00:00:00.000Z' }),
    );
    try {
      const refused = await openSpool().then(
        () => undefined,
        (error: Error) => error,
      );
      expect(refused).to.be.instanceOf(SpoolLockedError);
      expect(refused!.message).to.equal(
        `the spool directory ${dir} is in use by another live token-tap (pid ${other.pid} on host elsewhere, since 2025-01-01T00:00:00.000Z, writer fedcba9876543210): give each sidecar its own TOKEN_TAP_SPOOL_DIR`,
      );
    } finally {
      other.kill('SIGKILL');
      await new Promise((resolve) => other.once('exit', resolve));
    }
    const { spool } = await openSpool();
    expect(holder(dir).pid).to.equal(process.pid);
    expect(spool.append(capture(0))).to.equal(true);
  });

  it('names its writer: a writer id per run (with pid and hostname) in holder.json, the checkpoint and each segment name', async () => {
    const { spool } = await openSpool({ segmentBytes: 4096, graceMs: 60_000 });
    for (let index = 0; index < 20; index += 1) {
      spool.append(capture(index));
      if (index % 5 === 4) await spool.flush();
    }
    await spool.commit((await spool.read(5))!);
    const writer = holder(dir);
    expect(writer).to.include({ pid: process.pid, hostname: os.hostname() });
    expect(writer.id).to.match(/^[0-9a-f]{16}$/);
    const segments = readdirSync(dir).filter((name) => name.endsWith('.seg'));
    expect(segments.length).to.be.greaterThan(1);
    for (const name of segments) expect(name).to.match(new RegExp(`^\\d{20}-${writer.id}\\.seg$`));
    const checkpoint = JSON.parse(readFileSync(path.join(dir, 'checkpoint.json'), 'utf8')) as { writer: { id: string }; segments: Record<string, unknown> };
    expect(checkpoint.writer).to.deep.equal(writer);
    expect(Object.keys(checkpoint.segments)).to.deep.equal([segments.sort()[0]]);
  });

  const segmentFiles = () =>
    readdirSync(dir)
      .filter((name) => name.endsWith('.seg'))
      .sort();

  it('keeps segments Postgres has for the grace window, replays them at a restart within it, and deletes them once it is over', async () => {
    const graceMs = 1_500;
    const { spool } = await openSpool({ segmentBytes: 4096, graceMs });
    const captures = Array.from({ length: 20 }, (_, index) => capture(index));
    for (const [index, item] of captures.entries()) {
      spool.append(item);
      if (index % 5 === 4) await spool.flush();
    }
    const written = segmentFiles();
    await spool.commit((await spool.read(100))!);
    expect(spool.depth).to.equal(0);
    expect(segmentFiles(), 'committed segments stay for the grace window').to.deep.equal(written);
    await spool.close();
    opened.length = 0;

    // A restart within the window replays them (Postgres ignores capture ids it has; one that lost them gets them back).
    const { spool: restarted, log } = await openSpool({ segmentBytes: 4096, graceMs });
    expect(restarted.depth).to.equal(20);
    expect(log.lines().find((line) => String(line.msg).includes('replaying them to Postgres'))).to.include({ captures: 20, alreadyInPostgres: 20 });
    const replayed = (await restarted.read(100))!;
    expect(replayed.captures.map((item) => item.captureId)).to.deep.equal(captures.map((item) => item.captureId));
    await restarted.commit(replayed);
    expect(segmentFiles()).to.deep.equal(written);
    const committedAt = Date.now();
    await waitFor('the grace window to end', async () => (segmentFiles().length === 0 ? true : undefined), 5_000, 25);
    const gone = Date.now() - committedAt;
    console.log(
      `      grace ${graceMs} ms: ${written.length} segments kept after the commit and replayed at a restart, deleted ${gone} ms after the last commit`,
    );
    expect(gone).to.be.at.least(graceMs - 50);
    expect(restarted.depth).to.equal(0);
  });

  it('does not replay a segment whose grace window ended before the restart, and deletes it', async () => {
    const { spool } = await openSpool({ segmentBytes: 4096, graceMs: 200 });
    for (let index = 0; index < 10; index += 1) {
      spool.append(capture(index));
      if (index % 5 === 4) await spool.flush();
    }
    await spool.commit((await spool.read(100))!);
    await spool.close();
    opened.length = 0;
    expect(segmentFiles().length).to.be.greaterThan(0);
    await new Promise((resolve) => setTimeout(resolve, 300));
    const { spool: restarted } = await openSpool({ segmentBytes: 4096, graceMs: 200 });
    expect(restarted.depth).to.equal(0);
    expect(segmentFiles()).to.deep.equal([]);
  });

  it('a full spool deletes segments in their grace window first, oldest first, before it drops a capture', async () => {
    const { spool, metrics } = await openSpool({ maxBytes: 64 * 1024, segmentBytes: 8 * 1024, graceMs: 600_000 });
    const big = (index: number) => capture(index, `at-${'x'.repeat(600)}-${index}`);
    let index = 0;
    // Fill about half the cap, all of it in Postgres: grace segments.
    while (spool.bytes < 32 * 1024) {
      spool.append(big(index++));
      if (index % 5 === 0) await spool.flush();
    }
    await spool.flush();
    // Read until empty: a read hands out what this run still holds in memory (a few KiB with a cap this small), then the disk.
    for (let batch = await spool.read(1000), reads = 0; batch && reads < 100; batch = await spool.read(1000), reads += 1) await spool.commit(batch);
    const graceSegments = segmentFiles();
    const graceBytes = spool.graceBytes;
    expect(graceSegments.length).to.be.greaterThan(2);
    expect(graceBytes).to.be.greaterThan(16 * 1024);
    // Now Postgres is away: new captures fill the spool. The grace segments make room, oldest first.
    let accepted = 0;
    for (let round = 0; round < 300 && (await metricValue(metrics, 'capturesDropped', { reason: 'spool_full' })) === 0; round += 1) {
      if (spool.append(big(index++))) accepted += 1;
      if (round % 5 === 4) await spool.flush();
      const left = graceSegments.filter((name) => segmentFiles().includes(name));
      // Whatever is left of them is always the newest of them.
      expect(left, `round ${round}`).to.deep.equal(graceSegments.slice(graceSegments.length - left.length));
    }
    await spool.flush();
    const left = graceSegments.filter((name) => segmentFiles().includes(name));
    console.log(
      `      cap 65536 bytes with ${graceSegments.length} grace segments (${graceBytes} bytes): ${accepted} more accepted before the first drop, grace segments left ${left.length}`,
    );
    expect(left).to.deep.equal([]);
    expect(spool.depth).to.equal(accepted);
    expect(accepted * 650).to.be.greaterThan(32 * 1024);
    expect(spool.bytes).to.be.at.most(64 * 1024);
  });

  it("replays, never deletes, a segment the checkpoint does not name (another writer's, below the checkpoint) and segments under a checkpoint of the release before", async () => {
    const { spool } = await openSpool({ segmentBytes: 4096 });
    for (let index = 0; index < 10; index += 1) {
      spool.append(capture(index));
      if (index % 5 === 4) await spool.flush();
    }
    await spool.commit((await spool.read(5))!);
    await spool.close();
    opened.length = 0;
    // Another writer's segment, sequenced below this one's (two sidecars once shared the directory),
    // and one of the release before (no writer id), below a checkpoint of that release.
    const [ours] = segmentFiles();
    const bytes = readFileSync(path.join(dir, ours!));
    writeFileSync(path.join(dir, `${'0'.repeat(19)}0-00000000000000aa.seg`), bytes);
    const { spool: reopened } = await openSpool({ segmentBytes: 4096 });
    expect(reopened.depth).to.equal(10);
    expect(segmentFiles()).to.include(`${'0'.repeat(19)}0-00000000000000aa.seg`);
    await reopened.close();
    opened.length = 0;

    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir);
    writeFileSync(path.join(dir, `${'0'.repeat(19)}1.seg`), bytes);
    writeFileSync(path.join(dir, `${'0'.repeat(19)}2.seg`), bytes);
    writeFileSync(path.join(dir, 'checkpoint.json'), JSON.stringify({ segment: 3, offset: 8 }));
    const { spool: upgraded } = await openSpool();
    expect(upgraded.depth).to.equal(10);
    expect(segmentFiles()).to.deep.equal([`${'0'.repeat(19)}1.seg`, `${'0'.repeat(19)}2.seg`]);
  });

  it('keeps no token in plaintext on disk', async () => {
    const { spool } = await openSpool();
    const secret = `CANARY-${randomUUID()}`;
    spool.append(capture(0, secret));
    await spool.flush();
    const disk = readdirSync(dir)
      .map((name) => readFileSync(path.join(dir, name)).toString('latin1'))
      .join('');
    expect(disk.length).to.be.greaterThan(100);
    for (const form of [secret, Buffer.from(secret).toString('hex'), Buffer.from(secret).toString('base64'), 'rt-0'])
      expect(disk.includes(form), form).to.equal(false);
  });
});
