// The capture spool: each capture is appended here, sealed, before Postgres sees it, so an outage,
// a restart or a crash of the sidecar loses nothing that reached the disk.
//
// On disk: segment files `<20-digit sequence>.seg`, each "TTSPOOL1" then records
//   u32 length of the rest | u8 version (1) | u16 key id length | key id | u16 capture id length |
//   capture id | sealed JSON (AES-256-GCM, bound to the capture id)
// Appends are buffered and written + fdatasync'ed together every few ms (group commit); only
// durable records are handed to the reader. `checkpoint.json` marks how far Postgres has the
// records; segments wholly before it are deleted, and a restart replays from it. Replaying a
// record Postgres already has is harmless: captures are idempotent by capture id.
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { constants as fsConstants, mkdirSync } from 'node:fs';
import { link, open, readdir, readFile, realpath, rename, stat, unlink, writeFile, type FileHandle } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import type { Logger } from 'pino';
import type { Capture } from '../capture/types.js';
import type { IngestMetrics } from './metrics.js';
import { DecryptError, open as openSealed, seal, type FieldBinding, type KeyRing } from '../keys/key-ring.js';
import { errorCode } from '../store/errors.js';
import { waitForWake } from './abortable-wait.js';
import { ITEMS_PER_TURN, nextTurn } from './turns.js';

const SEGMENT_MAGIC = Buffer.from('TTSPOOL1', 'latin1');
const HEADER_BYTES = SEGMENT_MAGIC.length;
const RECORD_VERSION = 1;
const LENGTH_BYTES = 4;
/** Far above any capture (bodies are capped at TOKEN_TAP_MAX_BODY_BYTES); a larger length is damage. */
const MAX_RECORD_BYTES = 256 * 1024 * 1024;
const READ_CHUNK_BYTES = 1024 * 1024;
const SEGMENT_NAME = /^(\d{20})\.seg$/;
const CHECKPOINT_FILE = 'checkpoint.json';
const LOCK_FILE = 'lock';

export interface SpoolPosition {
  segment: number;
  offset: number;
}

/** Records read in order from the spool; `commit` it once Postgres has them. */
export interface SpoolBatch {
  captures: Capture[];
  /** Records consumed, including any that could not be opened. */
  records: number;
  end: SpoolPosition;
}

export interface SpoolOptions {
  dir: string;
  maxBytes: number;
  fsyncIntervalMs: number;
  keyRing: KeyRing;
  logger: Logger;
  metrics: IngestMetrics;
  /** Rotation size; by default a sixteenth of maxBytes, between 4 KiB and 8 MiB. */
  segmentBytes?: number;
}

export class SpoolLockedError extends Error {
  override name = 'SpoolLockedError';
}

interface Segment {
  seq: number;
  file: string;
  /** Bytes of whole, durable records (plus the header); reading stops here. */
  size: number;
  /** Bytes the file takes on disk (a damaged tail counts until the segment is deleted). */
  diskBytes: number;
}

interface Buffered {
  frame: Buffer;
  idp: string;
  captureId: string;
  /** Told whether the record reached the disk (appendDurable). */
  settled?: (durable: boolean) => void;
}

function binding(captureId: string): FieldBinding {
  return { idp: 'spool', subject: captureId, field: 'capture' };
}

/**
 * A capture sealed as a spool record holds it: its JSON (encodeCapture) under the ring's active key,
 * bound to its capture id. The capture writer's quarantine keeps captures the same way.
 */
export function sealCapture(ring: KeyRing, capture: Capture): { keyId: string; sealed: Buffer } {
  return { keyId: ring.activeKeyId, sealed: seal(ring, encodeCapture(capture), binding(capture.captureId)) };
}

/** The capture sealCapture sealed; throws DecryptError (key missing or other material) or a parse error. */
export function openSealedCapture(ring: KeyRing, keyId: string, sealed: Buffer, captureId: string): Capture {
  return decodeCapture(openSealed(ring, keyId, sealed, binding(captureId)));
}

function segmentFile(dir: string, seq: number): string {
  return path.join(dir, `${String(seq).padStart(20, '0')}.seg`);
}

function errorFields(error: unknown): { message: string; code?: string } {
  const code = errorCode(error);
  return { message: (error as Error)?.message ?? String(error), ...(code ? { code } : {}) };
}

/**
 * A capture as JSON, Dates as ISO strings. Where the Dates were is recorded alongside, so any Date
 * field (today observedAt; others as Capture grows) comes back as a Date and no string is mistaken
 * for one.
 */
