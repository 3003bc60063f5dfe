// What the spool cannot read is moved aside into `held/` in the spool directory, never deleted:
//   key-<key id>-<writer id>.seg   records sealed under a key the ring lacks (segment format); at
//                                  a start whose ring has that key again they go back into the
//                                  spool and are replayed into Postgres
//   unreadable-<writer id>.seg     records that fail authentication or do not decode (damaged)
//   damaged-<segment name>         a segment whose header or framing is damaged, as it was found
// Counting needs no key: a record's key id is in the clear (spool-codec.ts). The census below reads
// the directory without its lock (files are only appended to, renamed or removed whole), so
// `keys rotate` can report it while the sidecar runs (spool-census.ts). held/ is outside
// TOKEN_TAP_SPOOL_MAX_BYTES: token_tap_spool_held_bytes says how much it takes.
import { mkdir, readdir, rename, unlink, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { errorCode } from '../lib/error-description.js';
import { SEGMENT_MAGIC } from './spool-codec.js';
import { isRealDirectory, OPEN_APPEND, OPEN_NEW, openRegular, syncDirectory, writeAll } from './spool-fs.js';
import { copyRange } from './spool-scan.js';

export const HELD_DIR = 'held';
const KEY_FILE = /^key-([A-Za-z0-9_.-]{1,64})-[0-9a-f]{16}\.seg$/;
export const UNREADABLE_FILE = /^unreadable-[0-9a-f]{16}\.seg$/;
/** Segment names (this release's and the one before's) and `.seg.damaged` files of releases before held/. */
const MOVABLE = /^\d{20}(?:-[0-9a-f]{16})?\.seg(?:\.damaged)?$/;
export const DAMAGED_FILE = /^damaged-\d{20}(?:-[0-9a-f]{16})?\.seg(?:\.damaged)?$/;
/** The held files the spool appends records to. */
const HELD_WRITTEN = new RegExp(`${KEY_FILE.source}|${UNREADABLE_FILE.source}`);

/** Records of one read that go into one held/ file. */
export interface HeldRecords {
  frames: Buffer[];
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
  key_mismatch:
    'spool records held for a key id do not open under the key TOKEN_TAP_KEYS has under that id (other key material): they stay in held/; put the key they were sealed with back under that id and restart to replay them to Postgres',
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

/** held/, created when missing (durably); never a link to a directory elsewhere. */
async function heldDir(dir: string): Promise<string> {
  const held = path.join(dir, HELD_DIR);
  if (await isRealDirectory(held)) return held;
  const created = await mkdir(held, { mode: 0o700 }).then(
    () => true,
    (error: unknown) => {
      if (errorCode(error) !== 'EEXIST') throw error;
      return false;
    },
  );
  if (created) await syncDirectory(dir);
  else await isRealDirectory(held);
  return held;
}

/**
 * Appends whole records (length prefixes included) to a held file, durably, before the spool lets go
 * of them. All or nothing: a write the disk cuts short (a full disk) or that fails is cut back to
 * where the file was, and this throws; only then may the caller count them held.
 */
export async function appendHeld(dir: string, name: string, frames: readonly Buffer[]): Promise<void> {
  if (!HELD_WRITTEN.test(name)) throw new Error(`not a held file name: ${name}`);
  const held = await heldDir(dir);
  const file = path.join(held, name);
  const handle = await openRegular(file, OPEN_APPEND);
  let before: number | undefined;
  try {
    before = (await handle.stat()).size;
    await writeAll(handle, Buffer.concat([...(before === 0 ? [SEGMENT_MAGIC] : []), ...frames]));
    await handle.datasync();
    if (before === 0) await syncDirectory(held);
  } catch (error) {
    if (before !== undefined) {
      await handle.truncate(before).catch(() => undefined);
      await handle.datasync().catch(() => undefined);
      if (before === 0) await unlink(file).catch(() => undefined);
    }
    throw error;
  } finally {
    await handle.close();
  }
}

/** Moves a whole segment file into held/ as `damaged-<name>`. */
export async function moveAside(dir: string, name: string): Promise<string> {
  if (!MOVABLE.test(name)) throw new Error(`not a spool segment name: ${name}`);
  const held = await heldDir(dir);
  const target = path.join(held, `damaged-${name}`);
  // rename moves a link itself, never what it points to.
  await rename(path.join(dir, name), target);
  await syncDirectory(held);
  await syncDirectory(dir);
  return target;
}

/** Copies a segment (open as `source`, `bytes` long), as it was found, into held/ as `damaged-<name>`, durably (the readable part stays in the spool). */
export async function copyAside(dir: string, name: string, source: FileHandle, bytes: number): Promise<string> {
  if (!MOVABLE.test(name)) throw new Error(`not a spool segment name: ${name}`);
  const held = await heldDir(dir);
  const target = path.join(held, `damaged-${name}`);
  // A copy of an earlier start (cut short by a crash) is replaced: it is the same segment, as found then.
  await unlink(target).catch(() => undefined);
  const handle = await openRegular(target, OPEN_NEW);
  try {
    await copyRange(source, 0, bytes, handle);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await syncDirectory(held);
  return target;
}

/** The names in held/ (none when there is no held/; throws when it is a link rather than a directory). */
export async function listHeld(dir: string): Promise<string[]> {
  const held = path.join(dir, HELD_DIR);
  if (!(await isRealDirectory(held))) return [];
  return readdir(held).catch((error: unknown) => {
    if (errorCode(error) === 'ENOENT') return [];
    throw error;
  });
}
