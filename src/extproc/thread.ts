// The main thread's side of the ext_proc thread (worker.ts), when TOKEN_TAP_EXTPROC_THREAD asks for
// it. Envoy's streams are served there, so replies in buffered mode never queue behind capture
// work here; bench/RESULTS.md has the numbers. Finished responses come back in batches and go to
// `onResponse`.
// Should the thread die, it is logged and started again on the same port; Envoy fails open meanwhile.
import { isMainThread, Worker } from 'node:worker_threads';
import type { Logger } from 'pino';
import type { ObservedResponse } from '../capture/types.js';
import type { ExtProcListener } from './listener.js';
import { clearStaleSocket } from './socket.js';
import type { ExtProcThreadOptions, FromExtProcThread, ToExtProcThread } from './thread-messages.js';
import { describeError } from '../lib/error-description.js';

/** A listener whose streams are served on a thread of their own; close() also ends the thread. */
export interface ExtProcThread extends ExtProcListener {
  /** The thread's Linux task id, where /proc tells it. */
  readonly tid: number | undefined;
}

/** The stream and drop counts the thread reports; the sidecar's Prometheus metrics fit. */
export interface ExtProcThreadMetrics {
  capturesDropped: { inc(labels: { reason: string }, value?: number): void };
  extProcStreams: { inc(value?: number): void };
  extProcStreamsOpen: { inc(value?: number): void; dec(value?: number): void };
  extProcStreamErrors: { inc(value?: number): void };
  extProcStreamsIncomplete: { inc(value?: number): void };
}

export interface ExtProcThreadDependencies {
  onResponse: (observed: ObservedResponse) => void;
  logger: Logger;
  metrics: ExtProcThreadMetrics;
  /** The thread's module (default ./worker.js); tests give one that fails on purpose. */
  workerUrl?: URL;
}

const WORKER_URL = new URL('./worker.js', import.meta.url);
const RESTART_DELAY_MS = 250;
/** Owner and group read and write at most: the socket is never born wider than 0660. */
const SOCKET_UMASK = 0o117;

function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

async function spawn(
  options: ExtProcThreadOptions,
  onMessage: (message: FromExtProcThread) => void,
  workerUrl: URL,
): Promise<{ worker: Worker; port: number; tid: number | undefined }> {
  // Also after a thread died: its socket file may outlive it.
  const socket = options.listen.startsWith('unix:');
  if (socket) await clearStaleSocket(options.listen.slice('unix:'.length));
  // The socket file is made by bind(2) with the process umask, and a umask of 0 would leave it 0777
  // for anyone to connect. So the umask is 0117 (at most 0660) until the thread has bound, and
  // restored then; the thread checks the result (socket.ts checkBoundSocket). Only the main thread
  // may set it (it is the process's); started from a worker, a wider socket is refused.
  const previousUmask = socket && isMainThread ? process.umask(SOCKET_UMASK) : undefined;
  let umaskRestored = false;
  const restoreUmask = () => {
    if (previousUmask === undefined || umaskRestored) return;
    umaskRestored = true;
    process.umask(previousUmask);
  };
  return new Promise<{ worker: Worker; port: number; tid: number | undefined }>((resolve, reject) => {
    const worker = new Worker(workerUrl, { workerData: options });
    const failed = (error: Error) => {
      worker.off('exit', exited);
      void worker.terminate();
      reject(error);
    };
    const exited = (code: number) => reject(new Error(`the ext_proc thread exited (code ${code}) before it listened`));
    worker.once('error', failed);
    worker.once('exit', exited);
    const first = (message: FromExtProcThread) => {
      if (message.type === 'listening') {
        worker.off('message', first).off('error', failed).off('exit', exited);
        worker.on('message', onMessage);
        resolve({ worker, port: message.port, tid: message.tid });
      } else if (message.type === 'bind_failed') {
        worker.off('message', first);
        failed(new Error(message.message));
      } else {
        // A batch from before it listened (a log line from its start).
        onMessage(message);
      }
    };
    worker.on('message', first);
  }).finally(restoreUmask);
}