export function encodeCapture(capture: Capture): string {
  const dates: string[][] = [];
  collectDates(capture, [], dates);
  return `{"v":1,"dates":${JSON.stringify(dates)},"capture":${JSON.stringify(capture)}}`;
}

/** The paths of the Dates in `value`, as JSON.stringify will reach them (undefined fields are left out). */
function collectDates(value: unknown, at: string[], out: string[][]): void {
  if (value instanceof Date) {
    if (!Number.isNaN(value.getTime())) out.push([...at]);
    return;
  }
  // Anything with its own toJSON (a Buffer, say) is not walked: its JSON is not its fields.
  if (value === null || typeof value !== 'object' || typeof (value as { toJSON?: unknown }).toJSON === 'function') return;
  const entries: Array<[string, unknown]> = Array.isArray(value) ? value.map((item, index) => [String(index), item]) : Object.entries(value);
  for (const [key, item] of entries) {
    if (item === null || typeof item !== 'object') continue;
    at.push(key);
    collectDates(item, at, out);
    at.pop();
  }
}

export function decodeCapture(text: string): Capture {
  const envelope = JSON.parse(text) as { v: number; dates: string[][]; capture: Record<string, unknown> };
  if (envelope.v !== 1 || !Array.isArray(envelope.dates) || typeof envelope.capture !== 'object') throw new Error('not a version 1 spool record');
  for (const at of envelope.dates) {
    let holder: Record<string, unknown> = envelope.capture;
    for (const key of at.slice(0, -1)) holder = holder[key] as Record<string, unknown>;
    const last = at.at(-1)!;
    if (Object.hasOwn(holder, last) && typeof holder[last] === 'string') holder[last] = new Date(holder[last] as string);
  }
  return envelope.capture as unknown as Capture;
}

/**
 * Frames in `bytes` (which starts at a record boundary): whole records, and where parsing stopped.
 * `damaged`: a length no record can have, so nothing after it can be framed; `torn`: the bytes end
 * inside a record (a write cut short).
 */
function scanFrames(bytes: Buffer): { records: number[]; end: number; damaged: boolean; torn: boolean } {
  const records: number[] = [];
  let position = 0;
  while (position + LENGTH_BYTES <= bytes.length) {
    const length = bytes.readUInt32BE(position);
    if (length < 5 || length > MAX_RECORD_BYTES) return { records, end: position, damaged: true, torn: false };
    if (position + LENGTH_BYTES + length > bytes.length) break;
    records.push(position);
    position += LENGTH_BYTES + length;
  }
  return { records, end: position, damaged: false, torn: position < bytes.length };
}

export class CaptureSpool {
  private readonly segments: Segment[] = [];
  private appendHandle: FileHandle | undefined;
  private activeSeq: number | undefined;
  private readHandle: { seq: number; handle: FileHandle } | undefined;
  private buffered: Buffered[] = [];
  private bufferedBytes = 0;
  /** Bytes of the group being written now: neither buffered nor on disk yet, but they count against the cap. */
  private writingBytes = 0;
  private diskBytes = 0;
  /** Durable records Postgres does not have yet (including the batch being written). */
  private records = 0;
  /** Durable records not yet handed out by read(). */
  private unread = 0;
  private cursor: SpoolPosition;
  private committed: SpoolPosition;
  private timer: NodeJS.Timeout | undefined;
  private syncing: Promise<void> | undefined;
  private closed = false;
  private readonly recordWaiters = new Set<() => void>();
  private readonly emptyWaiters = new Set<() => void>();
  private readonly segmentBytes: number;

  private constructor(
    private readonly options: SpoolOptions,
    start: SpoolPosition,
    private readonly lock: SpoolLock,
  ) {
    this.cursor = { ...start };
    this.committed = { ...start };
    this.segmentBytes = options.segmentBytes ?? Math.min(8 * 1024 * 1024, Math.max(4 * 1024, Math.floor(options.maxBytes / 16)));
  }

  /** Opens (creating) the spool directory, takes its lock and finds what is waiting for Postgres. */
  static async open(options: SpoolOptions): Promise<CaptureSpool> {
    try {
      mkdirSync(options.dir, { recursive: true, mode: 0o700 });
    } catch (error) {
      throw new Error(`cannot create the spool directory ${options.dir} (TOKEN_TAP_SPOOL_DIR): ${errorFields(error).message}`, { cause: error });
    }
    const lock = await takeLock(options.dir);
    const checkpoint = await readCheckpoint(options.dir);
    const spool = new CaptureSpool(options, checkpoint ?? { segment: 0, offset: HEADER_BYTES }, lock);
    try {
      await spool.load(checkpoint);
    } catch (error) {
      await lock.release();
      throw error;
    }
    return spool;
  }

