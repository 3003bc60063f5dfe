// Counting what a spool directory holds, per key id, without its lock and without a key (a record's
// key id is in the clear, spool-codec.ts): the sidecar's count of held/ at start, and `keys rotate`'s
// report while the sidecar runs. Files there are only appended to (whole fsynced records), renamed
// or removed whole, so a count is a snapshot as of the moment each file is read. Files are walked
// by their records' length prefixes (spool-scan.ts), never read whole, and only regular files are
// opened: a FIFO or a link under a spool name is a file the count does not know, said so.
//
// Records move between held/ and the segments while the sidecar runs: a start copies a held file
// back into the spool before it removes it, and a record that cannot be read is copied into held/
// before its segment is deleted. So held/ is read before the segments and again after them, and each
// held file counts with the larger of its two reads: a record on its way in either direction is
// counted once or twice, never missed (a report of 0 under a key then means none is left). What
// cannot be read (no permission, a directory under a file's name) is reported as an error of the
// count, and files the spool does not know are counted as such: the count never says 0 for a key
// whose records it could not see.
import { lstat, readdir } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import { errorCode, errorFields } from '../lib/error-description.js';
import type { IngestMetrics } from './metrics.js';
import { HEADER_BYTES, headKeyId, type Unreadable } from './spool-codec.js';
import { OPEN_READ, openRegular, SPOOL_TEMPORARY } from './spool-fs.js';
import {
  appendHeld,
  DAMAGED_FILE,
  HELD_DIR,
  HELD_MESSAGES,
  heldKeyFile,
  heldKeyId,
  heldUnreadableFile,
  listHeld,
  UNREADABLE_FILE,
  type HeldRecords,
} from './spool-held.js';
import { frameDigest, walkFile } from './spool-scan.js';
import { CHECKPOINT_FILE, parseSegmentName } from './spool-segments.js';

/** Digests of held records a start keeps (about 80 bytes each); past it, a record met again may be held twice, never lost. */
const MAX_HELD_DIGESTS = 200_000;
/** Names of unknown files a report lists at most. */
const MAX_NAMED = 20;
/** Files the spool writes at its top level besides segments and temporaries. */
const SPOOL_FILES = new Set([CHECKPOINT_FILE, 'holder.json', 'lock', HELD_DIR]);
/** Segment files of releases before held/, set aside next to themselves. */
const OLD_DAMAGED = /^\d{20}(?:-[0-9a-f]{16})?\.seg\.damaged$/;
/** A record whose key id field holds no key id. */
const NO_KEY_ID = '(unreadable)';

/** What held/ keeps: records per key id the ring lacked, unreadable records, damaged segments. */
export interface HeldCensus {
  keyMissing: Map<string, number>;
  unreadable: number;
  damagedSegments: number;
  /** Bytes of every file in held/ (it is outside TOKEN_TAP_SPOOL_MAX_BYTES). */
  bytes: number;
  /** Identities (frameDigest) of the records in held files: a record met again is held only if these bytes are not there. */
  digests: Set<string>;
  /** False when held/ had more records than `digests` keeps. */
  digestsComplete: boolean;
}

export function emptyCensus(): HeldCensus {
  return { keyMissing: new Map(), unreadable: 0, damagedSegments: 0, bytes: 0, digests: new Set(), digestsComplete: true };
}

/** A file a count could not read (the count is then incomplete). */
export interface CensusError {
  file: string;
  code?: string;
  message: string;
}

/** One file as counted. */
interface Counted {
  bytes: number;
  records: number;
  /** Records by the key id in their header. */
  byKey: Map<string, number>;
  digests?: string[];
  /** Not a regular file, or not in the segment format. */
  unknown: boolean;
  /** A regular file (one in another format may still be the spool's: a segment damaged in its header). */
  regular: boolean;
}

interface CountOptions {
  digests?: { budget: number };
  errors: CensusError[];
}

/** Counts one file's records by key id; undefined when it went away meanwhile (or could not be read: in `errors`). */
async function countFile(file: string, shown: string, options: CountOptions): Promise<Counted | undefined> {
  try {
    const handle = await openRegular(file, OPEN_READ);
    try {
      const byKey = new Map<string, number>();
      const digests: string[] | undefined = options.digests ? [] : undefined;
      const walk = await walkFile(handle, {
        digests: digests !== undefined,
        onFrame: ({ head, digest }) => {
          const keyId = headKeyId(head) ?? NO_KEY_ID;
          byKey.set(keyId, (byKey.get(keyId) ?? 0) + 1);
          if (digests && digest !== undefined && options.digests!.budget > 0) {
            digests.push(digest);
            options.digests!.budget -= 1;
          } else if (digests) options.digests!.budget = -1;
        },
      });
      const records = walk.kind === 'records' ? walk.records : 0;
      return { bytes: walk.fileBytes, records, byKey, ...(digests ? { digests } : {}), unknown: walk.kind === 'foreign', regular: true };
    } finally {
      await handle.close();
    }
  } catch (error) {
    if (errorCode(error) === 'ENOENT') return undefined;
    if (errorCode(error) === 'ENOTREGULAR') {
      const info = await lstat(file).catch(() => undefined);
      return info ? { bytes: info.size, records: 0, byKey: new Map(), unknown: true, regular: false } : undefined;
    }
    options.errors.push({ file: shown, ...errorFields(error) });
    return undefined;
  }
}

