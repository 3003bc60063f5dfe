// The records this run made durable, kept in memory (the capture as it was appended) until the
// reader takes them. Without this the reader read back from disk, decrypted and parsed each record
// it had just written and still held (an open, a read, AES-GCM and JSON per capture: bench/RESULTS.md,
// issue 25). The disk stays the truth: a record is kept here only once it is fsynced, is handed out
// only when it is exactly the next record the reader would read from disk, and past the bound (a
// Postgres outage, a long replay) records are only on disk and read from there as before.
import type { Capture } from '../capture/types.js';
import type { HeldRecords } from './spool-held.js';
import type { Segment, SpoolPosition } from './spool-segments.js';

interface FreshRecord {
  segment: string;
  offset: number;
  /** Where the next record starts (this one's offset plus its frame's length). */
  end: number;
  capture: Capture;
  /** The record's frame length: what it stands for in the byte bound. */
  bytes: number;
}

/** What take() hands out: the shape of a read from disk with nothing to set aside. */
export interface FreshBatch {
  captures: Capture[];
  /** None: every record here was sealed by this run, under the active key. */
  held: Map<string, HeldRecords>;
  records: number;
  start: SpoolPosition;
  end: SpoolPosition;
}

/** At most this many records are kept (the pump reads 200 at a time). */
export const MAX_FRESH_RECORDS = 1_000;
/**
 * And at most this many bytes of frames: a capture in memory takes about its frame's size again, and
 * hostile IdPs can send captures at their field bounds (64 KiB a token), so a count alone could hold
 * hundreds of MiB through a Postgres outage. The spool passes min(8 MiB, a sixteenth of its cap).
 */
export const MAX_FRESH_BYTES = 8 * 1024 * 1024;

function before(a: SpoolPosition, b: SpoolPosition): boolean {
  return a.segment < b.segment || (a.segment === b.segment && a.offset < b.offset);
}

/** Where the next record after `cursor` starts, as readBatch (spool-read.ts) walks the segments; undefined at the end. */
export function nextRecordAt(segments: readonly Segment[], cursor: SpoolPosition): SpoolPosition | undefined {
  let index = segments.findIndex((candidate) => candidate.name >= cursor.segment);
  let segment = segments[index];
  if (!segment) return undefined;
  let offset = segment.name === cursor.segment ? cursor.offset : segment.readFrom;
  while (offset >= segment.size) {
    index += 1;
    segment = segments[index];
    if (!segment) return undefined;
    offset = segment.readFrom;
  }
  return { segment: segment.name, offset };
}

export class FreshRecords {
  private queue: FreshRecord[] = [];
  private head = 0;
  private heldBytes = 0;

  constructor(
    private readonly maxRecords = MAX_FRESH_RECORDS,
    private readonly maxBytes = MAX_FRESH_BYTES,
  ) {}

  /** Frame bytes of the records kept and not yet taken. */
  get bytes(): number {
    return this.heldBytes;
  }

  get size(): number {
    return this.queue.length - this.head;
  }

  /** A group fsynced at `offset` of `segment`, in order; what does not fit under the bound stays on disk only. */
  add(segment: string, offset: number, group: ReadonlyArray<{ capture: Capture; frame: Buffer }>): void {
    let at = offset;
    for (const { capture, frame } of group) {
      const end = at + frame.length;
      if (this.size < this.maxRecords && this.heldBytes + frame.length <= this.maxBytes) {
        this.queue.push({ segment, offset: at, end, capture, bytes: frame.length });
        this.heldBytes += frame.length;
      }
      at = end;
    }
  }

  /**
   * Up to `maxRecords` records from the next one the reader would read (after `cursor`), as long as
   * each is here and is the record a disk read would meet next; undefined when the first is not.
   */
  take(segments: readonly Segment[], cursor: SpoolPosition, maxRecords: number): FreshBatch | undefined {
    const start = nextRecordAt(segments, cursor);
    if (!start) return undefined;
    // Records the reader is past (read from disk while they were here) are dropped.
    while (this.head < this.queue.length && before(this.queue[this.head]!, start)) this.heldBytes -= this.queue[this.head++]!.bytes;
    const captures: Capture[] = [];
    let next: SpoolPosition | undefined = start;
    let end = start;
    while (next && captures.length < maxRecords) {
      const record = this.queue[this.head];
      if (!record || record.segment !== next.segment || record.offset !== next.offset) break;
      captures.push(record.capture);
      this.heldBytes -= record.bytes;
      this.head += 1;
      end = { segment: record.segment, offset: record.end };
      // Within a segment the next record starts where this one ends; past its end, where the disk reader goes next.
      const following = this.queue[this.head];
      next = following && following.segment === record.segment && following.offset === record.end ? end : nextRecordAt(segments, end);
    }
    this.compact();
    if (captures.length === 0) return undefined;
    return { captures, held: new Map(), records: captures.length, start, end };
  }

  clear(): void {
    this.queue = [];
    this.head = 0;
    this.heldBytes = 0;
  }

  private compact(): void {
    if (this.head === this.queue.length) this.clear();
    else if (this.head > 1024) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
  }
}
