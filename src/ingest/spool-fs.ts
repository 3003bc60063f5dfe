// File access in the spool directory that cannot be led elsewhere: every name the spool reads from
// the directory is matched against the names it writes before it is used, and no symbolic link is
// followed (O_NOFOLLOW, and a regular file checked on the open handle), so a link planted in the
// directory cannot make the sidecar read, truncate, copy or append to a file outside it. Nor can
// anything but a regular file stall it: a name is checked (lstat) before it is opened, and opened
// O_NONBLOCK, so a FIFO planted under a spool name neither blocks the open nor is read.
import { constants as fsConstants } from 'node:fs';
import { lstat, open, readdir, unlink, writeFile, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { errorCode } from '../lib/error-description.js';
import { TokenTapError } from '../lib/errors.js';

const { O_RDONLY, O_RDWR, O_WRONLY, O_CREAT, O_EXCL, O_APPEND, O_NOFOLLOW, O_NONBLOCK, O_NOCTTY } = fsConstants;
/** No link followed; no wait for a FIFO's other end, and no device taken as a terminal (a regular file is unaffected). */
const SAFE = O_NOFOLLOW | O_NONBLOCK | O_NOCTTY;
export const OPEN_READ = O_RDONLY | SAFE;
export const OPEN_READ_WRITE = O_RDWR | SAFE;
/** Appends, creating the file; never through a link. */
export const OPEN_APPEND = O_WRONLY | O_CREAT | O_APPEND | SAFE;
/** A new file only (O_EXCL neither follows a link nor reuses a file). */
export const OPEN_NEW = O_WRONLY | O_CREAT | O_EXCL | SAFE;
export const OPEN_NEW_APPEND = OPEN_NEW | O_APPEND;

/** Files the spool writes at its top level; anything else found there is left alone. */
export const SPOOL_TEMPORARY = /^(?:checkpoint|holder)\.json\.[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.tmp$/;

export class NotRegularFileError extends TokenTapError {
  override name = 'NotRegularFileError';
  readonly code = 'ENOTREGULAR';
  constructor(message: string) {
    super(message, 'failed_precondition');
  }
}

/** What a file that is not a regular one is, for messages. */
function kindOf(info: { isSymbolicLink(): boolean; isDirectory(): boolean; isFIFO(): boolean; isSocket(): boolean }): string {
  if (info.isSymbolicLink()) return 'a symbolic link';
  if (info.isDirectory()) return 'a directory';
  if (info.isFIFO()) return 'a FIFO';
  if (info.isSocket()) return 'a socket';
  return 'a device or other special file';
}

/** Opens `file` without following a link, and only if it is a regular file (checked before it is opened, and on the handle). */
export async function openRegular(file: string, flags: number, mode = 0o600): Promise<FileHandle> {
  const before = await lstat(file).catch((error: unknown) => {
    if (errorCode(error) === 'ENOENT') return undefined;
    throw error;
  });
  if (before && !before.isFile()) throw new NotRegularFileError(`${path.basename(file)} is ${kindOf(before)}, not a regular file; the spool leaves it alone`);
  const handle = await open(file, flags, mode).catch((error: unknown) => {
    // O_NOFOLLOW on a link fails with ELOOP.
    if (errorCode(error) === 'ELOOP') throw new NotRegularFileError(`${path.basename(file)} is a symbolic link; the spool does not follow links`);
    throw error;
  });
  const info = await handle.stat().catch(async (error: unknown) => {
    await handle.close().catch(() => undefined);
    throw error;
  });
  if (!info.isFile()) {
    await handle.close().catch(() => undefined);
    throw new NotRegularFileError(`${path.basename(file)} is not a regular file`);
  }
  return handle;
}

/** Another process holds the spool directory's lock (spool-lock.ts). */
export class SpoolLockedError extends TokenTapError {
  override name = 'SpoolLockedError';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 'unavailable', options);
  }
}

export class FileTooLargeError extends TokenTapError {
  override name = 'FileTooLargeError';
  readonly code = 'EFILETOOLARGE';
  constructor(message: string) {
    super(message, 'failed_precondition');
  }
}

/** The whole of a small regular file (never through a link); throws FileTooLargeError past `maxBytes`, read no further. */
export async function readRegularFile(file: string, maxBytes: number): Promise<Buffer> {
  const handle = await openRegular(file, OPEN_READ);
  try {
    const size = (await handle.stat()).size;
    if (size > maxBytes) throw new FileTooLargeError(`${path.basename(file)} is ${size} bytes, more than the ${maxBytes} it can be; it is not read`);
    // No more than its size even if it grows meanwhile (the spool replaces such files whole, by rename).
    const bytes = Buffer.alloc(size + 1);
    const length = await readAt(handle, bytes, 0, bytes.length);
    if (length > size) throw Object.assign(new Error(`${path.basename(file)} grew while it was read; it is not read`), { code: 'EFILECHANGED' });
    return bytes.subarray(0, length);
  } finally {
    await handle.close();
  }
}

/** Reads up to `length` bytes at `position` into `into` (from its start); fewer only at the end of the file. */
export async function readAt(handle: FileHandle, into: Buffer, position: number, length: number): Promise<number> {
  let done = 0;
  while (done < length) {
    const { bytesRead } = await handle.read(into, done, length - done, position + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return done;
}

/** Whether `file` is a directory itself (not a link to one); false when it does not exist. */
export async function isRealDirectory(file: string): Promise<boolean> {
  const info = await lstat(file).catch((error: unknown) => {
    if (errorCode(error) === 'ENOENT') return undefined;
    throw error;
  });
  if (info === undefined) return false;
  if (!info.isDirectory()) {
    const what = info.isFile() ? 'a regular file' : kindOf(info);
    throw new NotRegularFileError(
      `${path.basename(file)} in the spool directory ${path.dirname(file)} is ${what}, not a directory: the spool keeps what it cannot read there and does not follow links, so it does not start; move it out of the way (it is not the spool's)`,
    );
  }
  return true;
}

/** Writes a file that must not exist yet (a temporary with a random name), never through a link. */
export async function writeNewFile(file: string, data: string | Buffer): Promise<void> {
  await writeFile(file, data, { flag: OPEN_NEW, mode: 0o600 });
}

/** Writes all of `bytes` at the end of `handle` (a short write goes on where it stopped); throws when the disk takes none. */
export async function writeAll(handle: FileHandle, bytes: Buffer): Promise<void> {
  let written = 0;
  while (written < bytes.length) {
    const { bytesWritten } = await handle.write(bytes, written, bytes.length - written);
    if (bytesWritten <= 0) throw Object.assign(new Error(`short write: ${written} of ${bytes.length} bytes`), { code: 'ESHORTWRITE' });
    written += bytesWritten;
  }
}

export async function syncDirectory(dir: string): Promise<void> {
  // A new file's name is durable only once its directory is fsynced.
  const handle = await open(dir, O_RDONLY | O_NOFOLLOW);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Removes temporaries a crash left between their write and their rename (checkpoint.json.*.tmp, holder.json.*.tmp). */
export async function removeLeftTemporaries(dir: string): Promise<string[]> {
  const left = (await readdir(dir)).filter((name) => SPOOL_TEMPORARY.test(name));
  for (const name of left) await unlink(path.join(dir, name)).catch(() => undefined);
  return left;
}