/** held/'s files, counted (one gone meanwhile is left out). `walkDamaged`: count the records of damaged segments by key id too. */
async function readHeld(dir: string, options: CountOptions & { walkDamaged: boolean }): Promise<Map<string, Counted>> {
  const files = new Map<string, Counted>();
  let names: string[];
  try {
    names = await listHeld(dir);
  } catch (error) {
    options.errors.push({ file: HELD_DIR, ...errorFields(error) });
    return files;
  }
  for (const name of names) {
    const file = path.join(dir, HELD_DIR, name);
    const written = heldKeyId(name) !== undefined || UNREADABLE_FILE.test(name);
    if (!written && DAMAGED_FILE.test(name) && !options.walkDamaged) {
      // At a start only their size matters (token_tap_spool_held_bytes).
      const info = await lstat(file).catch(() => undefined);
      if (info?.isFile()) files.set(name, { bytes: info.size, records: 0, byKey: new Map(), unknown: false, regular: true });
      continue;
    }
    const counted = await countFile(file, `${HELD_DIR}/${name}`, written ? options : { errors: options.errors });
    // A damaged segment without the spool header is still one (counted in damagedSegments).
    const damaged = DAMAGED_FILE.test(name);
    if (counted) files.set(name, { ...counted, unknown: !counted.regular || (damaged ? false : !written || counted.unknown) });
  }
  return files;
}

function add(into: Map<string, number>, from: Map<string, number>): void {
  for (const [keyId, count] of from) into.set(keyId, (into.get(keyId) ?? 0) + count);
}

function censusOf(files: Map<string, Counted>, digestsComplete: boolean): HeldCensus {
  const census = emptyCensus();
  census.digestsComplete = digestsComplete;
  for (const [name, counted] of files) {
    census.bytes += counted.bytes;
    if (DAMAGED_FILE.test(name)) census.damagedSegments += 1;
    const keyId = heldKeyId(name);
    if (keyId !== undefined) census.keyMissing.set(keyId, (census.keyMissing.get(keyId) ?? 0) + counted.records);
    else if (UNREADABLE_FILE.test(name)) census.unreadable += counted.records;
    for (const digest of counted.digests ?? []) census.digests.add(digest);
  }
  return census;
}

/** held/ counted at a start (with the identities of its records); throws when held/ cannot be read. */
async function heldCensus(dir: string): Promise<HeldCensus> {
  const errors: CensusError[] = [];
  const budget = { budget: MAX_HELD_DIGESTS };
  const files = await readHeld(dir, { digests: budget, errors, walkDamaged: false });
  if (errors.length > 0)
    throw Object.assign(new Error(`cannot count held/: ${errors.map((error) => `${error.file}: ${error.message}`).join('; ')}`), { code: errors[0]!.code });
  return censusOf(files, budget.budget >= 0);
}

/** Spool records per key id (segments still in the spool, the grace window's included), and what held/ keeps. */
export interface SpoolCensus {
  dir: string;
  exists: boolean;
  records: Record<string, number>;
  held: HeldCensus;
  /** Records by key id in damaged segments (held/damaged-*, and `.seg.damaged` files of releases before held/). */
  damaged: Record<string, number>;
  /** Files in the spool directory or held/ the spool does not know (not its names, not regular, not its format); up to 20 named. */
  unknownFiles: { count: number; names: string[]; byKey: Record<string, number> };
  /** What could not be read: the counts leave it out. */
  errors: CensusError[];
}

/**
 * Reads a spool directory without its lock: a snapshot, as of the moment each file is read. Never
 * throws for what it finds there: what it cannot read is in `errors`.
 * `afterSegments` runs between the segments' read and held/'s second read (tests make a move there).
 */
