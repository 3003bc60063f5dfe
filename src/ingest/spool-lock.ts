// One sidecar per spool directory, whatever namespaces or hosts share it: two writers would each
// trust a checkpoint the other does not know of.
//
// The lock is an OS file lock (flock(2)) on `lock` in the directory, so it holds wherever the
// directory does: across network, PID and mount namespaces (containers of one pod, or two pods that
// mount one volume) and, on NFS, across hosts (Linux maps flock to NFS byte-range locks). Node has
// no flock API; the lock is held by a child process of util-linux flock(1)
// (`flock --nonblock --exclusive lock cat`), whose `cat` reads a pipe from this process: when this
// process dies, however it dies (SIGKILL, OOM kill), the kernel closes the pipe, `cat` ends and the
// lock goes with it. No stale lock and no PID to trust. The child runs in a process group of its
// own, so a Ctrl-C meant for the sidecar cannot end it before the spool is flushed. A native module
// (fs-ext and the like) would do the same in-process, at the price of a compiled addon per Node
// ABI in the image; flock(1) is in every Debian image (util-linux is Essential; the Dockerfile
// checks it). Elsewhere than Linux (a developer's laptop) a PID file is all there is.
//
// `holder.json` names the holder for people and for a refused starter (writer id, pid, hostname,
// since); it is never the lock. The `lock` file is never removed or replaced: a lock on a file
// that is then unlinked protects nothing.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { open, readFile, realpath, rename, stat, unlink, writeFile } from 'node:fs/promises';
import type { Socket } from 'node:net';
import path from 'node:path';
import { errorCode } from '../store/errors.js';

const LOCK_FILE = 'lock';
export const HOLDER_FILE = 'holder.json';
/** flock(1)'s exit code when the lock is held elsewhere (--conflict-exit-code). */
const CONFLICT_EXIT = 75;
const LOCK_ANSWER_MS = 10_000;
const HOLDER_WAIT_MS = 1_000;

/** Who owns the spool this run: a random id per run, and where it runs. */
export interface SpoolWriter {
  id: string;
  pid: number;
  hostname: string;
  since: string;
}

export interface SpoolLock {
  readonly writer: SpoolWriter;
  /** Lets the next sidecar take the directory. */
  release(): Promise<void>;
}

export class SpoolLockedError extends Error {
  override name = 'SpoolLockedError';
}

export function newWriter(): SpoolWriter {
  return { id: randomBytes(8).toString('hex'), pid: process.pid, hostname: hostname(), since: new Date().toISOString() };
}

function cannotLock(dir: string, error: unknown): Error {
  const message = (error as Error)?.message ?? String(error);
  return new Error(`cannot lock the spool directory ${dir} (TOKEN_TAP_SPOOL_DIR): ${message}`, { cause: error });
}

const lockedInThisProcess = new Set<string>();

/**
 * Takes the directory for this run, or throws SpoolLockedError naming the holder. `onLost` hears
 * of a lock whose holder process ended without release() (it is taken again when it can be).
 */
export async function takeSpoolLock(dir: string, onLost: (problem: string) => void = () => undefined): Promise<SpoolLock> {
  let identity: string;
  try {
    const real = await realpath(dir);
    const info = await stat(real);
    identity = `${info.dev}:${info.ino}`;
  } catch (error) {
    throw cannotLock(dir, error);
  }
  if (lockedInThisProcess.has(identity)) throw new SpoolLockedError(`the spool directory ${dir} is in use by another sidecar in this process: give each its own TOKEN_TAP_SPOOL_DIR`);
  const writer = newWriter();
  const lockFile = path.join(dir, LOCK_FILE);
  let holding: { release(): Promise<void> };
  if (process.platform === 'linux') {
    await (await open(lockFile, 'a', 0o600).catch((error: unknown) => Promise.reject(cannotLock(dir, error)))).close();
    holding = await holdFlock(dir, lockFile, onLost);
  } else {
    holding = await holdPidFile(dir, lockFile);
  }
  lockedInThisProcess.add(identity);
  const holderFile = path.join(dir, HOLDER_FILE);
  await writeAtomically(holderFile, `${JSON.stringify(writer)}\n`).catch(() => undefined);
  let released = false;
  return {
    writer,
    async release() {
      if (released) return;
      released = true;
      // Before the lock goes: once it is free, the file may already be the next holder's.
      const named = await readHolder(dir);
      if (named?.id === writer.id) await unlink(holderFile).catch(() => undefined);
      lockedInThisProcess.delete(identity);
      await holding.release();
    },
  };
}

