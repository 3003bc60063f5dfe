// The ext_proc Unix socket's file. A sidecar that was killed leaves its socket file behind, and a
// bind on it fails (EADDRINUSE), so a stale one is removed first; one another process still
// answers on is left alone and the bind fails as it should.
import { lstatSync, type Stats, unlinkSync } from 'node:fs';
import net from 'node:net';

function answers(socket: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = net.connect({ path: socket });
    const done = (live: boolean) => {
      probe.destroy();
      resolve(live);
    };
    probe.once('connect', () => done(true));
    probe.once('error', () => done(false));
    probe.setTimeout(500, () => done(true));
  });
}

/** Removes a socket file nobody serves; throws when the path is something else or in use. */
export async function clearStaleSocket(socket: string): Promise<void> {
  let stats: Stats;
  try {
    stats = lstatSync(socket);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw error;
  }
  if (!stats.isSocket()) throw new Error(`${socket} exists and is not a socket; remove it or choose another path`);
  if (await answers(socket)) throw new Error(`another process serves ${socket}`);
  unlinkSync(socket);
}

/**
 * After bind: the path must be the socket just made, no wider than 0660. bind(2) ran under a umask
 * of 0117, so it is; this is checked with lstat, never chmodded, because chmod follows a symlink
 * that someone able to write the socket's directory could have put there meanwhile.
 */
export function checkBoundSocket(socket: string): void {
  const stats = lstatSync(socket);
  if (!stats.isSocket()) throw new Error(`${socket} is not the socket just bound (replaced meanwhile?); keep its directory writable by the sidecar only`);
  if ((stats.mode & 0o777 & ~0o660) !== 0) {
    // bind(2) ignores the umask where the directory has a default ACL, which then sets the mode.
    throw new Error(
      `${socket} is ${(stats.mode & 0o777).toString(8)}, wider than 0660 (a default ACL on its directory?); the sidecar serves no socket others could connect to`,
    );
  }
}
