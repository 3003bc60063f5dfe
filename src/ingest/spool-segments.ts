// The spool's files: segment names, the checkpoint, and what a segment on disk holds.
//
// Segments are `<20-digit sequence>-<writer id>.seg`: the writer id (random per run, spool-lock.ts)
// keeps two writers' segments apart even when their sequences meet, and says whose a segment is.
// Segments of releases before writer ids are `<sequence>.seg` (writer ""), and are read the same.
//
// `checkpoint.json` names each segment Postgres has records of, by name, with how far and when
// (`{"v":2,"writer":{...},"segments":{"<name>":{"offset":n,"at":ms}}}`). A segment is only ever
// deleted once it is named there as wholly in Postgres (and its grace window is over): a segment
// the checkpoint does not name, whoever wrote it, is read and replayed, never deleted. The
// checkpoint of releases before (`{"segment":n,"offset":m}`, a sequence number) is not trusted for
// deletion: its arithmetic could cover a segment another writer made; those segments are replayed
// (Postgres ignores a capture id it has).
import { randomUUID } from 'node:crypto';
import { fstatSync } from 'node:fs';
import { rename, stat, unlink, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import { errorCode, errorFields, errorName } from '../lib/error-description.js';
import type { SpoolWriter } from './spool-lock.js';
import { HEADER_BYTES, LENGTH_BYTES, SEGMENT_MAGIC } from './spool-codec.js';
import { OPEN_NEW_APPEND, OPEN_READ, openRegular, readRegularFile, syncDirectory, writeAll, writeNewFile } from './spool-fs.js';
import { TokenTapError } from '../lib/errors.js';

const SEGMENT_NAME = /^(\d{20})(?:-([0-9a-f]{16}))?\.seg$/;
export const CHECKPOINT_FILE = 'checkpoint.json';
/** A checkpoint names the segments on disk (about 80 bytes each): 4 MiB is some 50,000 of them. */
export const MAX_CHECKPOINT_BYTES = 4 * 1024 * 1024;
const READ_CHUNK_BYTES = 1024 * 1024;
/**
 * The highest sequence a segment name may carry. Past 2^53 a sequence is no longer exact (+1 is
 * lost to rounding: a new segment would take an existing name), so a name above 2^52 (a planted or
 * corrupt one, `99999999999999999999.seg`) is not the spool's: never parsed, read or counted on
 * from. What is left, 2^52 more segments, is more than any spool will make.
 */
const MAX_SEQUENCE = 2 ** 52;

export function segmentName(seq: number, writerId: string): string {
  return `${String(seq).padStart(20, '0')}-${writerId}.seg`;
}

/** The sequence and writer id of a segment file name; undefined for any other file, and for a sequence out of range. */
export function parseSegmentName(name: string): { seq: number; writer: string } | undefined {
  const match = SEGMENT_NAME.exec(name);
  if (!match) return undefined;
  const seq = Number.parseInt(match[1]!, 10);
  return seq <= MAX_SEQUENCE ? { seq, writer: match[2] ?? '' } : undefined;
}

/** A name shaped as a segment's whose sequence is out of range: left alone (and said so), never read. */
export function outOfRangeSegmentName(name: string): boolean {
  return SEGMENT_NAME.test(name) && parseSegmentName(name) === undefined;
}

/** The name of a new segment; throws rather than make one that would not read back as `seq` (it could take another's name). */
export function newSegmentName(seq: number, writerId: string): string {
  const name = segmentName(seq, writerId);
  if (parseSegmentName(name)?.seq !== seq) throw new Error(`the spool's segment sequence ${seq} is out of range; no new segment can be made`);
  return name;
}

/** How far Postgres has one segment's records, and when that last moved (ms since the epoch). */
export interface CommittedMark {
  offset: number;
  at: number;
}

export interface Checkpoint {
  /** The run that wrote it. */
  writer?: SpoolWriter;
  /** By segment name. */
  segments: Map<string, CommittedMark>;
}

/** The checkpoint; none (every segment replayed) when it is missing, unreadable or too large (logged: `logger`). */
export async function readCheckpoint(dir: string, logger?: Logger): Promise<Checkpoint> {
  try {
    const text = (await readRegularFile(path.join(dir, CHECKPOINT_FILE), MAX_CHECKPOINT_BYTES)).toString('utf8');
    const parsed = JSON.parse(text) as { v?: number; writer?: SpoolWriter; segments?: Record<string, Partial<CommittedMark>> };
    if (parsed.v === 2 && parsed.segments && typeof parsed.segments === 'object') {
      const segments = new Map<string, CommittedMark>();
      for (const [name, mark] of Object.entries(parsed.segments)) {
        if (parseSegmentName(name) && Number.isSafeInteger(mark.offset) && mark.offset! >= HEADER_BYTES && Number.isFinite(mark.at))
          segments.set(name, { offset: mark.offset!, at: mark.at! });
      }
      return { ...(parsed.writer ? { writer: parsed.writer } : {}), segments };
    }
  } catch (error) {
    // Missing or unreadable: every segment is replayed; Postgres skips what it has.
    if (errorCode(error) !== 'ENOENT') {
      logger?.error(
        { file: CHECKPOINT_FILE, err: { name: errorName(error), ...errorFields(error) } },
        'the spool checkpoint cannot be used (too large, not a regular file, or not JSON): it is not read; every segment is replayed (Postgres ignores captures it has)',
      );
    }
  }
  return { segments: new Map() };
}

/** Not fsynced: a checkpoint lost in a crash only means replaying records Postgres ignores. */
async function writeCheckpoint(dir: string, writer: SpoolWriter, segments: Iterable<[string, CommittedMark]>): Promise<void> {
  const file = path.join(dir, CHECKPOINT_FILE);
  const temporary = `${file}.${randomUUID()}.tmp`;
  try {
    await writeNewFile(temporary, JSON.stringify({ v: 2, writer, segments: Object.fromEntries(segments) }));
    await rename(temporary, file);
  } catch (error) {
    await unlink(temporary).catch(() => undefined);
    throw error;
  }
}

/** Creates a segment file with its header, durably (name included); a handle for appends. */
export async function createSegmentFile(dir: string, name: string): Promise<FileHandle> {
  const file = path.join(dir, name);
  const handle = await openRegular(file, OPEN_NEW_APPEND);
  try {
    await writeAll(handle, SEGMENT_MAGIC);
    await handle.datasync();
    await syncDirectory(dir);
  } catch (error) {
    await handle.close().catch(() => undefined);
    await unlink(file).catch(() => undefined);
    throw error;
  }
  return handle;
}

/** A segment as the spool keeps track of it. */
export interface Segment {
  seq: number;
  name: string;
  file: string;
  /** Bytes of whole, durable records (plus the header); reading stops here. */
  size: number;
  /** Bytes the file takes on disk (a torn tail counts until the segment is deleted). */
  diskBytes: number;
  /** Where this run starts reading it. */
  readFrom: number;
  /** How far Postgres has its records (HEADER_BYTES: none known). */
  committed: number;
  /** When `committed` last moved (ms since the epoch); the grace window runs from here. */
  committedAt: number | undefined;
  /** Damaged, and the copy in held/ could not be made: moved there whole instead of deleted. */
  damaged?: boolean;
}

/** Compares segments by name: sequence first (zero-padded), so this is the order they were written in. */
export function bySegmentName(a: { name: string }, b: { name: string }): number {
  return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
}

/** A place in the spool: a segment (by name) and a byte offset in it. */
export interface SpoolPosition {
  segment: string;
  offset: number;
}

/**
 * The segment files of one run: the one appended to, reads, the grace window and deletion. A
 * segment is deleted only once it is wholly in Postgres (`committed`), the reader is past it
 * (`readPast`), and its grace window is over, or earlier when the spool needs the room (evict).
 */
export class SegmentFiles {
  segments: Segment[] = [];
  diskBytes = 0;
  active: Segment | undefined;
  private highestSeq = 0;
  private appendHandle: FileHandle | undefined;
  private readHandle: { name: string; handle: FileHandle } | undefined;
  private graceTimer: NodeJS.Timeout | undefined;
  /** Closed, or stopped (the directory is no longer this run's): nothing is deleted or checkpointed any more. */
  private halted = false;
  private readonly removals = new Set<Promise<void>>();

  constructor(
    private readonly dir: string,
    private readonly writer: SpoolWriter,
    private readonly graceMs: number,
    private readonly logger: Logger,
    /** Whether the reader has gone past every record of `segment`. */
    private readonly readPast: (segment: Segment) => boolean,
    /** Told after segments went away on the grace timer. */
    private readonly onSwept: () => void,
    /** Asked before each checkpoint write and deletion: whether the directory is still this run's (its lock). */
    private readonly stillOurs: () => Promise<boolean>,
  ) {}

  adopt(segments: Segment[], highestSeq: number): void {
    this.segments = segments;
    this.highestSeq = highestSeq;
    this.diskBytes = segments.reduce((sum, segment) => sum + segment.diskBytes, 0);
  }

  /** Segments wholly in Postgres that the reader is past (not the one appended to): kept for the grace window. */
  graceSegments(): Segment[] {
    return this.segments.filter((segment) => segment !== this.active && segment.committed >= segment.size && this.readPast(segment));
  }

  get graceBytes(): number {
    return this.graceSegments().reduce((sum, segment) => sum + segment.diskBytes, 0);
  }

  /** Postgres has the records from `start` to `end`: their segments' marks move, and the checkpoint names them. */
  async commit(start: SpoolPosition, end: SpoolPosition): Promise<void> {
    if (this.halted) return;
    const now = Date.now();
    for (const segment of this.segments) {
      if (segment.name < start.segment || segment.name > end.segment) continue;
      segment.committed = Math.max(segment.committed, segment.name === end.segment ? end.offset : segment.size);
      segment.committedAt = now;
    }
    const marks = this.segments
      .filter((segment) => segment.committedAt !== undefined)
      .map((segment): [string, CommittedMark] => [segment.name, { offset: segment.committed, at: segment.committedAt! }]);
    if (!(await this.stillOurs())) return;
    try {
      await writeCheckpoint(this.dir, this.writer, marks);
    } catch (error) {
      this.logger.warn({ err: errorFields(error) }, 'cannot write the spool checkpoint; a restart will replay captures Postgres already has');
    }
  }

  /** Deletes grace segments whose window is over, and sets a timer for the next one. */
  async sweep(): Promise<void> {
    clearTimeout(this.graceTimer);
    this.graceTimer = undefined;
    if (this.halted) return;
    const now = Date.now();
    let next = Infinity;
    for (const segment of this.graceSegments()) {
      const due = segment.committedAt! + this.graceMs;
      if (due <= now) await this.remove(segment);
      else next = Math.min(next, due);
    }
    if (next === Infinity || this.halted) return;
    this.graceTimer = setTimeout(
      () => {
        this.sweep().then(this.onSwept, (error: unknown) =>
          this.logger.warn({ err: errorFields(error) }, 'cannot delete spool segments past their grace window'),
        );
      },
      next - now + 10,
    );
    this.graceTimer.unref();
  }

  /** Deletes grace segments, oldest first, until `bytes` are freed or none is left; the accounting is at once. */
  evict(bytes: number): void {
    let freed = 0;
    for (const segment of this.graceSegments()) {
      if (freed >= bytes) break;
      freed += segment.diskBytes;
      this.logger.warn(
        { segment: segment.name, bytes: segment.diskBytes, committedAt: new Date(segment.committedAt!).toISOString() },
        'spool is full: a segment in its grace window (already in Postgres) is deleted early to make room',
      );
      const removal = this.remove(segment).finally(() => this.removals.delete(removal));
      this.removals.add(removal);
    }
  }

  /** The segment to append `bytes` to: the active one, or a new one once it would pass `segmentBytes`. */
  async writable(bytes: number, segmentBytes: number): Promise<Segment> {
    const active = this.active;
    if (active && active.size > HEADER_BYTES && active.size + bytes > segmentBytes) {
      await this.closeActive();
      if (active.committed >= active.size) await this.sweep();
    } else if (active) {
      return active;
    }
    // Above every sequence seen (on disk or in the checkpoint), so a new segment sorts after them all.
    const seq = (this.highestSeq = Math.max(this.highestSeq, this.segments.at(-1)?.seq ?? 0) + 1);
    const name = newSegmentName(seq, this.writer.id);
    this.appendHandle = await createSegmentFile(this.dir, name);
    const segment: Segment = {
      seq,
      name,
      file: path.join(this.dir, name),
      size: HEADER_BYTES,
      diskBytes: HEADER_BYTES,
      readFrom: HEADER_BYTES,
      committed: HEADER_BYTES,
      committedAt: undefined,
    };
    this.segments.push(segment);
    this.active = segment;
    this.diskBytes += HEADER_BYTES;
    return segment;
  }

  /**
   * Writes `bytes` to the active segment and fdatasyncs it. Throws SegmentGoneError when the file
   * was deleted meanwhile (by another process: the directory is no longer this run's alone).
   */
  async append(bytes: Buffer): Promise<void> {
    const handle = this.appendHandle!;
    await writeAll(handle, bytes);
    await handle.datasync();
    // fstat asks the inode, never the disk: done in place, not through the thread pool (15-40 µs per
    // group as a promise, bench/RESULTS.md issue 25).
    if (fstatSync(handle.fd).nlink === 0)
      throw new SegmentGoneError(`the spool segment ${this.active?.name} was deleted while this sidecar wrote to it: another process manages ${this.dir}`);
  }

  appended(segment: Segment, bytes: number): void {
    segment.size += bytes;
    segment.diskBytes += bytes;
    this.diskBytes += bytes;
  }

  async closeActive(): Promise<void> {
    const handle = this.appendHandle;
    this.appendHandle = undefined;
    this.active = undefined;
    await handle?.close().catch(() => undefined);
  }

  /** After a failed write: cut the segment back to its last whole record and stop appending to it. */
  async abandonActive(segment: Segment | undefined): Promise<void> {
    if (segment && this.appendHandle) await this.appendHandle.truncate(segment.size).catch(() => undefined);
    await this.closeActive();
    if (segment) {
      const actual = await stat(segment.file)
        .then((info) => info.size)
        .catch(() => segment.diskBytes);
      this.diskBytes += actual - segment.diskBytes;
      segment.diskBytes = actual;
    }
  }

  /** Deletes a segment (a damaged one is moved into held/ instead). Its bytes stop counting at once. */
  private async remove(segment: Segment): Promise<void> {
    const index = this.segments.indexOf(segment);
    if (index < 0 || this.halted) return;
    this.segments.splice(index, 1);
    this.diskBytes -= segment.diskBytes;
    if (this.readHandle?.name === segment.name) {
      const { handle } = this.readHandle;
      this.readHandle = undefined;
      await handle.close().catch(() => undefined);
    }
    if (!(await this.stillOurs())) return;
    const removal = segment.damaged ? rename(segment.file, path.join(this.dir, 'held', `damaged-${segment.name}`)) : unlink(segment.file);
    await removal.catch((error: unknown) => {
      this.logger.warn({ segment: segment.name, err: errorFields(error) }, 'cannot delete a spool segment Postgres already has');
    });
  }

  /** Whole records from `offset` of `segment`, up to a chunk (or exactly the one record, when it is bigger). */
  async readChunk(segment: Segment, offset: number): Promise<Buffer> {
    if (this.readHandle?.name !== segment.name) {
      await this.readHandle?.handle.close().catch(() => undefined);
      this.readHandle = { name: segment.name, handle: await openRegular(segment.file, OPEN_READ) };
    }
    const handle = this.readHandle.handle;
    let length = Math.min(segment.size - offset, READ_CHUNK_BYTES);
    let chunk = Buffer.alloc(length);
    await handle.read(chunk, 0, length, offset);
    const first = chunk.length >= LENGTH_BYTES ? chunk.readUInt32BE(0) + LENGTH_BYTES : 0;
    if (first > length && offset + first <= segment.size) {
      length = first;
      chunk = Buffer.alloc(length);
      await handle.read(chunk, 0, length, offset);
    }
    return chunk;
  }

  /** Closes the files, deleting what is past its grace window; what is in it stays for the next start. */
  async close(): Promise<void> {
    await this.closeActive();
    await this.sweep();
    this.halt();
    await Promise.all([...this.removals]);
    await this.readHandle?.handle.close().catch(() => undefined);
    this.readHandle = undefined;
  }

  /** From now on nothing is deleted and no checkpoint written (closed, or the directory is no longer this run's). */
  halt(): void {
    this.halted = true;
    clearTimeout(this.graceTimer);
    this.graceTimer = undefined;
  }
}

export class SegmentGoneError extends TokenTapError {
  override name = 'SegmentGoneError';
  readonly code = 'ESEGMENTGONE';
  constructor(message: string) {
    super(message, 'not_found');
  }
}