async function holdFlock(dir: string, lockFile: string, onLost: (problem: string) => void): Promise<{ release(): Promise<void> }> {
  let child = await startFlock(dir, lockFile);
  let released = false;
  const watch = (running: ChildProcess): void => {
    running.once('exit', (code, signal) => {
      if (released) return;
      onLost(`the flock(1) process holding the spool lock ended (${signal ?? `exit ${code}`})`);
      // Taken again if nobody else took it meanwhile; otherwise the next start will say who has it.
      startFlock(dir, lockFile).then(
        (again) => {
          if (released) void stopFlock(again);
          else watch((child = again));
        },
        (error: Error) => onLost(error.message),
      );
    });
  };
  watch(child);
  return {
    async release() {
      released = true;
      await stopFlock(child);
    },
  };
}

/** Starts flock(1) on the lock file; resolves once it holds the lock (its `cat` echoes our line). */
function startFlock(dir: string, lockFile: string): Promise<ChildProcess> {
  return new Promise((resolve, reject) => {
    const child = spawn('flock', ['--nonblock', '--exclusive', '--conflict-exit-code', String(CONFLICT_EXIT), lockFile, 'cat'], {
      stdio: ['pipe', 'pipe', 'pipe'],
      detached: true,
    });
    let stderr = '';
    let settled = false;
    const settle = (outcome: () => void): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      outcome();
    };
    const timer = setTimeout(() => settle(() => {
      child.kill('SIGKILL');
      reject(cannotLock(dir, new Error(`flock(1) did not answer within ${LOCK_ANSWER_MS} ms`)));
    }), LOCK_ANSWER_MS);
    child.stdin!.on('error', () => undefined);
    child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.stdout!.once('data', () => settle(() => {
      // The lock must not keep the process alive, nor its pipes.
      child.unref();
      for (const stream of [child.stdin, child.stdout, child.stderr]) (stream as unknown as Socket).unref();
      resolve(child);
    }));
    child.once('error', (error) => settle(() => {
      const hint = errorCode(error) === 'ENOENT' ? ': flock(1) is not installed (util-linux)' : '';
      reject(cannotLock(dir, new Error(`${error.message}${hint}`)));
    }));
    child.once('exit', (code, signal) => settle(() => {
      if (code === CONFLICT_EXIT) void refusal(dir).then(reject);
      else reject(cannotLock(dir, new Error(`flock(1) ended (${signal ?? `exit ${code}`}) ${stderr.trim()}`.trim())));
    }));
    child.stdin!.write('locked\n');
  });
}

async function stopFlock(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  // End of input ends `cat`, then flock(1), and the lock with them.
  child.stdin!.end();
  const timer = setTimeout(() => child.kill('SIGKILL'), 2_000);
  await exited;
  clearTimeout(timer);
}

async function readHolder(dir: string): Promise<SpoolWriter | undefined> {
  try {
    const parsed = JSON.parse(await readFile(path.join(dir, HOLDER_FILE), 'utf8')) as Partial<SpoolWriter>;
    if (typeof parsed.id === 'string' && Number.isSafeInteger(parsed.pid) && typeof parsed.hostname === 'string' && typeof parsed.since === 'string') return parsed as SpoolWriter;
  } catch {
    // Missing (the holder is starting) or not ours to read.
  }
  return undefined;
}

/** The refusal, naming the holder from holder.json (waiting briefly for a holder that is just starting). */
async function refusal(dir: string): Promise<SpoolLockedError> {
  let holder = await readHolder(dir);
  for (let waited = 0; !holder && waited < HOLDER_WAIT_MS; waited += 50) {
    await new Promise((resolve) => setTimeout(resolve, 50));
    holder = await readHolder(dir);
  }
  const who = holder ? `pid ${holder.pid} on host ${holder.hostname}, since ${holder.since}, writer ${holder.id}` : `holder unknown: ${HOLDER_FILE} names none`;
  return new SpoolLockedError(`the spool directory ${dir} is in use by another live token-tap (${who}): give each sidecar its own TOKEN_TAP_SPOOL_DIR`);
}

async function writeAtomically(file: string, text: string): Promise<void> {
  const temporary = `${file}.${randomUUID()}.tmp`;
  try {
    await writeFile(temporary, text, { mode: 0o600 });
    await rename(temporary, file);
  } catch (error) {
    await unlink(temporary).catch(() => undefined);
    throw error;
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return errorCode(error) === 'EPERM';
  }
}

/** Not Linux: a PID file (weaker: a reused PID blocks the start, and two starters can race). */
async function holdPidFile(dir: string, file: string): Promise<{ release(): Promise<void> }> {
  const release = { release: () => unlink(file).catch(() => undefined) };
  try {
    await writeFile(file, `${process.pid}\n`, { flag: 'wx', mode: 0o600 });
    return release;
  } catch (error) {
    if (errorCode(error) !== 'EEXIST') throw cannotLock(dir, error);
  }
  const holder = Number.parseInt(await readFile(file, 'utf8').catch(() => ''), 10);
  if (Number.isSafeInteger(holder) && holder > 0 && holder !== process.pid && processAlive(holder)) throw await refusal(dir);
  // Left by a process that is gone (a crash or SIGKILL): take it over.
  await writeFile(file, `${process.pid}\n`, { mode: 0o600 });
  return release;
}
