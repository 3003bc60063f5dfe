// Health, as Envoy and Kubernetes ask for it.
// - gRPC grpc.health.v1 on the ext_proc port, for Envoy's active health check of the sidecar
//   cluster: SERVING while the sidecar takes ext_proc streams, NOT_SERVING once it is stopping.
// - HTTP /healthz (liveness): the process answers. /readyz (readiness): 200 while ext_proc is
//   served, whatever Postgres does, with the store and spool state in the body. Postgres being
//   away must not take the pod out of service: Envoy sits in the same pod, and logins go through it.
// - Once the sidecar cannot go on (its spool stopped: the directory is no longer its own), both
//   answer 503 with the reason, and grpc.health.v1 says NOT_SERVING, until the process exits.
import type { StoreState } from '../ingest/postgres-availability.js';

export interface SpoolView {
  depth: number;
  bytes: number;
  maxBytes: number;
  /** Of `bytes`, segments already in Postgres kept for the grace window: a full spool gives them up first. */
  graceBytes: number;
}

export type ServingPhase = 'starting' | 'serving' | 'stopping';

export interface Readiness {
  ready: boolean;
  body: {
    status: ServingPhase;
    /** Where ext_proc listens (host:port or unix:/path) and how: none, tls or mtls. */
    extProc?: { listen: string; tls: string };
    store: ReturnType<StoreState['describe']>;
    spool: { captures: number; bytes: number; maxBytes: number; full: boolean };
    /** Why the sidecar cannot go on, once it cannot. */
    failure?: string;
  };
}

export class SidecarHealth {
  private phase: ServingPhase = 'starting';
  private failure: string | undefined;
  private readonly listeners: Array<(serving: boolean) => void> = [];

  constructor(
    private readonly store: StoreState,
    private readonly spool: SpoolView,
  ) {}

  private extProc: { listen: string; tls: string } | undefined;

  /** Where ext_proc listens, for /readyz (operators check a socket path or a bound port there). */
  describeExtProc(extProc: { listen: string; tls: string }): void {
    this.extProc = extProc;
  }

  /** Calls `listener` on every change, e.g. to set grpc.health.v1 on the ext_proc port (extproc/worker.ts). */
  follow(listener: (serving: boolean) => void): void {
    this.listeners.push(listener);
    listener(this.phase === 'serving' && this.failure === undefined);
  }

  serving(): void {
    this.set('serving');
  }

  stopping(): void {
    this.set('stopping');
  }

  /** The sidecar cannot go on (it is about to exit): unhealthy and unready from now on. */
  fail(reason: string): void {
    this.failure ??= reason;
    for (const listener of this.listeners) listener(false);
  }

  /** For /healthz: undefined while the sidecar can go on, else why it cannot. */
  liveness(): { live: true } | { live: false; failure: string } {
    return this.failure === undefined ? { live: true } : { live: false, failure: this.failure };
  }

  readiness(): Readiness {
    const { depth, bytes, maxBytes, graceBytes } = this.spool;
    return {
      ready: this.phase === 'serving' && this.failure === undefined,
      body: {
        status: this.phase,
        ...(this.failure === undefined ? {} : { failure: this.failure }),
        ...(this.extProc ? { extProc: this.extProc } : {}),
        store: this.store.describe(),
        // "Full" once another typical capture (a few KiB) may not fit.
        spool: { captures: depth, bytes, maxBytes, full: bytes - graceBytes + 16 * 1024 > maxBytes },
      },
    };
  }

  private set(phase: ServingPhase): void {
    this.phase = phase;
    for (const listener of this.listeners) listener(phase === 'serving' && this.failure === undefined);
  }
}
