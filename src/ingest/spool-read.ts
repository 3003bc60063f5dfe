// One read of the spool: durable records after a position, in append order, opened; those that
// cannot be opened are gathered per held/ file (the caller moves them there before it moves on).
import type { Capture } from '../capture/types.js';
import type { KeyRing } from '../keys/key-ring.js';
import { ITEMS_PER_TURN, nextTurn } from '../lib/turns.js';
import { LENGTH_BYTES, openRecord, scanFrames } from './spool-codec.js';
import type { HeldLedger } from './spool-census.js';
import type { HeldRecords } from './spool-held.js';
import type { SegmentFiles, SpoolPosition } from './spool-segments.js';

export interface ReadRecords {
  captures: Capture[];
  /** Records that cannot be opened, by the held/ file they go to (those whose bytes are held already left out). */
  held: Map<string, HeldRecords>;
  /** Records consumed, including those that cannot be opened. */
  records: number;
  start: SpoolPosition;
  end: SpoolPosition;
}

/** Up to `maxRecords` records after `from`; undefined when there are none. */
export async function readBatch(
  files: SegmentFiles,
  from: SpoolPosition,
  maxRecords: number,
  ring: KeyRing,
  ledger: HeldLedger,
): Promise<ReadRecords | undefined> {
  const segments = files.segments;
  const captures: Capture[] = [];
  const held = new Map<string, HeldRecords>();
  let records = 0;
  let cursor = { ...from };
  let start: SpoolPosition | undefined;
  while (records < maxRecords) {
    const index = segments.findIndex((candidate) => candidate.name >= cursor.segment);
    const segment = segments[index];
    if (!segment) break;
    if (segment.name !== cursor.segment) cursor = { segment: segment.name, offset: segment.readFrom };
    if (cursor.offset >= segment.size) {
      const next = segments[index + 1];
      if (!next) break;
      cursor = { segment: next.name, offset: next.readFrom };
      continue;
    }
    const base = cursor.offset;
    const chunk = await files.readChunk(segment, base);
    const { records: starts, end } = scanFrames(chunk);
    for (const at of starts) {
      if (records >= maxRecords) break;
      if (records > 0 && records % ITEMS_PER_TURN === 0) await nextTurn();
      const length = chunk.readUInt32BE(at);
      const opened = openRecord(ring, chunk.subarray(at + LENGTH_BYTES, at + LENGTH_BYTES + length));
      start ??= { segment: segment.name, offset: base + at };
      if ('capture' in opened) {
        captures.push(opened.capture);
      } else {
        const frame = chunk.subarray(at, at + LENGTH_BYTES + length);
        // Met again (a grace segment replayed, a hold that failed part way): these very bytes are in held/ already.
        if (!ledger.has(frame)) {
          const { reason, keyId } = opened.unreadable;
          const file = ledger.fileFor(opened.unreadable);
          const entry = held.get(file) ?? { frames: [], reason, keyId, err: opened.err, at: { segment: segment.name, offset: base + at } };
          entry.frames.push(frame);
          held.set(file, entry);
        }
      }
      records += 1;
      cursor = { segment: segment.name, offset: base + at + LENGTH_BYTES + length };
    }
    if (end === 0) break;
  }
  if (records === 0 || !start) return undefined;
  return { captures, held, records, start, end: cursor };
}
