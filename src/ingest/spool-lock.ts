// One sidecar per spool directory, whatever namespaces or hosts share it: two writers would each
// trust a checkpoint the other does not know of.
//
// The lock is an OS file lock (flock(2)) on `lock` in the directory, so it holds wherever the
// directory does: across network, PID and mount namespaces (containers of one pod, or two pods that
// mount one volume) and, on NFS, across hosts (Linux maps flock to NFS byte-range locks). Node has
// no flock API; the lock is held by a child process of util-linux flock(1) (`flock --nonblock
// --exclusive --close -- <lock> cat`, both from /usr/bin:/bin, no inherited env), whose `cat` reads a pipe: when
// this process dies, however it dies (SIGKILL, OOM kill), the kernel closes the pipe, `cat` ends,
// then flock(1), and the lock goes with it. No stale lock and no PID to trust. `--close`: only flock(1)
// holds the lock, not `cat`, so when flock(1) alone dies the lock is free at once for this process
// to take again (a `cat` holding it on would refuse that re-take). The child runs in a process group
// of its own, so a Ctrl-C meant for the sidecar cannot end it before the spool is flushed.
//
// Should flock(1) end while the sidecar runs (killed by hand, the OOM killer), the lock is taken
// again at once, retried for a few seconds while holder.json still names this run. Meanwhile the
// spool writes nothing (whenHeld). If another process took it, the directory is no longer this
// run's: onGone, and the spool stops (spool.ts). A native module (fs-ext and the like) would do the
// same in-process, at the price of a compiled addon per Node ABI in the image; flock(1) is in every
// Debian image (util-linux is Essential; the Dockerfile checks /usr/bin/flock and /bin/cat).
// Elsewhere than Linux (a developer's laptop) a PID file is all there is.
//
// `holder.json` names the holder for people and for a refused starter (writer id, pid, hostname,
// since); it is never the lock. The `lock` file is never removed or replaced: a lock on a file
// that is then unlinked protects nothing.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { accessSync, constants as fsConstants } from 'node:fs';
import { hostname } from 'node:os';
import { readFile, realpath, rename, stat, unlink, writeFile } from 'node:fs/promises';
import type { Socket } from 'node:net';
import path from 'node:path';
import type { Logger } from 'pino';
import { errorCode, errorFields } from '../lib/error-description.js';
import { OPEN_APPEND, openRegular, readRegularFile, SpoolLockedError, writeNewFile } from './spool-fs.js';
import { asError } from '../lib/errors.js';
import { sleep } from '../lib/abortable-wait.js';

const LOCK_FILE = 'lock';
export const HOLDER_FILE = 'holder.json';
/** flock(1)'s exit code when the lock is held elsewhere (--conflict-exit-code). */
const CONFLICT_EXIT = 75;
const LOCK_ANSWER_MS = 10_000;
const HOLDER_WAIT_MS = 1_000;
/** How long a lost lock is tried again while holder.json still names this run. */
const RETAKE_MS = 3_000;
/** holder.json is a line of JSON (~150 bytes); anything much larger is not one. */
const MAX_HOLDER_BYTES = 4096;
/**
 * flock(1) and cat(1) come from the system's own directories, never from the sidecar's PATH, and
 * run with nothing of its environment (TOKEN_TAP_KEYS, DATABASE_URL stay in this process).
 */
const CHILD_PATH = '/usr/bin:/bin';
const CHILD_ENV = { PATH: CHILD_PATH };

/** `name` in CHILD_PATH's directories (found once); the bare name (spawn then fails with ENOENT) when none has it. */
function systemProgram(name: string): string {
  for (const dir of CHILD_PATH.split(':')) {
    const candidate = path.join(dir, name);
    try {
      accessSync(candidate, fsConstants.X_OK);
      return candidate;
    } catch {
      // not here (or not executable): try the next directory
    }
  }
  return path.join(CHILD_PATH.split(':')[0]!, name);
}
let programs: { flock: string; cat: string } | undefined;
/** Longest holder.json string a message quotes. */
const MAX_SHOWN = 100;

/** A holder.json string as a message may quote it: control and format characters out (no forged log lines), bounded. */
function shown(value: string): string {
  const clean = value.replace(/[\p{Cc}\p{Cf}\u2028\u2029]/gu, '?');
  return clean.length > MAX_SHOWN ? `${clean.slice(0, MAX_SHOWN)}...` : clean;
}

/** Who owns the spool this run: a random id per run, and where it runs. */
export interface SpoolWriter {
  id: string;
  pid: number;
  hostname: string;
  since: string;
}