  /** Captures not yet in Postgres: on disk, or waiting for the next fsync. */
  get depth(): number {
    return this.records + this.buffered.length;
  }

  get bytes(): number {
    return this.diskBytes + this.writingBytes + this.bufferedBytes;
  }

  get maxBytes(): number {
    return this.options.maxBytes;
  }

  get dir(): string {
    return this.options.dir;
  }

  /**
   * Queues a capture for the next group fsync. False when it was dropped (spool full or closed,
   * or it cannot be sealed); the drop is counted and logged here, and the login is never affected.
   */
  append(capture: Capture, settled?: (durable: boolean) => void): boolean {
    if (this.closed) return this.drop(capture, 'shutting_down');
    let frame: Buffer;
    try {
      frame = this.frame(capture);
    } catch (error) {
      this.options.logger.error({ idp: capture.idp, captureId: capture.captureId, err: { name: (error as Error).name } }, 'capture cannot be sealed into the spool');
      return this.drop(capture, 'spool_encode_failed');
    }
    // Room is kept for two segment headers: the group being written and the next may each open a segment.
    if (this.bytes + frame.length + 2 * HEADER_BYTES > this.options.maxBytes) return this.drop(capture, 'spool_full');
    this.buffered.push({ frame, idp: capture.idp, captureId: capture.captureId, ...(settled ? { settled } : {}) });
    this.bufferedBytes += frame.length;
    this.report();
    this.scheduleSync();
    return true;
  }

  /** Whether a record of about `bytes` would be taken now (not closed, room under the cap). */
  hasRoomFor(bytes: number): boolean {
    return !this.closed && this.bytes + bytes + 2 * HEADER_BYTES <= this.options.maxBytes;
  }

  /**
   * Appends and resolves once the record is fsynced (true), or once it is known lost (false:
   * dropped, or its write failed). For answers that exist nowhere else, such as an IdP's rotated
   * refresh token: the caller goes on only when it is durable.
   */
  async appendDurable(capture: Capture): Promise<boolean> {
    return this.appendAllDurable([capture]);
  }

  /** appendDurable for several, in one group commit: true only when every one reached the disk. */
  async appendAllDurable(captures: readonly Capture[]): Promise<boolean> {
    const settled = captures.map((capture) => new Promise<boolean>((resolve) => {
      if (!this.append(capture, resolve)) resolve(false);
    }));
    await this.flush();
    return (await Promise.all(settled)).every(Boolean);
  }


  /** Writes and fsyncs what is buffered now, without waiting for the group-commit timer. */
  async flush(): Promise<void> {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    while (this.syncing || this.buffered.length > 0) {
      if (!this.syncing) this.syncing = this.sync();
      await this.syncing;
    }
  }

  /**
   * Up to `maxRecords` durable records after the last read, in append order; undefined when there
   * are none. Only one batch is out at a time: the caller commits (or retries) it before reading on.
   */
  async read(maxRecords: number): Promise<SpoolBatch | undefined> {
    if (this.unread === 0) return undefined;
    const captures: Capture[] = [];
    let records = 0;
    let cursor = { ...this.cursor };
    while (records < maxRecords) {
      const segment = this.segments.find((candidate) => candidate.seq >= cursor.segment);
      if (!segment) break;
      if (segment.seq !== cursor.segment) cursor = { segment: segment.seq, offset: HEADER_BYTES };
      if (cursor.offset >= segment.size) {
        const later = this.segments.some((candidate) => candidate.seq > segment.seq);
        if (!later) break;
        cursor = { segment: segment.seq + 1, offset: HEADER_BYTES };
        continue;
      }
      const base = cursor.offset;
      const chunk = await this.readChunk(segment, base);
      const { records: starts, end } = scanFrames(chunk);
      for (const start of starts) {
        if (records >= maxRecords) break;
        if (records > 0 && records % ITEMS_PER_TURN === 0) await nextTurn();
        const length = chunk.readUInt32BE(start);
        const capture = this.openRecord(chunk.subarray(start + LENGTH_BYTES, start + LENGTH_BYTES + length), segment.seq, base + start);
        if (capture) captures.push(capture);
        records += 1;
        cursor = { segment: segment.seq, offset: base + start + LENGTH_BYTES + length };
      }
      if (end === 0) break;
    }
    if (records === 0) return undefined;
    this.cursor = cursor;
    this.unread -= records;
    return { captures, records, end: cursor };
  }

