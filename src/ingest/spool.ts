// The capture spool: each capture is appended here, sealed, before Postgres sees it, so an outage,
// a restart or a crash of the sidecar loses nothing that reached the disk.
//
// Appends are buffered and written + fdatasync'ed together every few ms (group commit); only
// durable records are handed to the reader. Once Postgres has a batch, the checkpoint names how far;
// a segment wholly in Postgres is kept for a grace window (TOKEN_TAP_SPOOL_GRACE_SECONDS), so a
// Postgres that loses recent commits (an async standby promoted) gets them again from a restart;
// it counts against the size cap (a full spool deletes the oldest such segments first). Nothing
// unread is deleted: what cannot be read goes into held/. Replaying a record Postgres already has
// is harmless: captures are idempotent by capture id. A spool whose directory is no longer its own
// (its lock taken by another process, a segment deleted under it) stops: it takes no capture and
// commits, deletes and checkpoints nothing; whenStopped tells the sidecar, which exits. Around
// this file: spool-codec.ts (records), spool-lock.ts, spool-segments.ts (names, checkpoint, files),
// spool-load.ts (a start), spool-restore.ts, spool-read.ts, spool-fresh.ts (this run's records
// read from memory), spool-held.ts, spool-census.ts, spool-scan.ts, spool-fs.ts.
import { mkdirSync } from 'node:fs';
import type { Logger } from 'pino';
import type { Capture } from '../capture/types.js';
import type { IngestMetrics } from './metrics.js';
import type { KeyRing } from '../keys/key-ring.js';
import { waitForWake } from '../lib/abortable-wait.js';
import { HEADER_BYTES, frameCapture } from './spool-codec.js';
import { HeldLedger } from './spool-census.js';
import { readBatch } from './spool-read.js';
import { FreshRecords, MAX_FRESH_BYTES, MAX_FRESH_RECORDS } from './spool-fresh.js';
import { loadSpool } from './spool-load.js';
import { loggedLockEvents, takeSpoolLock, type SpoolLock } from './spool-lock.js';
import { readCheckpoint, SegmentFiles, SegmentGoneError, type Segment, type SpoolPosition } from './spool-segments.js';
import { errorFields, errorName } from '../lib/error-description.js';

export { SpoolLockedError } from './spool-fs.js';
export type { SpoolPosition } from './spool-segments.js';
/** TOKEN_TAP_SPOOL_GRACE_SECONDS's default (src/config/sidecar.ts), for callers that do not say. */
const DEFAULT_GRACE_MS = 60_000;

/** Records read in order from the spool; `commit` it once Postgres has them. */
export interface SpoolBatch {
  captures: Capture[];
  /** Records consumed, including any that could not be opened (moved aside into held/). */
  records: number;
  start: SpoolPosition;
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
  /** How long a segment wholly in Postgres is kept (default 60 s; 0 deletes it at once). */
  graceMs?: number;
}

interface Buffered {
  frame: Buffer;
  capture: Capture;
  /** Told whether the record reached the disk (appendDurable). */
  settled?: (durable: boolean) => void;
}

export class CaptureSpool {
  private readonly files: SegmentFiles;
  private buffered: Buffered[] = [];
  private bufferedBytes = 0;
  /** Bytes of the group being written now: neither buffered nor on disk yet, but they count against the cap. */
  private writingBytes = 0;
  private writingRecords = 0;
  /** Durable records Postgres does not have yet (including the batch being written). */
  private records = 0;
  /** Durable records not yet handed out by read(). */
  private unread = 0;
  private cursor: SpoolPosition = { segment: '', offset: 0 };
  private readonly held: HeldLedger;
  private readonly fresh: FreshRecords; // this run's durable records not yet read, in memory
  private timer: NodeJS.Timeout | undefined;
  private syncing: Promise<void> | undefined;
  private closed = false;
  /** Why the spool stopped (its directory is no longer its own); undefined while it runs. */
  private stoppedFor: string | undefined;
  private readonly stopWaiters = new Set<(reason: string) => void>();
  private readonly recordWaiters = new Set<() => void>();
  private readonly emptyWaiters = new Set<() => void>();
  private readonly segmentBytes: number;
  private readonly graceMs: number;

  private constructor(
    private readonly options: SpoolOptions,
    private readonly lock: SpoolLock,
  ) {
    this.segmentBytes = options.segmentBytes ?? Math.min(8 * 1024 * 1024, Math.max(4 * 1024, Math.floor(options.maxBytes / 16)));
    this.fresh = new FreshRecords(MAX_FRESH_RECORDS, Math.min(MAX_FRESH_BYTES, Math.floor(options.maxBytes / 16)));
    this.graceMs = options.graceMs ?? DEFAULT_GRACE_MS;
    const readPast = (segment: Segment) => segment.name < this.cursor.segment || (segment.name === this.cursor.segment && this.cursor.offset >= segment.size);
    // Before a deletion or a checkpoint: waits out a re-take of the lock; false once it is gone.
    const stillOurs = async () => (await lock.whenHeld()) && (await lock.stillOurs());
    this.files = new SegmentFiles(options.dir, lock.writer, this.graceMs, options.logger, readPast, () => this.report(), stillOurs);
    this.held = new HeldLedger(options.dir, lock.writer.id, options.metrics, options.logger);
  }

