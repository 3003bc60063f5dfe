// A spool directory someone else can write to (the security review's findings, on real files): a
// planted sequence number past what a double holds exactly, FIFOs under the spool's names, held files
// too large to read whole, an oversized checkpoint, `held` as a regular file, capture ids planted in
// held/, files the count does not know or cannot read, and the flock(1) child's path and environment.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import {
  closeSync,
  constants,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { open as openFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import type { Capture } from '../../src/capture/types.js';
import { frameCapture, recordCaptureId, SEGMENT_MAGIC, segmentRecords } from '../../src/ingest/spool-codec.js';
import { spoolCensus } from '../../src/ingest/spool-census.js';
import { parseSegmentName, segmentName } from '../../src/ingest/spool-segments.js';
import { generateKeySpec, parseKeyRing } from '../../src/keys/key-ring.js';
import { spoolKeyReport } from '../../src/cli/spool-key-report.js';
import { syntheticCapture, syntheticTokens } from '../support/captures.js';
import { spoolOpener } from '../support/spools.js';
import { metricValue } from '../support/metrics.js';

const k0 = generateKeySpec('k0');
const k1 = generateKeySpec('k1');
const OTHER_WRITER = '00000000000000aa';

function capture(index: number): Capture {
  return syntheticCapture('entra', `user-${index}`, {
    issuer: undefined,
    clientId: undefined,
    tokens: syntheticTokens({ accessToken: `at-${index}`, refreshToken: `rt-${index}`, expiresIn: 60 }),
  });
}

/** held/'s files, name → records. */
function heldRecords(dir: string): Map<string, number> {
  const held = path.join(dir, 'held');
  if (!existsSync(held)) return new Map();
  return new Map(readdirSync(held).map((name) => [name, segmentRecords(readFileSync(path.join(held, name))).length]));
}

/** Rejects once `ms` pass: a start or a count that hangs fails the test instead of the run. */
function bounded<T>(work: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    work,
    new Promise<T>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms (hung)`)), ms))),
  ]).finally(() => clearTimeout(timer));
}

describe('a spool directory someone else can write to (real files)', function () {
  this.timeout(60_000);
  let root: string;
  let dir: string;
  const { openSpool, closeAll, opened } = spoolOpener(() => ({ dir, keyRing: parseKeyRing(k0), fsyncIntervalMs: 2 }));
  const fifos: string[] = [];

  beforeEach(() => {
    root = mkdtempSync(path.join(os.tmpdir(), 'token-tap-spool-hostile-'));
    dir = path.join(root, 'spool');
  });
  afterEach(async () => {
    // An open that hangs on a FIFO (the bug) is released by a writer at its other end.
    for (const fifo of fifos.splice(0)) {
      try {
        closeSync(openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK));
      } catch {
        // No reader waiting: nothing hangs.
      }
    }
    for (const spool of opened.splice(0)) await spool.close();
    rmSync(root, { recursive: true, force: true });
  });

  function mkfifo(file: string): void {
    execFileSync('mkfifo', [file]);
    fifos.push(file);
  }

  it('a planted sequence past 2^52 (a file name, a checkpoint entry) is left alone: new segments neither collide nor are lost at the next start', async () => {
    expect(parseSegmentName('99999999999999999999.seg')).to.equal(undefined);
    expect(parseSegmentName(`00004503599627370496-${OTHER_WRITER}.seg`)?.seq).to.equal(2 ** 52);
    mkdirSync(dir);
    const planted = ['99999999999999999999.seg', `99999999999999999999-${OTHER_WRITER}.seg`];
    for (const name of planted) writeFileSync(path.join(dir, name), SEGMENT_MAGIC);
    writeFileSync(
      path.join(dir, 'checkpoint.json'),
      JSON.stringify({ v: 2, segments: { '99999999999999999999.seg': { offset: 8, at: 0 }, '90000000000000000000.seg': { offset: 8, at: 0 } } }),
    );
    const { spool, log } = await openSpool({ segmentBytes: 4096 });
    let durable = 0;
    for (let index = 0; index < 40; index += 1) durable += (await spool.appendDurable(capture(index))) ? 1 : 0;
    const ours = readdirSync(dir).filter((name) => parseSegmentName(name));
    console.log(`      planted ${planted.join(', ')}: ${durable}/40 appends durable in ${ours.length} segments`);
    expect(durable).to.equal(40);
    expect(ours.length, 'appends span at least three segments').to.be.at.least(3);
    expect(log.text()).to.contain('sequence out of range');
    await closeAll();
    const { spool: reopened } = await openSpool({ segmentBytes: 4096 });
    expect(reopened.depth).to.equal(durable);
    for (const name of planted) expect(readFileSync(path.join(dir, name)).equals(SEGMENT_MAGIC), `${name} left alone`).to.equal(true);
  });

  it("a FIFO under a segment's, a held file's, the checkpoint's or holder.json's name neither hangs a start nor keys rotate's count, and is left alone", async () => {
    mkdirSync(path.join(dir, 'held'), { recursive: true });
    const names = [
      segmentName(1, OTHER_WRITER),
      'checkpoint.json',
      path.join('held', `key-k0-${OTHER_WRITER}.seg`),
      path.join('held', `unreadable-${OTHER_WRITER}.seg`),
    ];
    for (const name of names) mkfifo(path.join(dir, name));
    const { spool, log } = await bounded(openSpool(), 5_000, 'the start');
    expect(spool.depth).to.equal(0);
    expect(log.text()).to.contain('not a regular file');
    expect(await spool.appendDurable(capture(1))).to.equal(true);
    await closeAll();
    // holder.json as a FIFO while another process holds the lock: the refusal reads it.
    mkfifo(path.join(dir, 'holder.json'));
    const holder: ChildProcess = spawn('/usr/bin/flock', ['--exclusive', '--', path.join(dir, 'lock'), 'sleep', '600'], { detached: true, stdio: 'ignore' });
    try {
      await new Promise((resolve) => setTimeout(resolve, 300));
      const refusal = await bounded(
        openSpool().then(
          () => '(opened)',
          (error: Error) => error.message,
        ),
        5_000,
        'the refused start',
      );
      expect(refusal).to.contain('holder unknown');
    } finally {
      process.kill(-holder.pid!, 'SIGKILL');
    }
    const census = await bounded(spoolCensus(dir), 5_000, 'the count');
    expect(census.records.k0).to.equal(1);
    expect(census.unknownFiles.names).to.include.members([
      segmentName(1, OTHER_WRITER),
      `held/key-k0-${OTHER_WRITER}.seg`,
      `held/unreadable-${OTHER_WRITER}.seg`,
    ]);
    for (const name of names) expect(statSync(path.join(dir, name)).isFIFO(), `${name} left alone`).to.equal(true);
  });

  it('counts and restores a held file far larger than a read window without reading it whole: reads stay within 1 MiB, restored segments within the segment size', async () => {
    // The file handle's reads are watched: no read asks for more than a window, no file is read whole.
    const probe = await openFile(process.execPath, 'r');
    const proto = Object.getPrototypeOf(probe) as { read: (...args: unknown[]) => Promise<unknown>; readFile: (...args: unknown[]) => Promise<unknown> };
    await probe.close();
    const { read, readFile } = proto;
    let largestRead = 0;
    let wholeReads = 0;
    proto.read = function (this: unknown, ...args: unknown[]) {
      if (typeof args[2] === 'number') largestRead = Math.max(largestRead, args[2]);
      return read.apply(this, args);
    };
    proto.readFile = function (this: unknown, ...args: unknown[]) {
      wholeReads += 1;
      return readFile.apply(this, args);
    };
    try {
      mkdirSync(path.join(dir, 'held'), { recursive: true });
      const frames = Array.from({ length: 200 }, (_, index) => frameCapture(parseKeyRing(k0), capture(index)));
      const block = Buffer.concat(frames);
      const heldFile = path.join(dir, 'held', `key-k0-${OTHER_WRITER}.seg`);
      const fd = openSync(heldFile, 'w');
      writeSync(fd, SEGMENT_MAGIC);
      let records = 0;
      for (let bytes = 0; bytes < 12 * 1024 * 1024; bytes += block.length) {
        writeSync(fd, block);
        records += frames.length;
      }
      closeSync(fd);
      const heldBytes = statSync(heldFile).size;
      // Without k0: counted where it is.
      const { metrics } = await openSpool({ keyRing: parseKeyRing(k1) });
      expect(await metricValue(metrics, 'spoolRecordsHeld', { key_id: 'k0' })).to.equal(records);
      const census = await spoolCensus(dir);
      expect(census.held.keyMissing.get('k0')).to.equal(records);
      await closeAll();
      // With k0 back: restored in pieces of at most a segment.
      const segmentBytes = 256 * 1024;
      const { spool } = await openSpool({ segmentBytes });
      expect(spool.depth).to.equal(records);
      const segments = readdirSync(dir).filter((name) => parseSegmentName(name));
      const largest = Math.max(...segments.map((name) => statSync(path.join(dir, name)).size));
      console.log(
        `      held file of ${(heldBytes / 1048576).toFixed(1)} MiB (${records} records): largest read ${largestRead} bytes, ${wholeReads} whole-file reads; restored as ${segments.length} segments of at most ${largest} bytes`,
      );
      expect(wholeReads).to.equal(0);
      expect(largestRead).to.be.at.most(1024 * 1024);
      expect(existsSync(heldFile)).to.equal(false);
      expect(largest).to.be.at.most(segmentBytes);
    } finally {
      proto.read = read;
      proto.readFile = readFile;
    }
  });

  it('refuses an oversized checkpoint clearly (logged, not parsed): every segment is replayed, none deleted on its word', async () => {
    const { spool } = await openSpool();
    for (let index = 0; index < 5; index += 1) spool.append(capture(index));
    await spool.flush();
    await closeAll();
    const [name] = readdirSync(dir).filter((candidate) => parseSegmentName(candidate));
    // Names the segment as wholly in Postgres long ago: believed, it would be deleted at the start.
    writeFileSync(path.join(dir, 'checkpoint.json'), JSON.stringify({ v: 2, pad: 'x'.repeat(5 * 1024 * 1024), segments: { [name!]: { offset: 1e9, at: 0 } } }));
    const { spool: reopened, log } = await openSpool();
    expect(log.text()).to.contain('the spool checkpoint cannot be used');
    expect(log.text()).to.contain('more than the');
    expect(reopened.depth).to.equal(5);
    expect(existsSync(path.join(dir, name!))).to.equal(true);
  });

  it("a `held` that is a regular file: the start is refused, saying what it is; keys rotate's report carries the error instead of throwing", async () => {
    mkdirSync(dir);
    writeFileSync(path.join(dir, 'held'), 'not a directory');
    const refusal = await openSpool().then(
      () => '(opened)',
      (error: Error) => error.message,
    );
    expect(refusal).to.contain('held in the spool directory');
    expect(refusal).to.contain('is a regular file, not a directory');
    const { report, notes } = await spoolKeyReport({ TOKEN_TAP_SPOOL_DIR: dir }, 'k1');
    expect(report.errors.map((error) => error.file)).to.include('held');
    expect(notes.join('\n')).to.contain('the count is incomplete');
  });

  it('holds a real unreadable record whose capture id a planted held/ file names with other bytes; the very same bytes held already are not held twice', async () => {
    const { spool } = await openSpool();
    const captures = Array.from({ length: 6 }, (_, index) => capture(index));
    for (const item of captures) spool.append(item);
    await spool.flush();
    await closeAll();
    const [segment] = readdirSync(dir).filter((name) => parseSegmentName(name));
    const real = segmentRecords(readFileSync(path.join(dir, segment!)));
    // Planted: the first three ids with other bytes (sealed under k1), the last three as the very frames.
    const planted = [
      ...captures.slice(0, 3).map((item) => frameCapture(parseKeyRing(k1), item)),
      ...real.slice(3).map((record) => {
        const prefix = Buffer.alloc(4);
        prefix.writeUInt32BE(record.length);
        return Buffer.concat([prefix, record]);
      }),
    ];
    mkdirSync(path.join(dir, 'held'));
    writeFileSync(path.join(dir, 'held', `unreadable-${OTHER_WRITER}.seg`), Buffer.concat([SEGMENT_MAGIC, ...planted]));
    // Without k0 every real record is key_missing.
    const { spool: without } = await openSpool({ keyRing: parseKeyRing(k1) });
    const batch = (await without.read(100))!;
    expect(batch.records).to.equal(6);
    await without.commit(batch);
    const ours = [...heldRecords(dir)].filter(([name]) => name.startsWith('key-k0-'));
    expect(ours, 'one held file of this run').to.have.length(1);
    const heldIds = segmentRecords(readFileSync(path.join(dir, 'held', ours[0]![0]))).map((record) => recordCaptureId(record));
    console.log(`      6 records without their key, 3 ids planted with other bytes and 3 frames planted as they are: ${heldIds.length} held by this run`);
    expect(heldIds).to.deep.equal(captures.slice(0, 3).map((item) => item.captureId));
  });

  it("keys rotate's count covers damaged segments, files of releases before held/ and names the spool does not read, by key id", async () => {
    const ring = parseKeyRing(k0);
    const frames = (count: number) => Array.from({ length: count }, (_, index) => frameCapture(ring, capture(index)));
    const damage = Buffer.from([0xff, 0xff, 0xff, 0xff]);
    mkdirSync(path.join(dir, 'held'), { recursive: true });
    writeFileSync(path.join(dir, 'held', `damaged-${segmentName(3, OTHER_WRITER)}`), Buffer.concat([SEGMENT_MAGIC, ...frames(2), damage]));
    writeFileSync(path.join(dir, `${segmentName(4, OTHER_WRITER)}.damaged`), Buffer.concat([SEGMENT_MAGIC, ...frames(3), damage]));
    writeFileSync(path.join(dir, '99999999999999999999.seg'), Buffer.concat([SEGMENT_MAGIC, ...frames(4)]));
    writeFileSync(path.join(dir, 'notes.txt'), "an operator's");
    const { report, notes } = await spoolKeyReport({ TOKEN_TAP_SPOOL_DIR: dir }, 'k1');
    console.log(`      damaged_by_key ${JSON.stringify(report.damaged_by_key)}, unknown_files ${JSON.stringify(report.unknown_files)}`);
    expect(report.damaged_by_key).to.deep.equal({ k0: 5 });
    expect(report.unknown_files.count).to.equal(2);
    expect(report.unknown_files.records_by_key).to.deep.equal({ k0: 4 });
    expect(report.errors).to.deep.equal([]);
    expect(notes.join('\n')).to.contain('"k0"');
    expect(notes.join('\n')).to.contain('files the spool does not know');
  });

  it("runs flock(1) and cat(1) by absolute path, with `--` before the lock path and none of the sidecar's environment; holder.json's strings reach a refusal bounded and without control characters", async () => {
    // A flock and a cat earlier in PATH would be run by a bare name.
    const evil = path.join(root, 'evil');
    mkdirSync(evil);
    const ran = path.join(root, 'evil-ran');
    for (const name of ['flock', 'cat'])
      writeFileSync(path.join(evil, name), `#!/bin/sh\necho ${name} >> ${ran}\nexec /usr/bin/${name} "$@"\n`, { mode: 0o755 });
    const saved = { PATH: process.env.PATH, TOKEN_TAP_KEYS: process.env.TOKEN_TAP_KEYS };
    process.env.PATH = `${evil}:${process.env.PATH}`;
    process.env.TOKEN_TAP_KEYS = k0;
    let child: { cmdline: string[]; environ: string } | undefined;
    try {
      await openSpool();
      const pid = readdirSync('/proc')
        .filter((entry) => /^\d+$/.test(entry))
        .find((entry) => {
          try {
            const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
            return (
              Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === process.pid &&
              readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes(path.join(dir, 'lock'))
            );
          } catch {
            return false;
          }
        });
      expect(pid, "the spool's flock(1)").to.not.equal(undefined);
      child = { cmdline: readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean), environ: readFileSync(`/proc/${pid}/environ`, 'utf8') };
    } finally {
      process.env.PATH = saved.PATH;
      if (saved.TOKEN_TAP_KEYS === undefined) delete process.env.TOKEN_TAP_KEYS;
      else process.env.TOKEN_TAP_KEYS = saved.TOKEN_TAP_KEYS;
    }
    console.log(`      flock(1): ${child.cmdline.join(' ')}; environment: ${child.environ.split('\0').filter(Boolean).join(' ')}`);
    expect(path.isAbsolute(child.cmdline[0]!)).to.equal(true);
    expect(path.isAbsolute(child.cmdline.at(-1)!)).to.equal(true);
    expect(child.cmdline.at(-3)).to.equal('--');
    expect(child.cmdline.at(-2)).to.equal(path.join(dir, 'lock'));
    // Node itself hands NODE_V8_COVERAGE to every child while coverage is collected (npm test runs under c8).
    expect(child.environ.split('\0').filter((entry) => entry && !entry.startsWith('NODE_V8_COVERAGE='))).to.deep.equal(['PATH=/usr/bin:/bin']);
    expect(existsSync(ran), 'nothing from PATH ran').to.equal(false);
    await closeAll();

    // Another process holds the lock and names itself with a forged log line and 3,000 characters.
    const holder: ChildProcess = spawn('/usr/bin/flock', ['--exclusive', '--', path.join(dir, 'lock'), 'sleep', '600'], { detached: true, stdio: 'ignore' });
    try {
      await new Promise((resolve) => setTimeout(resolve, 300));
      const forged = `host\n{"level":60,"msg":"forged"}\u001b[2J${'h'.repeat(3_000)}`;
      writeFileSync(path.join(dir, 'holder.json'), JSON.stringify({ id: 'ffffffffffffffff', pid: 1, hostname: forged, since: '\r\u0007now' }));
      const refusal = await openSpool().then(
        () => '(opened)',
        (error: Error) => error.message,
      );
      console.log(`      refusal (${refusal.length} characters): ${refusal.slice(0, 160)}...`);
      expect(refusal).to.contain('in use by another live token-tap (pid 1 on host host?{"level":60');
      expect(refusal).to.not.match(/[\u0000-\u001f\u007f]/);
      expect(refusal.length).to.be.below(600);
    } finally {
      process.kill(-holder.pid!, 'SIGKILL');
    }
  });
});
