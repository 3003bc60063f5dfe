// What a start finds in the spool directory, and what it replays.
// - Held records whose key is in the ring again go back into the spool (copied into segment-sized
//   pieces, spool-restore.ts, and replayed like any segment), once one of them opens under the ring's
//   key: under a key id with other material they stay held.
// - A segment the checkpoint names as wholly in Postgres, whose grace window is over, is deleted:
//   the only deletion here. One still in its window is replayed whole (a Postgres that lost recent
//   commits, an async standby promoted, gets them again; one that has them ignores them), and is
//   this run's to commit again: until then it is no grace segment (a full spool does not evict it).
// - A segment the checkpoint does not name, whoever wrote it, is replayed whole.
// - A damaged one is copied into held/ as it was, then cut back to its readable records.
// - Checkpoint and holder temporaries a crash left are removed. Names that are not the spool's (a
//   sequence out of range among them) are left alone, no link is followed and nothing but a regular
//   file is opened (spool-fs.ts); files are walked a window at a time, never read whole (spool-scan.ts).
import { readdir, unlink } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import type { KeyRing } from '../keys/key-ring.js';
import { HEADER_BYTES } from './spool-codec.js';
import { OPEN_READ, OPEN_READ_WRITE, openRegular, removeLeftTemporaries } from './spool-fs.js';
import { copyAside, HELD_DIR, HELD_MESSAGES, heldKeyId, listHeld, moveAside } from './spool-held.js';
import type { SpoolWriter } from './spool-lock.js';
import { opensUnder, restoreHeld } from './spool-restore.js';
import { walkFile } from './spool-scan.js';
import { bySegmentName, newSegmentName, outOfRangeSegmentName, parseSegmentName, type Checkpoint, type Segment } from './spool-segments.js';
import { errorFields } from '../lib/error-description.js';

/** A segment file of releases before held/, set aside next to itself. */
const OLD_DAMAGED = /^\d{20}(?:-[0-9a-f]{16})?\.seg\.damaged$/;

export interface LoadOptions {
  dir: string;
  keyRing: KeyRing;
  writer: SpoolWriter;
  graceMs: number;
  /** The size held records restored are copied into segments of. */
  segmentBytes: number;
  logger: Logger;
  /** Told of each damaged segment set aside. */
  onDamaged: () => void;
}

export interface LoadedSpool {
  segments: Segment[];
  /** Records to replay: those Postgres has not confirmed, and those within the grace window. */
  records: number;
  /** Of those, records Postgres had confirmed (within the grace window). */
  confirmed: number;
  highestSeq: number;
  /** Key ids in the ring whose held records do not open under it (other material under that id): they stay held. */
  mismatched: Set<string>;
}