export interface SpoolLock {
  readonly writer: SpoolWriter;
  /** Whether this run holds the lock now (not while it is being taken again, nor once it is gone). */
  readonly held: boolean;
  /** True once the lock is held (at once when it is); false once it is gone for good or released. */
  whenHeld(): Promise<boolean>;
  /** Whether the directory is still this run's: the lock held and holder.json naming no other writer. */
  stillOurs(): Promise<boolean>;
  /** Lets the next sidecar take the directory. */
  release(): Promise<void>;
}

export interface SpoolLockEvents {
  /** The process holding the lock ended without release(): it is being taken again. */
  onLost?(problem: string): void;
  /** Taken again after onLost. */
  onRetaken?(): void;
  /** It cannot be taken again, or another writer is named in holder.json: the directory is not this run's any more. */
  onGone?(problem: string): void;
}

/** The events of a lock, logged; `onGone` is told why the directory is not this run's any more. */
export function loggedLockEvents(logger: Logger, dir: string, onGone: (problem: string) => void): SpoolLockEvents {
  return {
    onLost: (problem) => logger.error({ spool: dir, problem }, 'the spool directory lock was lost; taking it again (the spool writes nothing meanwhile)'),
    onRetaken: () => logger.warn({ spool: dir }, 'the spool directory lock is held again; the spool goes on'),
    onGone,
  };
}

/** How a lock is held, whatever holds it. */
interface Holding {
  readonly held: boolean;
  whenHeld(): Promise<boolean>;
  /** The directory is not this run's any more (holder.json names another writer); the caller tells onGone. */
  gone(): void;
  release(): Promise<void>;
}

function newWriter(): SpoolWriter {
  return { id: randomBytes(8).toString('hex'), pid: process.pid, hostname: hostname(), since: new Date().toISOString() };
}

function cannotLock(dir: string, error: unknown): Error {
  return new Error(`cannot lock the spool directory ${dir} (TOKEN_TAP_SPOOL_DIR): ${errorFields(error).message}`, { cause: error });
}

const lockedInThisProcess = new Set<string>();

/**
 * Takes the directory for this run, or throws SpoolLockedError naming the holder. `events` hear of
 * a lock whose holder process ended without release(), taken again or gone (see above).
 */
