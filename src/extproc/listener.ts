// The ext_proc listener: Envoy's ExternalProcessor service and grpc.health.v1 on one grpc-js
// server, on a Unix socket or a TCP address, on the sidecar's main thread. By default that is the
// sidecar's only thread: a second V8 isolate costs ~20 MB of every pod's memory, and observability
// mode needs no replies at all; capture work waits in the intake (ingest/intake.ts) until the
// response has gone by, and runs in slices. In buffered mode on a busy sidecar, replies queue
// behind those slices; TOKEN_TAP_EXTPROC_THREAD moves the streams to a thread of their own
// (thread.ts, worker.ts), with the same interface.
import type * as grpc from '@grpc/grpc-js';
import type { ObservedResponse } from '../capture/types.js';
import { createExtProcServer, extProcCredentials, type StreamLogger, type StreamMetrics } from './server.js';
import { checkBoundSocket, clearStaleSocket } from './socket.js';
import { shutdownGrpcServer } from '../lib/grpc-shutdown.js';
import { asError } from '../lib/errors.js';

export interface ExtProcListenerOptions {
  /** host:port to bind (port 0 picks a free one), or unix:/path. */
  listen: string;
  /** PEM: ext_proc speaks TLS; with clientCa, Envoy must present a certificate it signed. */
  tls?: { cert: Buffer; key: Buffer; clientCa?: Buffer | undefined } | undefined;
  maxBodyBytes: number;
}

export interface ExtProcListenerDependencies {
  onResponse: (observed: ObservedResponse) => void;
  logger: StreamLogger;
  metrics: StreamMetrics;
  /** How the bound socket is checked (socket.ts checkBoundSocket); tests pass one that does nothing, to see bind's own mode. */
  checkSocket?: (path: string) => void;
}

export interface ExtProcListener {
  /** The Linux task id of the thread serving the streams, when it is a thread of its own (TOKEN_TAP_EXTPROC_THREAD). */
  readonly tid?: number | undefined;
  /** The bound port (the one asked for, or the one picked for port 0); 0 on a Unix socket. */
  readonly port: number;
  /** What it listens on: host:port with the bound port, or unix:/path. */
  readonly listen: string;
  /** What grpc.health.v1 on the ext_proc port answers. */
  setServing(serving: boolean): void;
  /** Stops taking streams and gives open ones `graceMs`; their responses are handed over before it resolves. */
  close(graceMs: number): Promise<void>;
}

/** Owner and group read and write at most: the socket is never born wider than 0660. */
const SOCKET_UMASK = 0o117;

function bind(server: grpc.Server, listen: string, creds: grpc.ServerCredentials): Promise<number> {
  return new Promise((resolve, reject) => server.bindAsync(listen, creds, (error, port) => (error ? reject(error) : resolve(port))));
}

export async function startExtProcListener(options: ExtProcListenerOptions, dependencies: ExtProcListenerDependencies): Promise<ExtProcListener> {
  const { onResponse, logger, metrics, checkSocket = checkBoundSocket } = dependencies;
  const socket = options.listen.startsWith('unix:') ? options.listen.slice('unix:'.length) : undefined;
  // A killed sidecar leaves its socket file behind.
  if (socket) await clearStaleSocket(socket);

  const { server, setServing } = createExtProcServer({ limits: { maxBodyBytes: options.maxBodyBytes }, onResponse, logger, metrics });

  // bind(2) makes the socket file with the process umask, and a umask of 0 would leave it 0777 for
  // anyone to connect. So the umask is 0117 (at most 0660) while binding, and restored then.
  const previousUmask = socket ? process.umask(SOCKET_UMASK) : undefined;
  let port: number;
  try {
    port = await bind(server, options.listen, extProcCredentials(options.tls));
  } finally {
    if (previousUmask !== undefined) process.umask(previousUmask);
  }
  if (socket) {
    // Owner and group only: Envoy shares the group (the pod's fsGroup, compose's ENVOY_GID).
    try {
      checkSocket(socket);
    } catch (error) {
      server.forceShutdown();
      throw new Error(`the ext_proc socket is not as bound: ${asError(error).message}`, { cause: error });
    }
    port = 0;
  }
  const listen = socket ? options.listen : `${options.listen.slice(0, options.listen.lastIndexOf(':'))}:${port}`;
  let closing: Promise<void> | undefined;

  return {
    port,
    listen,
    setServing,
    close(graceMs) {
      // Streams closed by the shutdown hand their responses off on later turns (nextTick, then an
      // immediate); two turns on, every one is with onResponse.
      closing ??= shutdownGrpcServer(server, graceMs).then(() => new Promise<void>((resolve) => setImmediate(() => setImmediate(resolve))));
      return closing;
    },
  };
}