export async function spoolCensus(dir: string, afterSegments?: () => Promise<void>): Promise<SpoolCensus> {
  const census: SpoolCensus = {
    dir,
    exists: false,
    records: {},
    held: emptyCensus(),
    damaged: {},
    unknownFiles: { count: 0, names: [], byKey: {} },
    errors: [],
  };
  const errors = census.errors;
  const failed = (file: string, error: unknown) => errors.push({ file, ...errorFields(error) });
  let names: string[];
  try {
    names = (await readdir(dir)).sort();
  } catch (error) {
    if (errorCode(error) !== 'ENOENT') {
      census.exists = true;
      failed('.', error);
    }
    return census;
  }
  census.exists = true;
  const records = new Map<string, number>();
  const damaged = new Map<string, number>();
  const unknownByKey = new Map<string, number>();
  const unknown = (name: string, counted: Counted) => {
    census.unknownFiles.count += 1;
    if (census.unknownFiles.names.length < MAX_NAMED) census.unknownFiles.names.push(name);
    add(unknownByKey, counted.byKey);
  };
  const heldBefore = await readHeld(dir, { errors, walkDamaged: true });
  for (const name of names) {
    if (SPOOL_FILES.has(name) || SPOOL_TEMPORARY.test(name)) continue;
    // A volume's own (ext4 makes it at a file system's root): the spool never writes there.
    if (name === 'lost+found' && (await lstat(path.join(dir, name)).catch(() => undefined))?.isDirectory()) continue;
    const counted = await countFile(path.join(dir, name), name, { errors });
    if (!counted) continue;
    if (parseSegmentName(name) && !counted.unknown) add(records, counted.byKey);
    else if (OLD_DAMAGED.test(name) && !counted.unknown) add(damaged, counted.byKey);
    else unknown(name, counted);
  }
  await afterSegments?.();
  const held = await readHeld(dir, { errors, walkDamaged: true });
  for (const [name, before] of heldBefore) {
    if (before.records > (held.get(name)?.records ?? -1)) held.set(name, before);
  }
  for (const [name, counted] of held) {
    if (counted.unknown) unknown(`${HELD_DIR}/${name}`, counted);
    else if (DAMAGED_FILE.test(name)) add(damaged, counted.byKey);
  }
  census.held = censusOf(held, true);
  census.records = Object.fromEntries(records);
  census.damaged = Object.fromEntries(damaged);
  census.unknownFiles.byKey = Object.fromEntries(unknownByKey);
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
  /** Records of a hold that failed part way: written already, so not written again when the read is tried again. */
  private readonly partlyHeld = new Set<string>();

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
    if (!this.census.digestsComplete) {
      this.logger.warn(
        { kept: MAX_HELD_DIGESTS },
        'held/ holds more records than a start keeps track of: a record met again in a replayed segment may be held twice (never lost)',
      );
    }
    for (const [keyId, count] of this.census.keyMissing) {
      if (!this.mismatched.has(keyId)) this.logger.warn({ keyId, records: count }, HELD_MESSAGES.still_missing);
    }
  }

  /**
   * Whether these exact record bytes (length prefix included) are held already: met again when a
   * grace segment is replayed, or after a hold failed part way. Only the same bytes count: a record
   * merely naming the same capture id (one planted in held/) is held all the same.
   */
  has(frame: Buffer): boolean {
    const digest = frameDigest(frame);
    return this.census.digests.has(digest) || this.partlyHeld.has(digest);
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
      for (const frame of entry.frames) this.partlyHeld.add(frameDigest(frame));
    }
    // All held: the reader moves past them and does not meet them again this run.
    this.partlyHeld.clear();
  }

  report(): void {
    const { metrics } = this;
    for (const [keyId, count] of this.census.keyMissing)
      metrics.spoolRecordsHeld.set({ reason: this.mismatched.has(keyId) ? 'key_mismatch' : 'key_missing', key_id: keyId }, count);
    metrics.spoolRecordsHeld.set({ reason: 'unreadable' }, this.census.unreadable);
    metrics.spoolRecordsHeld.set({ reason: 'damaged_segment' }, this.census.damagedSegments);
    metrics.spoolHeldBytes.set(this.census.bytes);
  }

  /** Counts and logs records just moved aside (the key id, never key material; only a decryption error's message). */
  private note(file: string, entry: HeldRecords): void {
    const count = entry.frames.length;
    if (entry.reason === 'key_missing') this.census.keyMissing.set(entry.keyId!, (this.census.keyMissing.get(entry.keyId!) ?? 0) + count);
    else this.census.unreadable += count;
    this.census.bytes += entry.frames.reduce((sum, frame) => sum + frame.length, this.written.has(file) ? 0 : HEADER_BYTES);
    this.written.add(file);
    this.metrics.spoolRecordsHeldTotal.inc({ reason: entry.reason, ...(entry.reason === 'key_missing' ? { key_id: entry.keyId! } : {}) }, count);
    this.logger.error(
      { reason: entry.reason, keyId: entry.keyId, records: count, segment: entry.at.segment, offset: entry.at.offset, heldFile: file, err: entry.err },
      HELD_MESSAGES[entry.reason],
    );
  }
}