export async function startExtProcThread(
  options: ExtProcThreadOptions,
  { onResponse, logger, metrics, workerUrl = WORKER_URL }: ExtProcThreadDependencies,
): Promise<ExtProcThread> {
  let status: 'SERVING' | 'NOT_SERVING' = 'NOT_SERVING';
  let closing = false;
  let restarting: Promise<void> | undefined;
  let onClosed: (() => void) | undefined;
  /** Streams the current thread reported open and not yet closed: what its death leaves open. */
  let openInThread = 0;

  const take = (observed: ObservedResponse): void => {
    try {
      onResponse({ ...observed, body: asBuffer(observed.body as Uint8Array) });
    } catch (error) {
      // A capture that cannot be taken must not take the rest of its batch (or the process) with it.
      metrics.capturesDropped.inc({ reason: 'capture_failed' });
      logger.error({ idp: observed.idp, reason: 'capture_failed', err: describeError(error) }, 'capture dropped');
    }
  };

  const onMessage = (message: FromExtProcThread): void => {
    if (message.type === 'closed') {
      onClosed?.();
      return;
    }
    if (message.type !== 'batch') return;
    if (message.opened > 0) metrics.extProcStreams.inc(message.opened);
    openInThread += message.opened - message.closed;
    metrics.extProcStreamsOpen.inc(message.opened);
    metrics.extProcStreamsOpen.dec(message.closed);
    if (message.errors > 0) metrics.extProcStreamErrors.inc(message.errors);
    if (message.incomplete > 0) metrics.extProcStreamsIncomplete.inc(message.incomplete);
    if (message.backlogDropped > 0) {
      metrics.capturesDropped.inc({ reason: 'capture_backlog_full' }, message.backlogDropped);
      logger.error(
        { dropped: message.backlogDropped, reason: 'capture_backlog_full', maxBacklog: options.maxBacklog },
        'captures dropped: the main thread is behind',
      );
    }
    for (const record of message.logs) logger[record.level](record.fields, record.message);
    for (const observed of message.responses) take(observed);
    if (message.responses.length > 0) worker.postMessage({ type: 'ack', count: message.responses.length } satisfies ToExtProcThread);
  };

  let { worker, port, tid } = await spawn(options, onMessage, workerUrl);
  let alive = true;
  const socket = options.listen.startsWith('unix:');
  if (socket) port = 0;
  const listen = socket ? options.listen : `${options.listen.slice(0, options.listen.lastIndexOf(':'))}:${port}`;

  const watch = (current: Worker): void => {
    current.on('error', (error) => logger.error({ err: { name: error.name, message: error.message } }, 'the ext_proc thread failed'));
    current.once('exit', (code) => {
      alive = false;
      // Streams it had open are gone with it.
      metrics.extProcStreamsOpen.dec(openInThread);
      openInThread = 0;
      onClosed?.();
      if (closing) return;
      logger.error({ code }, 'the ext_proc thread stopped; starting it again (Envoy fails open meanwhile)');
      restarting = restart().finally(() => (restarting = undefined));
    });
  };
  const restart = async (): Promise<void> => {
    while (!closing) {
      await new Promise((resolve) => setTimeout(resolve, RESTART_DELAY_MS));
      if (closing) return;
      try {
        const started = await spawn({ ...options, listen }, onMessage, workerUrl);
        if (closing) {
          await started.worker.terminate();
          return;
        }
        ({ worker, tid } = started);
        alive = true;
        watch(worker);
        worker.postMessage({ type: 'health', status } satisfies ToExtProcThread);
        logger.info({ listen, extProcThread: tid }, 'ext_proc thread started again');
        return;
      } catch (error) {
        logger.error({ err: describeError(error), listen }, 'cannot start the ext_proc thread again; retrying');
      }
    }
  };
  watch(worker);

  return {
    port,
    listen,
    get tid() {
      return tid;
    },
    setServing(serving) {
      status = serving ? 'SERVING' : 'NOT_SERVING';
      worker.postMessage({ type: 'health', status } satisfies ToExtProcThread);
    },
    async close(graceMs) {
      if (closing) return;
      closing = true;
      await restarting;
      const current = worker;
      if (alive) {
        // The thread answers "closed" after its last batch (or exits); the timer covers one that cannot.
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, graceMs + 1_000);
          onClosed = () => {
            clearTimeout(timer);
            resolve();
          };
          current.postMessage({ type: 'shutdown', graceMs } satisfies ToExtProcThread);
        });
      }
      await current.terminate();
    },
  };
}
