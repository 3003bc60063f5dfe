// Held records whose key is in the ring again go back into the spool at a start (spool-load.ts):
// copied into new segments of at most a segment's size each, never renamed in whole, so a held file
// of any size becomes segments a read handles a window at a time and a full spool can count. The
// copies are durable before the held file goes; a crash between replays some records twice
// (Postgres ignores a capture id it has), and a failure (a full disk) removes the copies and leaves
// the held file as it was. What cannot be framed in a held file (damage) stays in held/ as
// `damaged-<segment name>`, as a damaged segment's would.
import { rename, unlink } from 'node:fs/promises';
import path from 'node:path';
import type { KeyRing } from '../keys/key-ring.js';
import { HEADER_BYTES, LENGTH_BYTES, openRecord } from './spool-codec.js';
import { OPEN_READ, openRegular, syncDirectory } from './spool-fs.js';
import { HELD_DIR, heldKeyId } from './spool-held.js';
import { copyRange, readFrame, walkFile } from './spool-scan.js';
import { createSegmentFile } from './spool-segments.js';

/**
 * Whether a held file's records open under the ring (one of them is enough: the rest that do not
 * are held again as unreadable when read), read one record at a time. None open when the ring has
 * other material under their key id. A file with no record opens (there is nothing to hold).
 */
export async function opensUnder(ring: KeyRing, file: string): Promise<boolean> {
  const handle = await openRegular(file, OPEN_READ);
  try {
    let opens = false;
    let any = false;
    await walkFile(handle, {
      onFrame: async ({ at, bytes }) => {
        any = true;
        const frame = await readFrame(handle, at, bytes);
        opens = 'capture' in openRecord(ring, frame.subarray(LENGTH_BYTES));
        return opens ? 'stop' : undefined;
      },
    });
    return opens || !any;
  } finally {
    await handle.close();
  }
}

export interface Restored {
  /** The new segments, in order. */
  segments: string[];
  records: number;
  /** Where the held file went when part of it cannot be framed (damage). */
  damagedTo?: string;
}

/**
 * Copies the records of held/`heldName` into new segments (names from `nextName`, each at most
 * `segmentBytes` unless one record is larger), durably, then removes the held file. Throws, having
 * removed the copies, when they cannot all be made.
 */
export async function restoreHeld(dir: string, heldName: string, segmentBytes: number, nextName: () => string): Promise<Restored> {
  if (heldKeyId(heldName) === undefined) throw new Error(`not a held key file name: ${heldName}`);
  const held = path.join(dir, HELD_DIR);
  const from = path.join(held, heldName);
  const source = await openRegular(from, OPEN_READ);
  const made: string[] = [];
  let records = 0;
  let damaged = false;
  try {
    // Contiguous runs of whole records, each a segment's worth.
    const pieces: Array<{ from: number; to: number }> = [];
    const walk = await walkFile(source, {
      onFrame: ({ at, bytes }) => {
        records += 1;
        const last = pieces.at(-1);
        if (last && last.to === at && HEADER_BYTES + (last.to - last.from) + bytes <= segmentBytes) last.to = at + bytes;
        else pieces.push({ from: at, to: at + bytes });
      },
    });
    damaged = walk.kind === 'foreign' || (walk.kind === 'records' && walk.damaged);
    for (const piece of pieces) {
      const name = nextName();
      const target = await createSegmentFile(dir, name);
      made.push(name);
      try {
        await copyRange(source, piece.from, piece.to, target);
        await target.datasync();
      } finally {
        await target.close();
      }
    }
    if (made.length > 0) await syncDirectory(dir);
  } catch (error) {
    for (const name of made) await unlink(path.join(dir, name)).catch(() => undefined);
    if (made.length > 0) await syncDirectory(dir).catch(() => undefined);
    throw error;
  } finally {
    await source.close();
  }
  let damagedTo: string | undefined;
  if (damaged) {
    damagedTo = path.join(held, `damaged-${nextName()}`);
    await rename(from, damagedTo);
  } else {
    await unlink(from);
  }
  await syncDirectory(held);
  return { segments: made, records, ...(damagedTo ? { damagedTo } : {}) };
}
