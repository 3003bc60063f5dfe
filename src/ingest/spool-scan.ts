// Walking a spool file's records without holding the file in memory: records are found by their
// length prefixes, read through a window of at most WINDOW_BYTES at a time (positional reads), so a
// segment or held file of any size (a held file restored, one planted in the directory) costs a
// window, never its size. A start, `keys rotate`'s count and a restore all walk files this way.
import { createHash } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';
import { HEADER_BYTES, LENGTH_BYTES, MAX_RECORD_BYTES, SEGMENT_MAGIC } from './spool-codec.js';
import { readAt, writeAll } from './spool-fs.js';

const WINDOW_BYTES = 1024 * 1024;
/** Enough of a record for its version, key id (at most 64 bytes) and capture id. */
export const RECORD_HEAD_BYTES = 256;

/** One record found by a walk. */
export interface FrameFound {
  /** Offset of its length prefix from the file's start. */
  at: number;
  /** Bytes of the whole frame, length prefix included. */
  bytes: number;
  /** The record's first bytes after its length prefix (up to RECORD_HEAD_BYTES; a copy). */
  head: Buffer;
  /** frameDigest of the whole frame, when the walk was asked for them. */
  digest?: string;
}

/** What a walk found: the same account segmentShape gives of bytes in memory. */
export type FileWalk =
  | { kind: 'empty'; fileBytes: number }
  | { kind: 'foreign'; fileBytes: number }
  | { kind: 'records'; fileBytes: number; records: number; validEnd: number; damaged: boolean; torn: boolean };

export interface WalkOptions {
  /** Computes each frame's digest (read in windows; a large record is never held whole). */
  digests?: boolean;
  /** Told of each whole record in order; returning 'stop' ends the walk there. */
  // biome-ignore lint/suspicious/noConfusingVoidType: a callback that returns nothing must fit, as with `() => void`
  onFrame?: (frame: FrameFound) => void | 'stop' | Promise<void | 'stop'>;
}

/** The identity of a record's exact bytes (128 bits of SHA-256, base64url): held/ keeps a record once. */
export function frameDigest(frame: Buffer): string {
  return createHash('sha256').update(frame).digest().subarray(0, 16).toString('base64url');
}

/**
 * Walks the records of an open segment-format file (a segment or a held file), as far as its size
 * when the walk began (a held file appended to meanwhile is counted as it was).
 */
export async function walkFile(handle: FileHandle, options: WalkOptions = {}): Promise<FileWalk> {
  const fileBytes = (await handle.stat()).size;
  // Created, then the process died before its first record was durable.
  if (fileBytes <= HEADER_BYTES) return { kind: 'empty', fileBytes };
  const window = Buffer.alloc(Math.min(WINDOW_BYTES, fileBytes));
  let windowAt = 0;
  let windowLength = await readAt(handle, window, 0, window.length);
  if (windowLength < HEADER_BYTES || !window.subarray(0, HEADER_BYTES).equals(SEGMENT_MAGIC)) return { kind: 'foreign', fileBytes };
  /** Makes [at, at + need) readable in the window (need <= its size); false when the file ends sooner (it shrank). */
  const have = async (at: number, need: number): Promise<boolean> => {
    if (at >= windowAt && at + need <= windowAt + windowLength) return true;
    windowAt = at;
    windowLength = await readAt(handle, window, at, Math.min(window.length, fileBytes - at));
    return windowLength >= need;
  };
  let position = HEADER_BYTES;
  let records = 0;
  let damaged = false;
  while (position + LENGTH_BYTES <= fileBytes) {
    if (!(await have(position, Math.min(LENGTH_BYTES + RECORD_HEAD_BYTES, fileBytes - position)))) break;
    const length = window.readUInt32BE(position - windowAt);
    if (length < 5 || length > MAX_RECORD_BYTES) {
      damaged = true;
      break;
    }
    const end = position + LENGTH_BYTES + length;
    if (end > fileBytes) break;
    if (options.onFrame) {
      const headStart = position + LENGTH_BYTES - windowAt;
      const head = Buffer.from(window.subarray(headStart, headStart + Math.min(length, RECORD_HEAD_BYTES)));
      let digest: string | undefined;
      if (options.digests) {
        const hash = createHash('sha256');
        for (let at = position; at < end; ) {
          if (!(await have(at, Math.min(window.length, end - at))))
            return { kind: 'records', fileBytes, records, validEnd: position, damaged: false, torn: true };
          const upTo = Math.min(end, windowAt + windowLength);
          hash.update(window.subarray(at - windowAt, upTo - windowAt));
          at = upTo;
        }
        digest = hash.digest().subarray(0, 16).toString('base64url');
      }
      if ((await options.onFrame({ at: position, bytes: end - position, head, ...(digest === undefined ? {} : { digest }) })) === 'stop') {
        return { kind: 'records', fileBytes, records: records + 1, validEnd: end, damaged: false, torn: false };
      }
    }
    records += 1;
    position = end;
  }
  return { kind: 'records', fileBytes, records, validEnd: position, damaged, torn: !damaged && position < fileBytes };
}

/** Reads one whole record (length prefix included) at `at`, `bytes` long (a record is at most MAX_RECORD_BYTES). */
export async function readFrame(handle: FileHandle, at: number, bytes: number): Promise<Buffer> {
  const frame = Buffer.alloc(bytes);
  const length = await readAt(handle, frame, at, bytes);
  if (length < bytes) throw Object.assign(new Error('the file ended inside a record (it changed while it was read)'), { code: 'ESHORTREAD' });
  return frame;
}

/** Copies bytes [from, to) of `source` to the end of `target`, a window at a time. */
export async function copyRange(source: FileHandle, from: number, to: number, target: FileHandle): Promise<void> {
  const window = Buffer.alloc(Math.min(WINDOW_BYTES, Math.max(1, to - from)));
  for (let at = from; at < to; ) {
    const length = await readAt(source, window, at, Math.min(window.length, to - at));
    if (length === 0) throw Object.assign(new Error('the file ended before the bytes to copy (it changed while it was read)'), { code: 'ESHORTREAD' });
    await writeAll(target, window.subarray(0, length));
    at += length;
  }
}
