// The ext_proc thread: a worker thread that serves Envoy's ext_proc streams and nothing else, so
// a reply never waits behind capture work (parsing, sealing, the spool, Postgres) on the main
// thread. Finished responses go to the main thread in batches, once per event-loop turn, together
// with the stream counters and log records, which the main thread owns. See thread.ts.
import { readlinkSync } from 'node:fs';
import os from 'node:os';
import { parentPort, workerData } from 'node:worker_threads';
import type { ObservedResponse } from '../capture/types.js';
import { checkBoundSocket } from './socket.js';
import { shutdownGrpcServer } from '../lib/grpc-shutdown.js';
import { createExtProcServer, extProcCredentials, type StreamLogger } from './server.js';
import type { FromExtProcThread, LogRecord, ToExtProcThread, ExtProcThreadOptions } from './thread-messages.js';
import { asError } from '../lib/errors.js';

// Envoy resets every ext_proc stream when its HTTP request ends, and Node builds an Error for each
// reset; their stack traces were 6% of this thread's CPU. Nothing here logs a stack.
Error.stackTraceLimit = 0;

const options = workerData as ExtProcThreadOptions;
const port = parentPort!;

/** This thread's Linux task id, for the ready log line (operators renice or trace it). */
function threadId(): number | undefined {
  try {
    return Number(readlinkSync('/proc/thread-self').split('/').at(-1)) || undefined;
  } catch {
    return undefined;
  }
}

let responses: ObservedResponse[] = [];
let logs: LogRecord[] = [];
let opened = 0;
let closed = 0;
let errors = 0;
let incomplete = 0;
/** Responses the main thread has not taken yet, and those dropped because of it since the last batch. */
let unacknowledged = 0;
let backlogDropped = 0;
let flushQueued = false;

function flush(): void {
  flushQueued = false;
  if (responses.length === 0 && logs.length === 0 && opened === 0 && closed === 0 && errors === 0 && incomplete === 0 && backlogDropped === 0) return;
  const message: FromExtProcThread = { type: 'batch', responses, logs, opened, closed, errors, incomplete, backlogDropped };
  unacknowledged += responses.length;
  responses = [];
  logs = [];
  opened = closed = errors = incomplete = backlogDropped = 0;
  port.postMessage(message);
}

function soon(): void {
  if (flushQueued) return;
  flushQueued = true;
  setImmediate(flush);
}

const LEVELS: Record<string, number> = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60, silent: Infinity };
const logger: StreamLogger = {
  isLevelEnabled: (level) => (LEVELS[level] ?? 0) >= (LEVELS[options.logLevel] ?? 30),
  trace(fields, message) {
    logs.push({ level: 'trace', fields, message });
    soon();
  },
  warn(fields, message) {
    logs.push({ level: 'warn', fields, message });
    soon();
  },
};

const metrics = {
  // Counted on the main thread from `opened`.
  extProcStreams: { inc: () => undefined },
  extProcStreamsOpen: {
    inc: () => {
      opened += 1;
      soon();
    },
    dec: () => {
      closed += 1;
      soon();
    },
  },
  extProcStreamErrors: {
    inc: () => {
      errors += 1;
      soon();
    },
  },
  extProcStreamsIncomplete: {
    inc: () => {
      incomplete += 1;
      soon();
    },
  },
};

// Started again after the capture thread lowered its priority, this thread inherited the lower one.
if (process.platform === 'linux' && os.getPriority(0) > options.nice) {
  try {
    os.setPriority(0, options.nice);
  } catch {
    logger.warn(
      { nice: os.getPriority(0), wanted: options.nice },
      'the ext_proc thread runs at the capture thread priority (raising it needs CAP_SYS_NICE); restart the sidecar to restore it',
    );
  }
}

const { server, setServing } = createExtProcServer({
  limits: { maxBodyBytes: options.maxBodyBytes },
  onResponse: (observed) => {
    // A main thread that cannot keep up must not grow this queue without end: past the bound
    // the response is dropped and counted (the login went on long ago).
    if (unacknowledged + responses.length >= options.maxBacklog) backlogDropped += 1;
    else responses.push(observed);
    soon();
  },
  logger,
  metrics,
});

port.on('message', (message: ToExtProcThread) => {
  if (message.type === 'ack') {
    unacknowledged = Math.max(0, unacknowledged - message.count);
    return;
  }
  if (message.type === 'health') {
    setServing(message.status === 'SERVING');
    return;
  }
  if (message.type === 'shutdown') {
    const finish = () => {
      // Streams closed by the shutdown hand their responses off on later turns (nextTick, then an
      // immediate each); two turns on, they are all in the last batch.
      setImmediate(() =>
        setImmediate(() => {
          flush();
          port.postMessage({ type: 'closed' } satisfies FromExtProcThread);
        }),
      );
    };
    void shutdownGrpcServer(server, message.graceMs).then(finish);
  }
});

server.bindAsync(options.listen, extProcCredentials(options.tls), (error, boundPort) => {
  if (!error && options.listen.startsWith('unix:')) {
    // Bound under the main thread's umask of 0117: owner and group only (Envoy shares the group).
    try {
      checkBoundSocket(options.listen.slice('unix:'.length));
    } catch (checkError) {
      port.postMessage({ type: 'bind_failed', message: `the ext_proc socket is not as bound: ${asError(checkError).message}` } satisfies FromExtProcThread);
      return;
    }
  }
  const reply: FromExtProcThread = error ? { type: 'bind_failed', message: error.message } : { type: 'listening', port: boundPort, tid: threadId() };
  port.postMessage(reply);
});
