// What the main thread and the ext_proc thread (worker.ts) say to each other.
import type { ObservedResponse } from '../capture/types.js';

export interface ExtProcThreadOptions {
  /** host:port to bind (port 0 picks a free one), or unix:/path. */
  listen: string;
  /** PEM text: ext_proc speaks TLS; with clientCa, Envoy must present a certificate it signed. */
  tls?: { cert: string; key: string; clientCa?: string | undefined } | undefined;
  maxBodyBytes: number;
  logLevel: string;
  /** Responses handed over and not yet acknowledged, at most; past it the thread drops and counts them. */
  maxBacklog: number;
  /**
   * The priority (nice) the thread runs at: the process's at start. A thread started again after the
   * main thread lowered its own priority inherits the lower one and tries to return to this.
   */
  nice: number;
}

export interface LogRecord {
  level: 'trace' | 'warn';
  fields: object;
  message: string;
}

export type ToExtProcThread =
  | { type: 'health'; status: 'SERVING' | 'NOT_SERVING' }
  | { type: 'shutdown'; graceMs: number }
  /** The main thread has taken `count` more responses. */
  | { type: 'ack'; count: number };

export type FromExtProcThread =
  /** `tid`: the thread's Linux task id (operators renice or trace it), when /proc tells. */
  | { type: 'listening'; port: number; tid: number | undefined }
  | { type: 'bind_failed'; message: string }
  /** Finished responses and counter deltas since the last batch. Bodies arrive as Uint8Array. */
  | {
      type: 'batch';
      responses: ObservedResponse[];
      logs: LogRecord[];
      opened: number;
      closed: number;
      errors: number;
      incomplete: number;
      backlogDropped: number;
    }
  | { type: 'closed' };