  /** Resolves once read() has something, or when `signal` aborts. */
  async waitForRecords(signal: AbortSignal): Promise<void> {
    if (this.unread > 0) return;
    await waitForWake(this.recordWaiters, signal);
  }

  /** Resolves true once every capture appended so far is in Postgres, false after `timeoutMs`. */
  async waitUntilEmpty(timeoutMs: number): Promise<boolean> {
    if (this.depth === 0) return true;
    return new Promise<boolean>((resolve) => {
      const done = (empty: boolean) => {
        clearTimeout(timer);
        this.emptyWaiters.delete(onEmpty);
        resolve(empty);
      };
      const onEmpty = () => done(true);
      const timer = setTimeout(() => done(false), timeoutMs);
      this.emptyWaiters.add(onEmpty);
    });
  }

  /** Postgres has the batch: move the checkpoint past it and delete what it no longer needs. */
  async commit(batch: SpoolBatch): Promise<void> {
    this.committed = batch.end;
    this.records -= batch.records;
    await this.writeCheckpoint(batch.end);
    for (const segment of [...this.segments]) {
      const active = this.isActive(segment);
      const behind = segment.seq < batch.end.segment || (segment.seq === batch.end.segment && batch.end.offset >= segment.size);
      if (behind && !active) await this.removeSegment(segment);
    }
    // A fully written active segment is retired once it is big enough to matter, so committed
    // bytes do not count against the cap for long.
    const activeSegment = this.segments.find((segment) => this.isActive(segment));
    if (
      activeSegment &&
      !this.syncing &&
      this.buffered.length === 0 &&
      batch.end.segment === activeSegment.seq &&
      batch.end.offset >= activeSegment.size &&
      activeSegment.size >= this.segmentBytes / 4
    ) {
      await this.closeAppendHandle();
      await this.removeSegment(activeSegment);
    }
    this.report();
  }

  /** Writes what is buffered, closes the files and releases the directory. What remains is replayed at the next start. */
  async close(): Promise<void> {
    if (this.closed) return;
    await this.flush();
    this.closed = true;
    for (const wake of [...this.recordWaiters]) wake();
    await this.closeAppendHandle();
    // Everything in Postgres: leave an empty directory behind, not committed segments.
    if (this.records === 0) for (const segment of [...this.segments]) await this.removeSegment(segment);
    await this.readHandle?.handle.close().catch(() => undefined);
    this.readHandle = undefined;
    await this.lock.release();
  }

  private frame(capture: Capture): Buffer {
    const { keyId: activeKeyId, sealed } = sealCapture(this.options.keyRing, capture);
    const keyId = Buffer.from(activeKeyId, 'latin1');
    const captureId = Buffer.from(capture.captureId, 'utf8');
    const head = Buffer.alloc(LENGTH_BYTES + 1 + 2 + keyId.length + 2 + captureId.length);
    let at = head.writeUInt32BE(head.length - LENGTH_BYTES + sealed.length, 0);
    at = head.writeUInt8(RECORD_VERSION, at);
    at = head.writeUInt16BE(keyId.length, at);
    at += keyId.copy(head, at);
    at = head.writeUInt16BE(captureId.length, at);
    captureId.copy(head, at);
    return Buffer.concat([head, sealed]);
  }

  /** The capture in one record, or undefined (counted and logged) when it cannot be opened. */
  private openRecord(record: Buffer, seq: number, offset: number): Capture | undefined {
    try {
      if (record.readUInt8(0) !== RECORD_VERSION) throw new Error(`record version ${record.readUInt8(0)} is unknown`);
      const keyIdLength = record.readUInt16BE(1);
      const keyId = record.toString('latin1', 3, 3 + keyIdLength);
      const idAt = 3 + keyIdLength;
      const captureIdLength = record.readUInt16BE(idAt);
      const captureId = record.toString('utf8', idAt + 2, idAt + 2 + captureIdLength);
      const sealed = record.subarray(idAt + 2 + captureIdLength);
      return openSealedCapture(this.options.keyRing, keyId, sealed, captureId);
    } catch (error) {
      // Only the error's name for anything but a failed decryption: a parse error's message can
      // quote the decrypted text, tokens included.
      const err = error instanceof DecryptError ? { name: error.name, message: error.message } : { name: (error as Error)?.name };
      this.options.metrics.capturesDropped.inc({ reason: 'spool_unreadable' });
      this.options.logger.error({ segment: seq, offset, err }, 'spool record cannot be opened (its key is not in TOKEN_TAP_KEYS, or it is damaged); skipped');
      return undefined;
    }
  }

