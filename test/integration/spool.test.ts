// The capture spool on a real file system: group commit, order, trimming, replay after a crash,
// damaged records, the size cap, the directory lock, and no plaintext on disk.
import { spawn } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import { appendFileSync, cpSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync, statSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import type { Capture } from '../../src/capture/types.js';
import { createMetrics, type Metrics } from '../../src/ops/metrics.js';
import { generateKeySpec, parseKeyRing } from '../../src/keys/key-ring.js';
import { CaptureSpool, SpoolLockedError, type SpoolOptions } from '../../src/ingest/spool.js';
import { syntheticCapture, syntheticTokens } from '../support/captures.js';
import { memoryLogger } from '../support/memory-log.js';
import { metricValue } from '../support/metrics.js';

const ring = parseKeyRing(generateKeySpec('k1'));

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
  const opened: CaptureSpool[] = [];

  beforeEach(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'token-tap-spool-test-'));
  });
  afterEach(async () => {
    for (const spool of opened.splice(0)) await spool.close();
    rmSync(dir, { recursive: true, force: true });
  });

  async function openSpool(overrides: Partial<SpoolOptions> = {}) {
    const log = memoryLogger();
    const metrics = createMetrics();
    const spool = await CaptureSpool.open({ dir, maxBytes: 16 * 1024 * 1024, fsyncIntervalMs: 5, keyRing: ring, logger: log.logger, metrics, ...overrides });
    opened.push(spool);
    return { spool, log, metrics };
  }

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

  it('skips a record that cannot be opened, counts and logs it without its content, and reads the rest', async () => {
    const { spool } = await openSpool();
    const captures = [capture(0, 'CANARY-damaged-0'), capture(1, 'CANARY-damaged-1'), capture(2, 'CANARY-damaged-2')];
    for (const item of captures) spool.append(item);
    await spool.flush();
    await spool.close();
    opened.length = 0;
    const file = path.join(dir, readdirSync(dir).find((name) => name.endsWith('.seg'))!);
    const bytes = readFileSync(file);
    const second = 8 + bytes.readUInt32BE(8) + 4;
    bytes[second + 4 + 60] = bytes[second + 4 + 60]! ^ 0xff;
    writeFileSync(file, bytes);

    const { spool: reopened, log, metrics } = await openSpool();
    const batch = (await reopened.read(10))!;
    expect(batch.records).to.equal(3);
    expect(batch.captures.map((item) => item.captureId)).to.deep.equal([captures[0]!.captureId, captures[2]!.captureId]);
    expect(await metricValue(metrics, 'capturesDropped', { reason: 'spool_unreadable' })).to.equal(1);
    expect(log.text()).to.contain('spool record cannot be opened').and.not.contain('CANARY');
  });

  it('counts the loss when a segment is damaged in the middle (a record length that cannot be right)', async () => {
    const { spool } = await openSpool();
    const captures = Array.from({ length: 10 }, (_, index) => capture(index));
    for (const item of captures) spool.append(item);
    await spool.flush();
    await spool.close();
    opened.length = 0;
    const file = path.join(dir, readdirSync(dir).find((name) => name.endsWith('.seg'))!);
    const bytes = readFileSync(file);
    let at = 8;
    for (let index = 0; index < 4; index += 1) at += 4 + bytes.readUInt32BE(at);
    bytes.writeUInt32BE(0xffffffff, at);
    writeFileSync(file, bytes);

    const { spool: reopened, log, metrics } = await openSpool();
    const batch = (await reopened.read(100))!;
    const dropped = await metricValue(metrics, 'capturesDropped', { reason: 'spool_damaged' });
    console.log(`      10 records, the 5th record's length damaged: read ${batch.records}, counted as dropped (spool_damaged) ${dropped} (one per damaged segment)`);
    expect(batch.captures.map((item) => item.captureId)).to.deep.equal(captures.slice(0, 4).map((item) => item.captureId));
    expect(dropped).to.equal(1);
    expect(log.text()).to.contain('spool segment is damaged').and.not.contain('partial record');
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
    expect(await metricValue(metrics, 'capturesDropped', { reason: 'spool_damaged' })).to.equal(0);
    expect(log.text()).to.contain('ends in a partial record');
  });

  it('at the size cap, drops the capture, counts and logs it, and writes nothing for it', async () => {
    const { spool, log, metrics } = await openSpool({ maxBytes: 64 * 1024 });
    let accepted = 0;
    for (let index = 0; index < 200; index += 1) if (spool.append(capture(index, `at-${'x'.repeat(600)}-${index}`))) accepted += 1;
    await spool.flush();
    const dropped = await metricValue(metrics, 'capturesDropped', { reason: 'spool_full' });
    const onDisk = readdirSync(dir).filter((name) => name.endsWith('.seg')).reduce((sum, name) => sum + readFileSync(path.join(dir, name)).length, 0);
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
    const onDisk = readdirSync(dir).filter((name) => name.endsWith('.seg')).reduce((sum, name) => sum + readFileSync(path.join(dir, name)).length, 0);
    console.log(`      cap 65536 bytes, appends during writes: accepted ${accepted}, highest spool.bytes ${highest}, on disk ${onDisk} bytes`);
    expect(accepted).to.be.greaterThan(0).and.lessThan(300);
    expect(highest).to.be.at.most(64 * 1024);
    expect(onDisk).to.be.at.most(64 * 1024);
    expect(spool.bytes).to.equal(onDisk);
  });

  it('refuses a directory another sidecar holds, and takes over a lock left by a process that is gone', async () => {
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
    try {
      const { spool } = await openSpool({ dir: other });
      expect(readFileSync(path.join(other, 'lock'), 'utf8').trim()).to.equal(String(process.pid));
      await spool.close();
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
      expect(readFileSync(path.join(dir, 'lock'), 'utf8').trim()).to.equal(String(process.pid));
      expect(spool.append(capture(0))).to.equal(true);
      await spool.flush();
      expect(spool.depth).to.equal(1);
    } finally {
      other.kill('SIGKILL');
    }
  });

  it('cannot be kept from starting by a process that squats the lock name it can compute from outside the directory', async () => {
    // What anyone in the network namespace can derive from the path alone (abstract sockets have no permissions).
    const real = realpathSync(dir);
    const info = statSync(real);
    const guessable = `\0token-tap-spool:${createHash('sha256').update(`${real}\0${info.dev}:${info.ino}`).digest('hex').slice(0, 40)}`;
    const squatter = net.createServer();
    await new Promise<void>((resolve, reject) => squatter.once('error', reject).listen({ path: guessable, exclusive: true }, resolve));
    try {
      const { spool } = await openSpool();
      expect(spool.append(capture(0))).to.equal(true);
      await spool.flush();
      expect(spool.depth).to.equal(1);
      expect(statSync(path.join(dir, 'lock-secret')).mode & 0o777).to.equal(0o600);
    } finally {
      await new Promise<void>((resolve) => squatter.close(() => resolve()));
    }
  });

  it('keeps no token in plaintext on disk', async () => {
    const { spool } = await openSpool();
    const secret = `CANARY-${randomUUID()}`;
    spool.append(capture(0, secret));
    await spool.flush();
    const disk = readdirSync(dir).map((name) => readFileSync(path.join(dir, name)).toString('latin1')).join('');
    expect(disk.length).to.be.greaterThan(100);
    for (const form of [secret, Buffer.from(secret).toString('hex'), Buffer.from(secret).toString('base64'), 'rt-0']) expect(disk.includes(form), form).to.equal(false);
  });
});