  /** Opens (creating) the spool directory, takes its lock and finds what is waiting for Postgres. */
  static async open(options: SpoolOptions): Promise<CaptureSpool> {
    try {
      mkdirSync(options.dir, { recursive: true, mode: 0o700 });
    } catch (error) {
      throw new Error(`cannot create the spool directory ${options.dir} (TOKEN_TAP_SPOOL_DIR): ${errorFields(error).message}`, { cause: error });
    }
    let spool: CaptureSpool | undefined, goneEarly: string | undefined;
    const lock = await takeSpoolLock(options.dir, loggedLockEvents(options.logger, options.dir, (problem) => (spool ? spool.stop(problem) : (goneEarly = problem))));
    spool = new CaptureSpool(options, lock);
    if (goneEarly !== undefined) spool.stop(goneEarly);
    try {
      await spool.load();
    } catch (error) {
      await lock.release();
      throw error;
    }
    return spool;
  }

  /** Captures not yet in Postgres: on disk, being fsynced (the pump reads 0 as "none on its way"), or waiting. */
  get depth(): number {
    return this.records + this.writingRecords + this.buffered.length;
  }

  get bytes(): number {
    return this.files.diskBytes + this.writingBytes + this.bufferedBytes;
  }

  get maxBytes(): number {
    return this.options.maxBytes;
  }

  get dir(): string {
    return this.options.dir;
  }

  /** Of `bytes`, segments already in Postgres kept for the grace window: a full spool gives them up first. */
  get graceBytes(): number {
    return this.files.graceBytes;
  }

  /**
   * Queues a capture for the next group fsync. False when it was dropped (spool full or closed,
   * or it cannot be sealed); the drop is counted and logged here, and the login is never affected.
   */
  append(capture: Capture, settled?: (durable: boolean) => void): boolean {
    if (this.stoppedFor !== undefined) return this.drop(capture, 'spool_stopped');
    if (this.closed) return this.drop(capture, 'shutting_down');
    let frame: Buffer;
    try {
      frame = frameCapture(this.options.keyRing, capture);
    } catch (error) {
      this.options.logger.error({ idp: capture.idp, captureId: capture.captureId, err: { name: errorName(error) } }, 'capture cannot be sealed into the spool');
      return this.drop(capture, 'spool_encode_failed');
    }
    // Room is kept for two segment headers: the group being written and the next may each open a segment.
    const needed = frame.length + 2 * HEADER_BYTES;
    if (this.bytes + needed > this.options.maxBytes) {
      if (!this.hasRoomFor(frame.length)) return this.drop(capture, 'spool_full');
      this.files.evict(this.bytes + needed - this.options.maxBytes);
    }
    this.buffered.push({ frame, capture, ...(settled ? { settled } : {}) });
    this.bufferedBytes += frame.length;
    this.report();
    this.scheduleSync();
    return true;
  }