  private drop(capture: Capture, reason: string): false {
    this.options.metrics.capturesDropped.inc({ reason });
    this.options.logger.error({ idp: capture.idp, captureId: capture.captureId, reason, spoolBytes: this.bytes, spoolMaxBytes: this.options.maxBytes }, 'capture dropped');
    return false;
  }

  private scheduleSync(): void {
    if (this.timer || this.syncing) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.syncing = this.sync();
    }, this.options.fsyncIntervalMs);
  }

  /** Group commit: everything buffered goes out in one write and one fdatasync, again while more arrives. */
  private async sync(): Promise<void> {
    try {
      while (this.buffered.length > 0) {
        const group = this.buffered;
        const bytes = this.bufferedBytes;
        this.buffered = [];
        this.bufferedBytes = 0;
        this.writingBytes = bytes;
        const endTimer = this.options.metrics.spoolFsyncSeconds.startTimer();
        let segment: Segment | undefined;
        try {
          segment = await this.writableSegment(bytes);
          const { bytesWritten } = await this.appendHandle!.write(Buffer.concat(group.map((entry) => entry.frame), bytes));
          if (bytesWritten !== bytes) throw Object.assign(new Error(`short write: ${bytesWritten} of ${bytes} bytes`), { code: 'ESHORTWRITE' });
          await this.appendHandle!.datasync();
        } catch (error) {
          this.writingBytes = 0;
          await this.abandonActive(segment);
          for (const entry of group) {
            entry.settled?.(false);
            this.options.metrics.capturesDropped.inc({ reason: 'spool_write_failed' });
            this.options.logger.error({ idp: entry.idp, captureId: entry.captureId, reason: 'spool_write_failed', err: errorFields(error) }, 'capture dropped');
          }
          this.report();
          continue;
        }
        endTimer();
        this.writingBytes = 0;
        segment.size += bytes;
        segment.diskBytes += bytes;
        this.diskBytes += bytes;
        this.records += group.length;
        this.unread += group.length;
        this.options.metrics.spoolAppended.inc(group.length);
        for (const entry of group) entry.settled?.(true);
        this.report();
        for (const wake of [...this.recordWaiters]) wake();
      }
    } finally {
      this.syncing = undefined;
    }
  }

  /** The active segment, rotated when `bytes` would take it past the segment size. */
  private async writableSegment(bytes: number): Promise<Segment> {
    let active = this.segments.find((segment) => this.isActive(segment));
    if (active && active.size > HEADER_BYTES && active.size + bytes > this.segmentBytes) {
      await this.closeAppendHandle();
      if (this.committed.segment === active.seq && this.committed.offset >= active.size) await this.removeSegment(active);
      active = undefined;
    }
    if (active) return active;
    // Above the checkpoint's segment even when that one is gone, so the checkpoint never covers new records.
    const seq = Math.max(this.segments.at(-1)?.seq ?? 0, this.committed.segment) + 1;
    const file = segmentFile(this.options.dir, seq);
    const handle = await open(file, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_APPEND, 0o600);
    try {
      await handle.write(SEGMENT_MAGIC);
      await handle.datasync();
      await syncDirectory(this.options.dir);
    } catch (error) {
      await handle.close().catch(() => undefined);
      await unlink(file).catch(() => undefined);
      throw error;
    }
    this.appendHandle = handle;
    const segment: Segment = { seq, file, size: HEADER_BYTES, diskBytes: HEADER_BYTES };
    this.segments.push(segment);
    this.activeSeq = seq;
    this.diskBytes += HEADER_BYTES;
    return segment;
  }

  private isActive(segment: Segment): boolean {
    return this.appendHandle !== undefined && segment.seq === this.activeSeq;
  }

  private async closeAppendHandle(): Promise<void> {
    const handle = this.appendHandle;
    this.appendHandle = undefined;
    this.activeSeq = undefined;
    await handle?.close().catch(() => undefined);
  }

  /** After a failed write: cut the segment back to its last whole record and stop appending to it. */
  private async abandonActive(segment: Segment | undefined): Promise<void> {
    if (segment && this.appendHandle) await this.appendHandle.truncate(segment.size).catch(() => undefined);
    await this.closeAppendHandle();
    if (segment) {
      const actual = await stat(segment.file).then((info) => info.size).catch(() => segment.diskBytes);
      this.diskBytes += actual - segment.diskBytes;
      segment.diskBytes = actual;
    }
  }

  private async removeSegment(segment: Segment): Promise<void> {
    const index = this.segments.indexOf(segment);
    if (index < 0) return;
    this.segments.splice(index, 1);
    this.diskBytes -= segment.diskBytes;
    if (this.readHandle?.seq === segment.seq) {
      await this.readHandle.handle.close().catch(() => undefined);
      this.readHandle = undefined;
    }
    await unlink(segment.file).catch((error: unknown) => {
      this.options.logger.warn({ segment: segment.seq, err: errorFields(error) }, 'cannot delete a spool segment Postgres already has');
    });
  }

  private async readChunk(segment: Segment, offset: number): Promise<Buffer> {
    if (this.readHandle?.seq !== segment.seq) {
      await this.readHandle?.handle.close().catch(() => undefined);
      this.readHandle = { seq: segment.seq, handle: await open(segment.file, 'r') };
    }
    const handle = this.readHandle.handle;
    let length = Math.min(segment.size - offset, READ_CHUNK_BYTES);
    let chunk = Buffer.alloc(length);
    await handle.read(chunk, 0, length, offset);
    // A record larger than one chunk: read exactly that record.
    const first = chunk.length >= LENGTH_BYTES ? chunk.readUInt32BE(0) + LENGTH_BYTES : 0;
    if (first > length && offset + first <= segment.size) {
      length = first;
      chunk = Buffer.alloc(length);
      await handle.read(chunk, 0, length, offset);
    }
    return chunk;
  }

  private async writeCheckpoint(position: SpoolPosition): Promise<void> {
    // Not fsynced: a checkpoint lost in a crash only means replaying records Postgres ignores.
    const file = path.join(this.options.dir, CHECKPOINT_FILE);
    const temporary = `${file}.${randomUUID()}.tmp`;
    try {
      await writeFile(temporary, JSON.stringify(position), { mode: 0o600 });
      await rename(temporary, file);
    } catch (error) {
      await unlink(temporary).catch(() => undefined);
      this.options.logger.warn({ err: errorFields(error) }, 'cannot write the spool checkpoint; a restart will replay captures Postgres already has');
    }
  }

  /** Finds the segments on disk, drops those before the checkpoint, and counts the records after it. */
  private async load(checkpoint: SpoolPosition | undefined): Promise<void> {
    const names = (await readdir(this.options.dir)).filter((name) => SEGMENT_NAME.test(name)).sort();
    for (const name of names) {
      const seq = Number.parseInt(SEGMENT_NAME.exec(name)![1]!, 10);
      const file = path.join(this.options.dir, name);
      const bytes = await readFile(file);
      if (checkpoint && seq < checkpoint.segment) {
        await unlink(file).catch(() => undefined);
        continue;
      }
      if (bytes.length <= HEADER_BYTES) {
        // Created, then the process died before its first record was durable.
        await unlink(file).catch(() => undefined);
        continue;
      }
      if (!bytes.subarray(0, HEADER_BYTES).equals(SEGMENT_MAGIC)) {
        await rename(file, `${file}.damaged`).catch(() => undefined);
        this.options.metrics.capturesDropped.inc({ reason: 'spool_unreadable' });
        this.options.logger.error({ segment: seq }, 'spool segment does not start with the spool header; set aside as .damaged');
        continue;
      }
      const { records, end, damaged, torn } = scanFrames(bytes.subarray(HEADER_BYTES));
      if (damaged && !(checkpoint && seq === checkpoint.segment && checkpoint.offset >= bytes.length)) {
        // How many records the rest held is unknown (their lengths are what is damaged): one per segment.
        this.options.metrics.capturesDropped.inc({ reason: 'spool_damaged' });
        this.options.logger.error(
          { segment: seq, validBytes: HEADER_BYTES + end, fileBytes: bytes.length, readableRecords: records.length },
          'spool segment is damaged (a record length no record can have); the records after the damage cannot be read and are dropped',
        );
      }
      if (torn) {
        this.options.logger.warn({ segment: seq, validBytes: HEADER_BYTES + end, fileBytes: bytes.length }, 'spool segment ends in a partial record (a write cut short by a crash); it is ignored');
      }
      let waiting = records.length;
      if (checkpoint && seq === checkpoint.segment) {
        const after = records.filter((start) => HEADER_BYTES + start >= checkpoint.offset).length;
        const aligned = checkpoint.offset === HEADER_BYTES + end || records.some((start) => HEADER_BYTES + start === checkpoint.offset);
        if (aligned) waiting = after;
        else this.cursor = this.committed = { segment: seq, offset: HEADER_BYTES };
      }
      this.segments.push({ seq, file, size: HEADER_BYTES + end, diskBytes: bytes.length });
      this.diskBytes += bytes.length;
      this.records += waiting;
    }
    this.unread = this.records;
    if (this.segments.length > 0 && this.cursor.segment < this.segments[0]!.seq) this.cursor = { segment: this.segments[0]!.seq, offset: HEADER_BYTES };
    // The spool is read from the checkpoint on; damaged tails past `size` are never read.
    if (this.records > 0) {
      this.options.logger.info({ captures: this.records, bytes: this.diskBytes, segments: this.segments.length }, 'spool holds captures from before this start; replaying them to Postgres');
    }
    this.report();
  }

  private report(): void {
    this.options.metrics.queueDepth.set(this.depth);
    this.options.metrics.spoolBytes.set(this.bytes);
    if (this.depth === 0) for (const wake of [...this.emptyWaiters]) wake();
  }
}

