// What the spool cannot read is moved aside into `held/` in the spool directory, never deleted:
//   key-<key id>-<writer id>.seg   records sealed under a key the ring lacks (segment format); at
//                                  a start whose ring has that key again they go back into the
//                                  spool and are replayed into Postgres
//   unreadable-<writer id>.seg     records that fail authentication or do not decode (damaged)
//   damaged-<segment name>         a segment whose header or framing is damaged, as it was found
// Counting needs no key: a record's key id is in the clear (spool-codec.ts). The census below reads
// the directory without its lock (files are only appended to, renamed or removed whole), so
// `keys rotate` can report it while the sidecar runs.
import { constants as fsConstants } from 'node:fs';
import { copyFile, mkdir, open, readdir, readFile, rename } from 'node:fs/promises';
import path from 'node:path';
import { errorCode } from '../store/errors.js';
import { SEGMENT_MAGIC, recordCaptureId, recordKeyId, segmentRecords } from './spool-codec.js';
import { parseSegmentName, syncDirectory } from './spool-segments.js';

export const HELD_DIR = 'held';
const KEY_FILE = /^key-([A-Za-z0-9_.-]{1,64})-[0-9a-f]{16}\.seg$/;
const UNREADABLE_FILE = /^unreadable-[0-9a-f]{16}\.seg$/;
const DAMAGED_FILE = /^damaged-/;

/** Records of one read that go into one held/ file. */
export interface HeldRecords {
  frames: Buffer[];
  /** Their capture ids (those that could be read). */
  captureIds: string[];
  reason: 'key_missing' | 'unreadable';
  keyId: string | undefined;
  /** A decryption error's message (it names the key id), else the error's name only. */
  err: { name: string; message?: string };
  at: { segment: string; offset: number };
}

export const HELD_MESSAGES = {
  key_missing:
    'spool records are sealed under a key id TOKEN_TAP_KEYS lacks: moved aside into held/; add that key back (after the active one) and restart to replay them to Postgres',
  unreadable: 'spool records cannot be opened (they fail authentication or do not decode: damaged): moved aside into held/',
  still_missing: 'spool records are held for a key id TOKEN_TAP_KEYS lacks: add that key back (after the active one) and restart to replay them to Postgres',
} as const;

export function heldKeyFile(keyId: string, writerId: string): string {
  return `key-${keyId}-${writerId}.seg`;
}

export function heldUnreadableFile(writerId: string): string {
  return `unreadable-${writerId}.seg`;
}

/** The key id a held file waits for, if it is one of those. */
export function heldKeyId(name: string): string | undefined {
  return KEY_FILE.exec(name)?.[1];
}

async function heldDir(dir: string): Promise<string> {
  const held = path.join(dir, HELD_DIR);
  const created = await mkdir(held, { mode: 0o700 }).then(() => true, (error: unknown) => {
    if (errorCode(error) !== 'EEXIST') throw error;
    return false;
  });
  if (created) await syncDirectory(dir);
  return held;
}

/** Appends whole records (length prefixes included) to a held file, durably, before the spool lets go of them. */
export async function appendHeld(dir: string, name: string, frames: readonly Buffer[]): Promise<void> {
  const held = await heldDir(dir);
  const handle = await open(path.join(held, name), fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_APPEND, 0o600);
  try {
    const fresh = (await handle.stat()).size === 0;
    await handle.write(Buffer.concat([...(fresh ? [SEGMENT_MAGIC] : []), ...frames]));
    await handle.datasync();
    if (fresh) await syncDirectory(held);
  } finally {
    await handle.close();
  }
}

/** Moves a whole segment file into held/ as `damaged-<name>`. */
export async function moveAside(dir: string, name: string): Promise<string> {
  const held = await heldDir(dir);
  const target = path.join(held, `damaged-${name}`);
  await rename(path.join(dir, name), target);
  await syncDirectory(held);
  await syncDirectory(dir);
  return target;
}

/** Copies a segment file, as it is, into held/ as `damaged-<name>`, durably (the readable part stays in the spool). */
export async function copyAside(dir: string, name: string): Promise<string> {
  const held = await heldDir(dir);
  const target = path.join(held, `damaged-${name}`);
  await copyFile(path.join(dir, name), target);
  const handle = await open(target, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
  await syncDirectory(held);
  return target;
}

/** Moves a held file back into the spool directory under `name` (a segment the checkpoint does not name, so it is read). */
export async function restoreHeld(dir: string, heldName: string, name: string): Promise<void> {
  await rename(path.join(dir, HELD_DIR, heldName), path.join(dir, name));
  await syncDirectory(dir);
  await syncDirectory(path.join(dir, HELD_DIR));
}

export async function listHeld(dir: string): Promise<string[]> {
  return readdir(path.join(dir, HELD_DIR)).catch((error: unknown) => {
    if (errorCode(error) === 'ENOENT') return [];
    throw error;
  });
}

/** What held/ keeps: records per missing key id, unreadable records, damaged segments. */
export interface HeldCensus {
  keyMissing: Map<string, number>;
  unreadable: number;
  damagedSegments: number;
  /** Of the held records: a record met again (a grace segment replayed) is not held twice. */
  captureIds: Set<string>;
}

function emptyCensus(): HeldCensus {
  return { keyMissing: new Map(), unreadable: 0, damagedSegments: 0, captureIds: new Set() };
}

export async function heldCensus(dir: string): Promise<HeldCensus> {
  const census = emptyCensus();
  for (const name of await listHeld(dir)) {
    if (DAMAGED_FILE.test(name)) census.damagedSegments += 1;
    const keyId = heldKeyId(name);
    if (keyId === undefined && !UNREADABLE_FILE.test(name)) continue;
    const records = await recordsIn(path.join(dir, HELD_DIR, name));
    if (keyId !== undefined) census.keyMissing.set(keyId, (census.keyMissing.get(keyId) ?? 0) + records.length);
    else census.unreadable += records.length;
    for (const record of records) census.captureIds.add(recordCaptureId(record) ?? '');
  }
  census.captureIds.delete('');
  return census;
}

/** The records of a file; none when it went away meanwhile (the sidecar deleted or moved it). */
async function recordsIn(file: string): Promise<Buffer[]> {
  const bytes = await readFile(file).catch((error: unknown) => {
    if (errorCode(error) === 'ENOENT') return Buffer.alloc(0);
    throw error;
  });
  return segmentRecords(bytes);
}

/** Spool records per key id (segments still in the spool, the grace window's included), and what held/ keeps. */
export interface SpoolCensus {
  dir: string;
  exists: boolean;
  records: Record<string, number>;
  held: HeldCensus;
}

/** Reads a spool directory without its lock: a snapshot, as of the moment each file is read. */
export async function spoolCensus(dir: string): Promise<SpoolCensus> {
  const names = await readdir(dir).catch((error: unknown) => {
    if (errorCode(error) === 'ENOENT') return undefined;
    throw error;
  });
  const census: SpoolCensus = { dir, exists: names !== undefined, records: {}, held: emptyCensus() };
  if (!names) return census;
  for (const name of names.filter((candidate) => parseSegmentName(candidate)).sort()) {
    for (const record of await recordsIn(path.join(dir, name))) {
      const keyId = recordKeyId(record) ?? '(unreadable)';
      census.records[keyId] = (census.records[keyId] ?? 0) + 1;
    }
  }
  census.held = await heldCensus(dir);
  return census;
}