export async function loadSpool(options: LoadOptions, checkpoint: Checkpoint): Promise<LoadedSpool> {
  const { dir, logger } = options;
  for (const name of await removeLeftTemporaries(dir)) logger.info({ file: name }, 'removed a temporary file a crash left in the spool directory');
  let highestSeq = 0;
  const seen = (name: string) => (highestSeq = Math.max(highestSeq, parseSegmentName(name)?.seq ?? 0));
  let names = await readdir(dir);
  names.forEach(seen);
  for (const name of checkpoint.segments.keys()) seen(name);
  for (const name of names.filter(outOfRangeSegmentName)) {
    logger.error(
      { file: name },
      'a file in the spool directory has a segment name with a sequence out of range (the spool never makes one): it is left alone, neither read nor numbered after',
    );
  }

  const mismatched = new Set<string>();
  for (const heldName of await listHeld(dir)) {
    const keyId = heldKeyId(heldName);
    if (keyId === undefined || !options.keyRing.keys.has(keyId)) continue;
    const opens = await opensUnder(options.keyRing, path.join(dir, HELD_DIR, heldName)).catch((error: unknown) => {
      logger.error({ keyId, heldFile: heldName, err: errorFields(error) }, 'cannot read a held spool file; it stays in held/');
      return undefined;
    });
    if (opens === undefined) continue;
    if (!opens) {
      mismatched.add(keyId);
      logger.error({ keyId, heldFile: heldName }, HELD_MESSAGES.key_mismatch);
      continue;
    }
    try {
      const restored = await restoreHeld(dir, heldName, options.segmentBytes, () => newSegmentName(++highestSeq, options.writer.id));
      logger.info(
        {
          keyId,
          heldFile: heldName,
          records: restored.records,
          segments: restored.segments,
          ...(restored.damagedTo ? { damagedPartIn: restored.damagedTo } : {}),
        },
        'spool records held for a key that is in TOKEN_TAP_KEYS again are back in the spool; replaying them to Postgres',
      );
    } catch (error) {
      logger.error(
        { keyId, heldFile: heldName, err: errorFields(error) },
        'cannot copy held spool records back into the spool (a full disk?); they stay in held/ and are tried again at the next start',
      );
    }
  }
  // Set aside by releases before held/ (next to their segment, as `<name>.damaged`).
  for (const name of names.filter((candidate) => OLD_DAMAGED.test(candidate))) await moveAside(dir, name).catch(() => undefined);

  names = (await readdir(dir)).filter((name) => parseSegmentName(name)).sort();
  const segments: Segment[] = [];
  let records = 0;
  let confirmed = 0;
  const now = Date.now();
  for (const name of names) {
    const seq = parseSegmentName(name)!.seq;
    const file = path.join(dir, name);
    const handle = await openRegular(file, OPEN_READ).catch((error: unknown) => {
      // A link, a directory or a FIFO under a segment's name is not the spool's: left alone, never followed or read.
      if ((error as { code?: string }).code !== 'ENOTREGULAR') throw error;
      logger.error(
        { segment: name, err: errorFields(error) },
        'a file in the spool directory has a segment name but is not a regular file (a link?); it is left alone and not read',
      );
      return undefined;
    });
    if (handle === undefined) continue;
    const mark = checkpoint.segments.get(name);
    // Records before the checkpoint's offset, and whether it is a record's start (read from there only then).
    let before = 0;
    let markIsStart = false;
    let shape: Awaited<ReturnType<typeof walkFile>>;
    let copy: string | undefined;
    let copyFailed: unknown;
    try {
      shape = await walkFile(handle, {
        ...(mark
          ? {
              onFrame: ({ at }: { at: number }) => {
                if (at < mark.offset) before += 1;
                else if (at === mark.offset) markIsStart = true;
              },
            }
          : {}),
      });
      if (shape.kind === 'records' && shape.damaged)
        copy = await copyAside(dir, name, handle, shape.fileBytes).catch((error: unknown) => void (copyFailed = error));
    } finally {
      await handle.close();
    }
    if (shape.kind === 'empty') {
      // No record in it: nothing can be lost.
      await unlink(file).catch(() => undefined);
      continue;
    }
    if (shape.kind === 'foreign') {
      const where = await moveAside(dir, name).catch((error: unknown) => {
        logger.error({ segment: name, err: errorFields(error) }, 'cannot move a spool segment aside into held/; it stays where it is');
        return undefined;
      });
      options.onDamaged();
      logger.error({ segment: name, movedTo: where }, 'spool segment does not start with the spool header; moved aside into held/, nothing of it can be read');
      continue;
    }
    let damaged = false;
    let diskBytes = shape.fileBytes;
    if (shape.damaged) {
      options.onDamaged();
      try {
        if (copy === undefined) throw copyFailed;
        await cutBack(file, shape.validEnd);
        diskBytes = shape.validEnd;
        logger.error(
          { segment: name, validBytes: shape.validEnd, fileBytes: shape.fileBytes, readableRecords: shape.records, copiedTo: copy },
          'spool segment is damaged (a record length no record can have): the records before the damage are replayed; the segment as it was is kept in held/',
        );
      } catch (error) {
        damaged = true;
        logger.error(
          { segment: name, err: errorFields(error) },
          'spool segment is damaged and cannot be copied into held/; it is moved there whole once its readable records are in Postgres',
        );
      }
    } else if (shape.torn) {
      logger.warn(
        { segment: name, validBytes: shape.validEnd, fileBytes: shape.fileBytes },
        'spool segment ends in a partial record (a write cut short by a crash); it is ignored',
      );
    }
    const wholly = mark !== undefined && mark.offset >= shape.validEnd;
    const inGrace = mark !== undefined && now - mark.at < options.graceMs;
    if (wholly && !inGrace) {
      // Read and in Postgres (the checkpoint names it), and its grace window is over.
      if (damaged) await moveAside(dir, name).catch(() => undefined);
      else await unlink(file).catch(() => undefined);
      continue;
    }
    // From the checkpoint's offset only when it is out of the grace window and on a record boundary.
    const aligned = mark !== undefined && (mark.offset === shape.validEnd || markIsStart);
    const readFrom = mark && !inGrace && aligned ? mark.offset : HEADER_BYTES;
    // What this run will not read again is what it knows Postgres has: a segment replayed (its grace
    // window) is committed again by this run, and only then starts a grace window of its own.
    records += readFrom === HEADER_BYTES ? shape.records : shape.records - before;
    if (mark && readFrom === HEADER_BYTES) confirmed += before;
    segments.push({
      seq,
      name,
      file,
      size: shape.validEnd,
      diskBytes,
      readFrom,
      committed: readFrom,
      committedAt: readFrom > HEADER_BYTES ? mark!.at : undefined,
      ...(damaged ? { damaged } : {}),
    });
  }
  segments.sort(bySegmentName);
  return { segments, records, confirmed, highestSeq, mismatched };
}

/** Cuts a segment back to its readable records, durably (the whole of it is in held/ by now). */
async function cutBack(file: string, validEnd: number): Promise<void> {
  const handle = await openRegular(file, OPEN_READ_WRITE);
  try {
    await handle.truncate(validEnd);
    await handle.datasync();
  } finally {
    await handle.close();
  }
}