export async function takeSpoolLock(dir: string, events: SpoolLockEvents = {}): Promise<SpoolLock> {
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
  let holding: Holding;
  const holderFile = path.join(dir, HOLDER_FILE);
  const nameHolder = () => writeAtomically(holderFile, `${JSON.stringify(writer)}\n`).catch(() => undefined);
  if (process.platform === 'linux') {
    // Created if missing; never through a link (flock(1) then opens the same regular file).
    await (await openRegular(lockFile, OPEN_APPEND).catch((error: unknown) => Promise.reject(cannotLock(dir, error)))).close();
    holding = await holdFlock(dir, lockFile, writer, { ...events, onRetaken: () => void nameHolder().then(() => events.onRetaken?.()) });
  } else {
    holding = await holdPidFile(dir, lockFile);
  }
  lockedInThisProcess.add(identity);
  await nameHolder();
  let released = false;
  return {
    writer,
    get held() {
      return !released && holding.held;
    },
    whenHeld: () => (released ? Promise.resolve(false) : holding.whenHeld()),
    async stillOurs() {
      if (released || !holding.held) return false;
      const named = await readHolder(dir);
      if (named === undefined || named.id === writer.id) return holding.held;
      const problem = `${HOLDER_FILE} names another writer (${shown(named.id)}, pid ${named.pid} on host ${shown(named.hostname)}, since ${shown(named.since)})`;
      holding.gone();
      events.onGone?.(problem);
      return false;
    },
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

async function holdFlock(dir: string, lockFile: string, writer: SpoolWriter, events: SpoolLockEvents): Promise<Holding> {
  let child = await startFlock(dir, lockFile);
  let state: 'held' | 'retaking' | 'gone' | 'released' = 'held';
  const waiters = new Set<(held: boolean) => void>();
  const settle = (held: boolean): void => {
    for (const wake of [...waiters]) wake(held);
    waiters.clear();
  };
  /** Gone for good; `problem` is told to onGone unless the caller tells it. */
  const lose = (problem?: string): void => {
    if (state === 'gone' || state === 'released') return;
    state = 'gone';
    settle(false);
    if (problem !== undefined) events.onGone?.(problem);
  };
  const retake = async (problem: string): Promise<void> => {
    state = 'retaking';
    events.onLost?.(problem);
    const deadline = Date.now() + RETAKE_MS;
    for (let delay = 10; ; delay = Math.min(2 * delay, 250)) {
      let failure: unknown;
      try {
        const again = await startFlock(dir, lockFile);
        if (state !== 'retaking') {
          await stopFlock(again);
          return;
        }
        // Free, but another writer named itself meanwhile: it had the directory, and what it did there is unknown.
        const named = await readHolder(dir);
        if (named && named.id !== writer.id) {
          await stopFlock(again);
          lose(`the spool lock was taken by another writer (${shown(named.id)}, pid ${named.pid} on host ${shown(named.hostname)}) while this one had lost it`);
          return;
        }
        if (again.exitCode !== null || again.signalCode !== null) throw new Error('flock(1) ended as soon as it had the lock');
        child = again;
        watch(again);
        state = 'held';
        settle(true);
        events.onRetaken?.();
        return;
      } catch (error) {
        failure = error;
      }
      if (state !== 'retaking') return;
      // Refused while holder.json names this run: a process of this run may still hold it a moment longer.
      const named = await readHolder(dir);
      if (named && named.id !== writer.id) {
        lose(`the spool lock this sidecar lost (its flock(1) ended) is held by writer ${shown(named.id)}, pid ${named.pid} on host ${shown(named.hostname)}, since ${shown(named.since)}`);
        return;
      }
      if (Date.now() >= deadline) {
        const why = failure instanceof SpoolLockedError ? 'another process holds it (it has not named itself in holder.json)' : asError(failure).message;
        lose(`the spool lock this sidecar lost (its flock(1) ended) cannot be taken again within ${RETAKE_MS / 1000} s: ${why}`);
        return;
      }
      await sleep(delay);
    }
  };
  const watch = (running: ChildProcess): void => {
    running.once('exit', (code, signal) => {
      if (state !== 'held' || running !== child) return;
      void retake(`the flock(1) process holding the spool lock ended (${signal ?? `exit ${code}`})`);
    });
  };
  watch(child);
  return {
    get held() {
      return state === 'held';
    },
    whenHeld() {
      if (state === 'held') return Promise.resolve(true);
      if (state !== 'retaking') return Promise.resolve(false);
      return new Promise<boolean>((resolve) => waiters.add(resolve));
    },
    gone: () => lose(),
    async release() {
      state = 'released';
      settle(false);
      await stopFlock(child);
    },
  };
}

/** Starts flock(1) on the lock file; resolves once it holds the lock (its `cat` echoes our line). */
function startFlock(dir: string, lockFile: string): Promise<ChildProcess> {
  return new Promise((resolve, reject) => {
    // --close: the lock is flock(1)'s alone; `cat` (which outlives a killed flock(1) until its pipe closes) does not hold it.
    // `--`: a lock path is never taken for an option.
    programs ??= { flock: systemProgram('flock'), cat: systemProgram('cat') };
    const args = ['--nonblock', '--exclusive', '--close', '--conflict-exit-code', String(CONFLICT_EXIT), '--', path.resolve(lockFile), programs.cat];
    const child = spawn(programs.flock, args, { stdio: ['pipe', 'pipe', 'pipe'], detached: true, env: CHILD_ENV });
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
    const parsed = JSON.parse((await readRegularFile(path.join(dir, HOLDER_FILE), MAX_HOLDER_BYTES)).toString('utf8')) as Partial<SpoolWriter>;
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
    await sleep(50);
    holder = await readHolder(dir);
  }
  const who = holder ? `pid ${holder.pid} on host ${shown(holder.hostname)}, since ${shown(holder.since)}, writer ${shown(holder.id)}` : `holder unknown: ${HOLDER_FILE} names none`;
  return new SpoolLockedError(`the spool directory ${dir} is in use by another live token-tap (${who}): give each sidecar its own TOKEN_TAP_SPOOL_DIR`);
}

async function writeAtomically(file: string, text: string): Promise<void> {
  const temporary = `${file}.${randomUUID()}.tmp`;
  try {
    await writeNewFile(temporary, text);
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
async function holdPidFile(dir: string, file: string): Promise<Holding> {
  let state: 'held' | 'gone' | 'released' = 'held';
  const release: Holding = {
    get held() {
      return state === 'held';
    },
    whenHeld: async () => state === 'held',
    gone: () => {
      if (state === 'held') state = 'gone';
    },
    release: async () => {
      const was = state;
      state = 'released';
      // Gone: the file may be the next holder's by now.
      if (was === 'held') await unlink(file).catch(() => undefined);
    },
  };
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
