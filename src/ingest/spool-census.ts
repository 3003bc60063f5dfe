// Counting what a spool directory holds, per key id, without its lock and without a key (a record's
// key id is in the clear, spool-codec.ts): the sidecar's count of held/ at start, and `keys rotate`'s
// report while the sidecar runs. Files there are only appended to (whole fsynced records), renamed
// or removed whole, so a count is a snapshot as of the moment each file is read.
//
// Records move between held/ and the segments while the sidecar runs: a start moves a held file back
// into the spool (rename), and a record that cannot be read is copied into held/ before its segment is
// deleted. So held/ is read before the segments and again after them, and each held file counts with
// the larger of its two reads: a record on its way in either direction is counted once or twice,
// never missed (a report of 0 under a key then means none is left).
import { lstat, readdir } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import { errorCode } from '../lib/error-description.js';
import type { IngestMetrics } from './metrics.js';
import { HEADER_BYTES, recordCaptureId, recordKeyId, segmentRecords, type Unreadable } from './spool-codec.js';
import { readRegularFile } from './spool-fs.js';
import { appendHeld, DAMAGED_FILE, HELD_DIR, HELD_MESSAGES, heldKeyFile, heldKeyId, heldUnreadableFile, listHeld, UNREADABLE_FILE, type HeldRecords } from './spool-held.js';
import { parseSegmentName } from './spool-segments.js';

/** What held/ keeps: records per key id the ring lacked, unreadable records, damaged segments. */
export interface HeldCensus {
  keyMissing: Map<string, number>;
  unreadable: number;
  damagedSegments: number;
  /** Bytes of every file in held/ (it is outside TOKEN_TAP_SPOOL_MAX_BYTES). */
  bytes: number;
  /** Of the held records: a record met again (a grace segment replayed) is not held twice. */
  captureIds: Set<string>;
}

export function emptyCensus(): HeldCensus {
  return { keyMissing: new Map(), unreadable: 0, damagedSegments: 0, bytes: 0, captureIds: new Set() };
}

interface HeldFile {
  name: string;
  bytes: number;
  records: Buffer[];
}

/** The files of held/ as they are now (one gone meanwhile is left out). */
async function readHeld(dir: string): Promise<Map<string, HeldFile>> {
  const files = new Map<string, HeldFile>();
  for (const name of await listHeld(dir)) {
    const file = path.join(dir, HELD_DIR, name);
    if (heldKeyId(name) === undefined && !UNREADABLE_FILE.test(name)) {
      // Damaged segments and anything else: their size only.
      const info = await lstat(file).catch(() => undefined);
      if (info?.isFile()) files.set(name, { name, bytes: info.size, records: [] });
      continue;
    }
    const bytes = await readSpoolFile(file);
    if (bytes !== undefined) files.set(name, { name, bytes: bytes.length, records: segmentRecords(bytes) });
  }
  return files;
}

function censusOf(files: Iterable<HeldFile>): HeldCensus {
  const census = emptyCensus();
  for (const { name, bytes, records } of files) {
    census.bytes += bytes;
    if (DAMAGED_FILE.test(name)) census.damagedSegments += 1;
    const keyId = heldKeyId(name);
    if (keyId !== undefined) census.keyMissing.set(keyId, (census.keyMissing.get(keyId) ?? 0) + records.length);
    else if (UNREADABLE_FILE.test(name)) census.unreadable += records.length;
    for (const record of records) census.captureIds.add(recordCaptureId(record) ?? '');
  }
  census.captureIds.delete('');
  return census;
}

export async function heldCensus(dir: string): Promise<HeldCensus> {
  return censusOf((await readHeld(dir)).values());
}

/** A file's bytes; undefined when it went away meanwhile, or is not a regular file (a link is not followed). */
async function readSpoolFile(file: string): Promise<Buffer | undefined> {
  return readRegularFile(file).catch((error: unknown) => {
    if (errorCode(error) === 'ENOENT' || errorCode(error) === 'ENOTREGULAR') return undefined;
    throw error;
  });
}

/** Spool records per key id (segments still in the spool, the grace window's included), and what held/ keeps. */
export interface SpoolCensus {
  dir: string;
  exists: boolean;
  records: Record<string, number>;
  held: HeldCensus;
}

/**
 * Reads a spool directory without its lock: a snapshot, as of the moment each file is read.
 * `afterSegments` runs between the segments' read and held/'s second read (tests make a move there).
 */