async function syncDirectory(dir: string): Promise<void> {
  // A new file's name is durable only once its directory is fsynced.
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

async function readCheckpoint(dir: string): Promise<SpoolPosition | undefined> {
  try {
    const parsed = JSON.parse(await readFile(path.join(dir, CHECKPOINT_FILE), 'utf8')) as Partial<SpoolPosition>;
    if (Number.isSafeInteger(parsed.segment) && Number.isSafeInteger(parsed.offset) && parsed.offset! >= HEADER_BYTES) {
      return { segment: parsed.segment!, offset: parsed.offset! };
    }
  } catch {
    // Missing or unreadable: replay every segment; Postgres skips what it has.
  }
  return undefined;
}

const lockedInThisProcess = new Set<string>();

/** The directory's lock; `release` lets the next sidecar take it. */
interface SpoolLock {
  release(): Promise<void>;
}

/**
 * One sidecar per spool directory: two writers would interleave their segments. The lock is a
 * Linux abstract-namespace Unix socket named after the directory (its real path, device and inode):
 * bind() is atomic, so of two sidecars starting together exactly one gets it, and the kernel frees
 * it when the holder dies, however it dies and whatever its PID becomes, even before the dead
 * process is reaped. Abstract sockets are per network namespace: containers of one pod share it
 * (and are kept apart), while two pods never share a ReadWriteOnce volume. The `lock` file only
 * names the holder's PID for people; it is never the lock. Elsewhere than Linux, a PID file is all
 * there is (kill(pid, 0) cannot tell a reused PID from the holder).
 *
 * Abstract sockets have no permissions, so the name also carries a random secret kept in the
 * directory (0700, its file 0600): a process that cannot read the spool cannot guess the name and
 * squat it to keep the sidecar from starting.
 */
async function takeLock(dir: string): Promise<SpoolLock> {
  let real: string;
  let identity: string;
  try {
    real = await realpath(dir);
    const info = await stat(real);
    identity = `${real}\0${info.dev}:${info.ino}`;
  } catch (error) {
    throw new Error(`cannot lock the spool directory ${dir} (TOKEN_TAP_SPOOL_DIR): ${errorFields(error).message}`, { cause: error });
  }
  if (lockedInThisProcess.has(identity)) throw new SpoolLockedError(`the spool directory ${dir} is in use by another sidecar in this process: give each its own TOKEN_TAP_SPOOL_DIR`);
  const file = path.join(dir, LOCK_FILE);
  const release = process.platform === 'linux' ? await takeSocketLock(dir, `${identity}\0${await lockSecret(dir)}`) : await takeFileLock(dir, file);
  lockedInThisProcess.add(identity);
  // Information only: which process holds the directory.
  await writeFile(file, `${process.pid}\n`, { mode: 0o600 }).catch(() => undefined);
  let released = false;
  return {
    async release() {
      if (released) return;
      released = true;
      lockedInThisProcess.delete(identity);
      const named = await readFile(file, 'utf8').catch(() => '');
      if (named.trim() === String(process.pid)) await unlink(file).catch(() => undefined);
      await release();
    },
  };
}

const LOCK_SECRET_FILE = 'lock-secret';

/** The directory's lock secret, made once: written aside, then linked in (atomic), so two starters agree. */
async function lockSecret(dir: string): Promise<string> {
  const file = path.join(dir, LOCK_SECRET_FILE);
  const existing = await readFile(file, 'utf8').catch(() => undefined);
  if (existing) return existing.trim();
  const draft = path.join(dir, `${LOCK_SECRET_FILE}.${process.pid}.${randomUUID()}`);
  await writeFile(draft, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
  try {
    await link(draft, file).catch((error: NodeJS.ErrnoException) => {
      if (error.code !== 'EEXIST') throw error;
    });
  } finally {
    await unlink(draft).catch(() => undefined);
  }
  return (await readFile(file, 'utf8')).trim();
}

const HOLDER_ANSWER_MS = 1_000;

async function takeSocketLock(dir: string, identity: string): Promise<() => Promise<void>> {
  const name = `\0token-tap-spool:${createHash('sha256').update(identity).digest('hex').slice(0, 40)}`;
  // The holder answers its PID to whoever connects, so a refusal can name it.
  const server = net.createServer((socket) => socket.on('error', () => undefined).end(`${process.pid}\n`));
  for (let attempt = 1; ; attempt += 1) {
    const bound = await new Promise<NodeJS.ErrnoException | undefined>((resolve) => {
      server.once('error', resolve);
      server.listen({ path: name, exclusive: true }, () => {
        server.off('error', resolve);
        resolve(undefined);
      });
    });
    if (!bound) break;
    if (bound.code !== 'EADDRINUSE') throw new Error(`cannot lock the spool directory ${dir} (TOKEN_TAP_SPOOL_DIR): ${errorFields(bound).message}`, { cause: bound });
    const holder = await askHolder(name);
    // The holder died between our bind and our connect: its name is free now, try once more.
    if (holder === 'gone' && attempt < 3) continue;
    const who = typeof holder === 'number' ? `pid ${holder}` : 'pid unknown';
    throw new SpoolLockedError(`the spool directory ${dir} is in use by another live token-tap (${who}): give each sidecar its own TOKEN_TAP_SPOOL_DIR`);
  }
  // The socket holds the lock; it must not hold the process open.
  server.unref();
  return () => new Promise<void>((resolve) => server.close(() => resolve()));
}

/** The PID the lock's holder answers; 'gone' when nobody holds the name any more. */
async function askHolder(name: string): Promise<number | 'gone' | undefined> {
  return new Promise((resolve) => {
    let answer = '';
    const socket = net.connect({ path: name });
    const done = (value: number | 'gone' | undefined) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(value);
    };
    const timer = setTimeout(() => done(undefined), HOLDER_ANSWER_MS);
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => (answer += chunk));
    socket.on('end', () => {
      const pid = Number.parseInt(answer, 10);
      done(Number.isSafeInteger(pid) && pid > 0 ? pid : undefined);
    });
    socket.on('error', (error: NodeJS.ErrnoException) => done(error.code === 'ECONNREFUSED' || error.code === 'ENOENT' ? 'gone' : undefined));
  });
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as { code?: string }).code === 'EPERM';
  }
}

async function takeFileLock(dir: string, file: string): Promise<() => Promise<void>> {
  const release = () => unlink(file).catch(() => undefined);
  try {
    await writeFile(file, `${process.pid}\n`, { flag: 'wx', mode: 0o600 });
    return release;
  } catch (error) {
    if ((error as { code?: string }).code !== 'EEXIST') {
      throw new Error(`cannot lock the spool directory ${dir} (TOKEN_TAP_SPOOL_DIR): ${errorFields(error).message}`, { cause: error });
    }
  }
  const holder = Number.parseInt(await readFile(file, 'utf8').catch(() => ''), 10);
  if (Number.isSafeInteger(holder) && holder > 0 && holder !== process.pid && processAlive(holder)) {
    throw new SpoolLockedError(`the spool directory ${dir} is in use by another live token-tap (pid ${holder}): give each sidecar its own TOKEN_TAP_SPOOL_DIR`);
  }
  // Left by a process that is gone (a crash or SIGKILL): take it over.
  await writeFile(file, `${process.pid}\n`, { mode: 0o600 });
  return release;
}