  /** Whether a record of about `bytes` would be taken now (not closed, room under the cap once grace segments are given up). */
  hasRoomFor(bytes: number): boolean {
    return !this.closed && this.stoppedFor === undefined && this.bytes - this.files.graceBytes + bytes + 2 * HEADER_BYTES <= this.options.maxBytes;
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
   * A record that cannot be opened is moved aside into held/ (durably, before this returns).
   */
  async read(maxRecords: number): Promise<SpoolBatch | undefined> {
    if (this.unread === 0 || this.stoppedFor !== undefined) return undefined;
    if (!(await this.lock.whenHeld())) return undefined;
    const scanned = this.fresh.take(this.files.segments, this.cursor, maxRecords) ?? (await readBatch(this.files, this.cursor, maxRecords, this.options.keyRing, this.held));
    if (!scanned) return undefined;
    const { captures, held, records, start, end } = scanned;
    // Moved aside (durably, every byte) before the reader may commit past them. A failure (a full
    // disk) throws: the cursor stays, nothing of this batch is committed, and the next read tries
    // again; what did reach held/ counts as held and is not written twice.
    try {
      await this.held.hold(held);
    } finally {
      this.report();
    }
    if (this.stoppedFor !== undefined) return undefined;
    this.cursor = end;
    this.unread -= records;
    return { captures, records, start, end };
  }

  /** Resolves once read() has something, or when `signal` aborts. */
  async waitForRecords(signal: AbortSignal): Promise<void> {
    if (this.unread > 0 && this.stoppedFor === undefined) return;
    await waitForWake(this.recordWaiters, signal);
  }

  /** Resolves true once every capture appended so far is in Postgres, false after `timeoutMs`. */
  async waitUntilEmpty(timeoutMs: number): Promise<boolean> {
    if (this.depth === 0) return true;
    if (this.stoppedFor !== undefined) return false;
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

  /**
   * Postgres has the batch: the checkpoint names how far, and segments past their grace window go.
   * Nothing once closed or stopped (a late commit, after a close that timed out waiting for the
   * writer, must not touch a directory that may be another sidecar's by then).
   */
  async commit(batch: SpoolBatch): Promise<void> {
    if (this.closed || this.stoppedFor !== undefined || !(await this.lock.whenHeld())) return;
    this.records -= batch.records;
    await this.files.commit(batch.start, batch.end);
    // A fully written active segment is retired once it is big enough to matter: its bytes then
    // count as grace bytes, which a full spool can give up.
    const active = this.files.active;
    if (active && !this.syncing && this.buffered.length === 0 && active.committed >= active.size && active.size >= this.segmentBytes / 4) await this.files.closeActive();
    await this.files.sweep();
    this.report();
  }

  /** Writes what is buffered, closes the files and releases the directory. What remains is replayed at the next start. */
  async close(): Promise<void> {
    if (this.closed) return;
    await this.flush();
    this.closed = true;
    this.fresh.clear();
    for (const wake of [...this.recordWaiters]) wake();
    // Segments in their grace window stay (a restart replays them); those past it go (not once stopped).
    await this.files.close();
    await this.lock.release();
  }

  /** Resolves with the reason once the spool stops (its directory is no longer its own); never while it runs. */
  whenStopped(): Promise<string> {
    if (this.stoppedFor !== undefined) return Promise.resolve(this.stoppedFor);
    return new Promise((resolve) => this.stopWaiters.add(resolve));
  }

  /**
   * Stops for good: the directory is no longer this run's alone. Nothing is deleted or checkpointed
   * from here on, no capture is taken (each one dropped, counted `spool_stopped`), the lock let go.
   */
  stop(reason: string): void {
    if (this.stoppedFor !== undefined) return;
    this.stoppedFor = reason;
    this.files.halt();
    this.fresh.clear();
    this.options.logger.fatal({ spool: this.options.dir, reason, spooled: this.depth }, 'the spool directory is no longer this sidecar\'s alone: the spool stops (no capture taken, nothing deleted); what it holds stays on disk');
    for (const wake of [...this.recordWaiters]) wake();
    for (const wake of [...this.stopWaiters]) wake(reason);
    this.stopWaiters.clear();
    void this.lock.release().catch(() => undefined);
  }

  private async load(): Promise<void> {
    const { dir, keyRing, logger, metrics } = this.options;
    const onDamaged = () => metrics.spoolRecordsHeldTotal.inc({ reason: 'damaged_segment' });
    const { graceMs, segmentBytes } = this;
    const loaded = await loadSpool({ dir, keyRing, writer: this.lock.writer, graceMs, segmentBytes, logger, onDamaged }, await readCheckpoint(dir, logger));
    this.files.adopt(loaded.segments, loaded.highestSeq);
    this.records = this.unread = loaded.records;
    // After the load: held files whose key is back are in the spool again, damaged ones found now are in held/.
    await this.held.load(loaded.mismatched);
    if (this.records > 0) {
      logger.info(
        { captures: this.records, alreadyInPostgres: loaded.confirmed, bytes: this.files.diskBytes, segments: loaded.segments.length, writer: this.lock.writer.id },
        'spool holds captures from before this start; replaying them to Postgres',
      );
    }
    this.report();
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
        this.writingRecords = group.length;
        const endTimer = this.options.metrics.spoolFsyncSeconds.startTimer();
        let segment: Segment | undefined;
        try {
          // While the lock is taken again nothing is written; once it is gone, nothing at all. Lost
          // while this group was written: another process may have had the directory meanwhile.
          await this.holdingLock();
          segment = await this.files.writable(bytes, this.segmentBytes);
          await this.files.append(Buffer.concat(group.map((entry) => entry.frame), bytes));
          await this.holdingLock();
        } catch (error) {
          this.writingBytes = 0;
          this.writingRecords = 0;
          if (error instanceof SegmentGoneError) this.stop(error.message);
          const reason = this.stoppedFor === undefined ? 'spool_write_failed' : 'spool_stopped';
          if (this.stoppedFor === undefined) await this.files.abandonActive(segment);
          for (const entry of group) {
            entry.settled?.(false);
            this.options.metrics.capturesDropped.inc({ reason });
            this.options.logger.error({ idp: entry.capture.idp, captureId: entry.capture.captureId, reason, err: errorFields(error) }, 'capture dropped');
          }
          this.report();
          continue;
        }
        endTimer();
        this.writingBytes = 0;
        this.writingRecords = 0;
        this.fresh.add(segment.name, segment.size, group);
        this.files.appended(segment, bytes);
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

  private async holdingLock(): Promise<void> {
    if (!(await this.lock.whenHeld())) throw new Error(this.stoppedFor ?? 'the spool directory lock is gone');
  }

  private report(): void {
    const { metrics } = this.options;
    metrics.queueDepth.set(this.depth);
    metrics.spoolBytes.set(this.bytes);
    metrics.spoolWaitingBytes.set(this.bytes - this.files.graceBytes);
    metrics.spoolMaxBytes.set(this.options.maxBytes);
    this.held.report();
    if (this.depth === 0) for (const wake of [...this.emptyWaiters]) wake();
  }
}