export async function spoolCensus(dir: string, afterSegments?: () => Promise<void>): Promise<SpoolCensus> {
  const names = await readdir(dir).catch((error: unknown) => {
    if (errorCode(error) === 'ENOENT') return undefined;
    throw error;
  });
  const census: SpoolCensus = { dir, exists: names !== undefined, records: {}, held: emptyCensus() };
  if (!names) return census;
  const heldBefore = await readHeld(dir);
  for (const name of (await readdir(dir)).filter((candidate) => parseSegmentName(candidate)).sort()) {
    for (const record of segmentRecords((await readSpoolFile(path.join(dir, name))) ?? Buffer.alloc(0))) {
      const keyId = recordKeyId(record) ?? '(unreadable)';
      census.records[keyId] = (census.records[keyId] ?? 0) + 1;
    }
  }
  await afterSegments?.();
  const held = await readHeld(dir);
  for (const [name, before] of heldBefore) {
    if (before.records.length > (held.get(name)?.records.length ?? -1)) held.set(name, before);
  }
  census.held = censusOf(held.values());
  return census;
}

/**
 * The spool's account of held/ while it runs: counted at start, then as records are moved there
 * (only once they are durably there). Gauges and logs name key ids, never key material.
 */
export class HeldLedger {
  private census = emptyCensus();
  /** Key ids in the ring whose held records do not open under it (other material under the same id). */
  private mismatched = new Set<string>();
  /** Held files this run has written to (a writer id is this run's alone, so each was new). */
  private readonly written = new Set<string>();

  constructor(
    private readonly dir: string,
    private readonly writerId: string,
    private readonly metrics: IngestMetrics,
    private readonly logger: Logger,
  ) {}

  /** Counts held/ after a start's load (held files whose key is back are in the spool again by then). */
  async load(mismatched: ReadonlySet<string>): Promise<void> {
    this.census = await heldCensus(this.dir);
    this.mismatched = new Set(mismatched);
    for (const [keyId, count] of this.census.keyMissing) {
      if (!this.mismatched.has(keyId)) this.logger.warn({ keyId, records: count }, HELD_MESSAGES.still_missing);
    }
  }

  /** Whether a record is held already (met again when a grace segment is replayed: it is kept once). */
  has(captureId: string | undefined): boolean {
    return captureId !== undefined && this.census.captureIds.has(captureId);
  }

  /** The held file of this run for a record that cannot be read. */
  fileFor(unreadable: Unreadable): string {
    return unreadable.reason === 'key_missing' ? heldKeyFile(unreadable.keyId, this.writerId) : heldUnreadableFile(this.writerId);
  }

  /** Moves records into their held files; each file's records count as held only once written and fsynced. Throws on the first failure. */
  async hold(files: ReadonlyMap<string, HeldRecords>): Promise<void> {
    for (const [file, entry] of files) {
      await appendHeld(this.dir, file, entry.frames);
      this.note(file, entry);
    }
  }

  report(): void {
    const { metrics } = this;
    for (const [keyId, count] of this.census.keyMissing) metrics.spoolRecordsHeld.set({ reason: this.mismatched.has(keyId) ? 'key_mismatch' : 'key_missing', key_id: keyId }, count);
    metrics.spoolRecordsHeld.set({ reason: 'unreadable' }, this.census.unreadable);
    metrics.spoolRecordsHeld.set({ reason: 'damaged_segment' }, this.census.damagedSegments);
    metrics.spoolHeldBytes.set(this.census.bytes);
  }

  /** Counts and logs records just moved aside (the key id, never key material; only a decryption error's message). */
  private note(file: string, entry: HeldRecords): void {
    const count = entry.frames.length;
    for (const captureId of entry.captureIds) this.census.captureIds.add(captureId);
    if (entry.reason === 'key_missing') this.census.keyMissing.set(entry.keyId!, (this.census.keyMissing.get(entry.keyId!) ?? 0) + count);
    else this.census.unreadable += count;
    this.census.bytes += entry.frames.reduce((sum, frame) => sum + frame.length, this.written.has(file) ? 0 : HEADER_BYTES);
    this.written.add(file);
    this.metrics.spoolRecordsHeldTotal.inc({ reason: entry.reason, ...(entry.reason === 'key_missing' ? { key_id: entry.keyId! } : {}) }, count);
    this.logger.error({ reason: entry.reason, keyId: entry.keyId, records: count, segment: entry.at.segment, offset: entry.at.offset, heldFile: file, err: entry.err }, HELD_MESSAGES[entry.reason]);
  }
}
