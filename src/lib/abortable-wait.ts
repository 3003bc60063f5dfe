// Waiting that an AbortSignal can cut short: the writer loop, the spool and the store state all
// park on these, and a stop or a drain wakes them at once.

/**
 * Resolves after `ms`, or at once when `signal` aborts. `unref`: the wait does not keep the process
 * alive (a CLI exits with its answer while a background retry still waits).
 */
export function sleep(ms: number, signal: AbortSignal, options: { unref?: boolean } = {}): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    if (options.unref) timer.unref();
    signal.addEventListener('abort', done, { once: true });
  });
}

/** Resolves when one of `waiters` is called (the owner calls them all on its event), or when `signal` aborts. */
export function waitForWake(waiters: Set<() => void>, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise<void>((resolve) => {
    const done = () => {
      waiters.delete(done);
      signal.removeEventListener('abort', done);
      resolve();
    };
    waiters.add(done);
    signal.addEventListener('abort', done, { once: true });
  });
}

/** Waits for `promise`, but no longer than `ms` (what it does after that is no longer waited for). */
export async function within(promise: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([promise, new Promise((resolve) => (timer = setTimeout(resolve, ms)))]);
  clearTimeout(timer);
}
