// File access in the spool directory that cannot be led elsewhere: every name the spool reads from
// the directory is matched against the names it writes before it is used, and no symbolic link is
// followed (O_NOFOLLOW, and a regular file checked on the open handle), so a link planted in the
// directory cannot make the sidecar read, truncate, copy or append to a file outside it.
import { constants as fsConstants } from 'node:fs';
import { lstat, open, readdir, unlink, writeFile, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { errorCode } from '../lib/error-description.js';

const { O_RDONLY, O_RDWR, O_WRONLY, O_CREAT, O_EXCL, O_APPEND, O_NOFOLLOW } = fsConstants;
export const OPEN_READ = O_RDONLY | O_NOFOLLOW;
export const OPEN_READ_WRITE = O_RDWR | O_NOFOLLOW;
/** Appends, creating the file; never through a link. */
export const OPEN_APPEND = O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW;
/** A new file only (O_EXCL neither follows a link nor reuses a file). */
export const OPEN_NEW = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW;
export const OPEN_NEW_APPEND = OPEN_NEW | O_APPEND;

/** Files the spool writes at its top level; anything else found there is left alone. */
export const SPOOL_TEMPORARY = /^(?:checkpoint|holder)\.json\.[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.tmp$/;

export class NotRegularFileError extends Error {
  override name = 'NotRegularFileError';
  readonly code = 'ENOTREGULAR';
}

/** Opens `file` without following a link, and only if it is a regular file. */
export async function openRegular(file: string, flags: number, mode = 0o600): Promise<FileHandle> {
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

/** The whole of a regular file (never through a link). */
export async function readRegularFile(file: string): Promise<Buffer> {
  const handle = await openRegular(file, OPEN_READ);
  try {
    return await handle.readFile();
  } finally {
    await handle.close();
  }
}

/** Whether `file` is a directory itself (not a link to one); false when it does not exist. */
export async function isRealDirectory(file: string): Promise<boolean> {
  const info = await lstat(file).catch((error: unknown) => {
    if (errorCode(error) === 'ENOENT') return undefined;
    throw error;
  });
  if (info === undefined) return false;
  if (!info.isDirectory()) throw new NotRegularFileError(`${path.basename(file)} in the spool directory is not a directory (a link?); the spool does not follow links`);
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
