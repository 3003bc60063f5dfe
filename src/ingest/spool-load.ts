// What a start finds in the spool directory, and what it replays.
// - Held records whose key is in the ring again go back into the spool (replayed like any segment).
// - A segment the checkpoint names as wholly in Postgres, whose grace window is over, is deleted:
//   the only deletion here. One still in its window is replayed whole (a Postgres that lost recent
//   commits, an async standby promoted, gets them again; one that has them ignores them).
// - A segment the checkpoint does not name, whoever wrote it, is replayed whole.
// - A damaged one is copied into held/ as it was, then cut back to its readable records.
import { open, readdir, readFile, unlink } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import type { KeyRing } from '../keys/key-ring.js';
import { HEADER_BYTES } from './spool-codec.js';
import { copyAside, heldKeyId, listHeld, moveAside, restoreHeld } from './spool-held.js';
import type { SpoolWriter } from './spool-lock.js';
import { bySegmentName, errorFields, parseSegmentName, segmentName, segmentShape, type Checkpoint, type Segment } from './spool-segments.js';

export interface LoadOptions {
  dir: string;
  keyRing: KeyRing;
  writer: SpoolWriter;
  graceMs: number;
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
}

export async function loadSpool(options: LoadOptions, checkpoint: Checkpoint): Promise<LoadedSpool> {
  const { dir, logger } = options;
  let highestSeq = 0;
  const seen = (name: string) => (highestSeq = Math.max(highestSeq, parseSegmentName(name)?.seq ?? 0));
  let names = await readdir(dir);
  names.forEach(seen);
  for (const name of checkpoint.segments.keys()) seen(name);

  for (const heldName of await listHeld(dir)) {
    const keyId = heldKeyId(heldName);
    if (keyId === undefined || !options.keyRing.keys.has(keyId)) continue;
    const name = segmentName(++highestSeq, options.writer.id);
    await restoreHeld(dir, heldName, name);
    logger.info({ keyId, heldFile: heldName, segment: name }, 'spool records held for a key that is in TOKEN_TAP_KEYS again are back in the spool; replaying them to Postgres');
  }
  // Set aside by releases before held/ (next to their segment, as `<name>.damaged`).
  for (const name of names.filter((candidate) => candidate.endsWith('.seg.damaged'))) await moveAside(dir, name).catch(() => undefined);

  names = (await readdir(dir)).filter((name) => parseSegmentName(name)).sort();
  const segments: Segment[] = [];
  let records = 0;
  let confirmed = 0;
  const now = Date.now();
  for (const name of names) {
    const seq = parseSegmentName(name)!.seq;
    const file = path.join(dir, name);
    const bytes = await readFile(file);
    const shape = segmentShape(bytes);
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
    let diskBytes = bytes.length;
    if (shape.damaged) {
      options.onDamaged();
      try {
        const copy = await copyAside(dir, name);
        await cutBack(file, shape.validEnd);
        diskBytes = shape.validEnd;
        logger.error(
          { segment: name, validBytes: shape.validEnd, fileBytes: bytes.length, readableRecords: shape.starts.length, copiedTo: copy },
          'spool segment is damaged (a record length no record can have): the records before the damage are replayed; the segment as it was is kept in held/',
        );
      } catch (error) {
        damaged = true;
        logger.error({ segment: name, err: errorFields(error) }, 'spool segment is damaged and cannot be copied into held/; it is moved there whole once its readable records are in Postgres');
      }
    } else if (shape.torn) {
      logger.warn({ segment: name, validBytes: shape.validEnd, fileBytes: bytes.length }, 'spool segment ends in a partial record (a write cut short by a crash); it is ignored');
    }
    const mark = checkpoint.segments.get(name);
    const wholly = mark !== undefined && mark.offset >= shape.validEnd;
    const inGrace = mark !== undefined && now - mark.at < options.graceMs;
    if (wholly && !inGrace) {
      // Read and in Postgres (the checkpoint names it), and its grace window is over.
      if (damaged) await moveAside(dir, name).catch(() => undefined);
      else await unlink(file).catch(() => undefined);
      continue;
    }
    // From the checkpoint's offset only when it is out of the grace window and on a record boundary.
    const aligned = mark !== undefined && (mark.offset === shape.validEnd || shape.starts.includes(mark.offset));
    const readFrom = mark && !inGrace && aligned ? mark.offset : HEADER_BYTES;
    const replayed = shape.starts.filter((start) => start >= readFrom).length;
    records += replayed;
    if (mark) confirmed += shape.starts.filter((start) => start >= readFrom && start < mark.offset).length;
    segments.push({
      seq,
      name,
      file,
      size: shape.validEnd,
      diskBytes,
      readFrom,
      committed: mark ? Math.min(mark.offset, shape.validEnd) : HEADER_BYTES,
      committedAt: mark?.at,
      ...(damaged ? { damaged } : {}),
    });
  }
  segments.sort(bySegmentName);
  return { segments, records, confirmed, highestSeq };
}

/** Cuts a segment back to its readable records, durably (the whole of it is in held/ by now). */
async function cutBack(file: string, validEnd: number): Promise<void> {
  const handle = await open(file, 'r+');
  try {
    await handle.truncate(validEnd);
    await handle.datasync();
  } finally {
    await handle.close();
  }
}
