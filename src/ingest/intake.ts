// The intake: where finished responses wait between the ext_proc stream and capture work
// (parsing, sealing, the spool). A response is only queued when its stream completes; the work
// starts `gatherMs` later, for everything that arrived meanwhile, so it never runs at the moment
// Envoy and the client need the CPU to finish that very response, and it runs in slices that
// give the event loop back between them (a buffered-mode reply never waits behind a whole batch).
// Bounded in count and in body bytes: past either, new responses are dropped, counted and logged;
// the login went on long ago. What waits here is in memory only: a SIGKILL loses it (at rest
// about `gatherMs`; docs/failure-behaviour.md), which the depth gauge shows.
import type { Logger } from 'pino';
import type { ObservedResponse } from '../capture/types.js';
import { ITEMS_PER_TURN } from '../lib/turns.js';

export interface IntakeOptions {
  /** Called for each response, in arrival order; a throw drops that one response only. */
  handle: (observed: ObservedResponse) => void;
  /** How long responses gather before their work starts. */
  gatherMs: number;
  maxBacklog: number;
  /** Body bytes waiting, at most (default 64 MiB). */
  maxBytes?: number;
  logger: Pick<Logger, 'error'>;
  metrics: {
    capturesDropped: { inc(labels: { reason: string }, value?: number): void };
    intakeDepth?: { set(value: number): void };
  };
  /** Responses handled per slice before the event loop gets a turn. */
  sliceSize?: number;
}

const DEFAULT_MAX_BYTES = 64 * 1024 * 1024;

function describe(error: unknown): { name: string; message: string } {
  return error instanceof Error ? { name: error.name, message: error.message } : { name: typeof error, message: 'a non-Error was thrown' };
}

export class CaptureIntake {
  private waiting: ObservedResponse[] = [];
  private waitingBytes = 0;
  private timer: NodeJS.Timeout | undefined;
  private working = false;
  private closed = false;
  private droppedSinceLog = 0;
  /** Responses taken (kept or dropped) and those done with, for whenHandled(). */
  private taken = 0;
  private done = 0;
  private waiters: Array<{ target: number; resolve: () => void }> = [];
  private readonly sliceSize: number;
  private readonly maxBytes: number;

  constructor(private readonly options: IntakeOptions) {
    this.sliceSize = options.sliceSize ?? ITEMS_PER_TURN;
    this.maxBytes = options.maxBytes ?? DEFAULT_MAX_BYTES;
  }

  /** Responses not handled yet. */
  get depth(): number {
    return this.waiting.length;
  }

  take(observed: ObservedResponse): void {
    if (this.closed) {
      // After close(): the streams still handing off are handled at once, while the spool is open.
      this.taken += 1;
      this.handleEach([observed]);
      return;
    }
    // The byte bound only with others waiting: one body larger than it is still taken (and judged
    // against TOKEN_TAP_MAX_BODY_BYTES by capture), not dropped as a backlog.
    const overBytes = this.waiting.length > 0 && this.waitingBytes + observed.body.length > this.maxBytes;
    if (this.waiting.length >= this.options.maxBacklog || overBytes) {
      // Dropped responses count neither as taken nor as done: whenHandled() waits for those kept.
      this.droppedSinceLog += 1;
      this.options.metrics.capturesDropped.inc({ reason: 'capture_backlog_full' });
    } else {
      this.taken += 1;
      this.waiting.push(observed);
      this.waitingBytes += observed.body.length;
      this.report();
    }
    if (!this.timer && !this.working) this.timer = setTimeout(() => this.work(), this.options.gatherMs);
  }

  /** Resolves once every response taken before the call is handled (or dropped), or after `timeoutMs`. */
  whenHandled(timeoutMs: number): Promise<void> {
    if (this.done >= this.taken) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const waiter = { target: this.taken, resolve: () => (clearTimeout(timer), resolve()) };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((other) => other !== waiter);
        resolve();
      }, timeoutMs);
      this.waiters.push(waiter);
    });
  }

  /** Handles everything waiting now, in one go. */
  flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    while (this.waiting.length > 0) this.slice(this.waiting.length);
    this.logDrops();
  }

  /** Shutdown, after the streams have closed: flushes, and handles what still arrives at once. */
  close(): void {
    this.closed = true;
    this.flush();
  }

  private work(): void {
    this.timer = undefined;
    this.working = true;
    try {
      this.slice(this.sliceSize);
      this.logDrops();
    } finally {
      if (this.waiting.length > 0) setImmediate(() => this.work());
      else this.working = false;
    }
  }

  private slice(size: number): void {
    const batch = this.waiting.length <= size ? this.waiting : this.waiting.slice(0, size);
    this.waiting = batch === this.waiting ? [] : this.waiting.slice(size);
    for (const observed of batch) this.waitingBytes -= observed.body.length;
    this.report();
    this.handleEach(batch);
  }

  private handleEach(batch: readonly ObservedResponse[]): void {
    for (const observed of batch) {
      try {
        this.options.handle(observed);
      } catch (error) {
        // One response that cannot be taken must not take the rest of its batch (or the process) with it.
        this.options.metrics.capturesDropped.inc({ reason: 'capture_failed' });
        this.options.logger.error({ idp: observed.idp, reason: 'capture_failed', err: describe(error) }, 'capture dropped');
      }
    }
    this.finished(batch.length);
  }

  private finished(count: number): void {
    this.done += count;
    if (this.waiters.length === 0) return;
    const ready = this.waiters.filter((waiter) => waiter.target <= this.done);
    this.waiters = this.waiters.filter((waiter) => waiter.target > this.done);
    for (const waiter of ready) waiter.resolve();
  }

  private report(): void {
    this.options.metrics.intakeDepth?.set(this.waiting.length);
  }

  private logDrops(): void {
    if (this.droppedSinceLog === 0) return;
    this.options.logger.error(
      { dropped: this.droppedSinceLog, reason: 'capture_backlog_full', maxBacklog: this.options.maxBacklog, maxBytes: this.maxBytes },
      'captures dropped: capture work is behind',
    );
    this.droppedSinceLog = 0;
  }
}
