// CaptureQueue: captures wait in memory and are written to Postgres in batches, off the data path.
// A failed batch is retried with capped exponential backoff and jitter; nothing is dropped
// unless the queue is full, and then the drop is counted and logged.
import type { Logger } from 'pino';
import type { Capture } from '../capture/types.js';
import type { Metrics } from '../ops/metrics.js';

export interface CaptureWriter {
  /** Writes the batch; captures refused for their content are returned, the rest are written. */
  recordCaptures(batch: readonly Capture[]): Promise<{ rejected: Array<{ captureId: string; idp: string; reason: string }> }>;
}

export interface CaptureQueueOptions {
  writer: CaptureWriter;
  logger: Logger;
  metrics: Metrics;
  maxQueued?: number;
  maxBatch?: number;
  /** How long the first capture of a batch waits for company. */
  flushDelayMs?: number;
  retryInitialMs?: number;
  retryMaxMs?: number;
}

export function backoffMs(attempt: number, initialMs: number, maxMs: number, random: () => number = Math.random): number {
  const ceiling = Math.min(maxMs, initialMs * 2 ** Math.min(attempt, 30));
  // "Full jitter": spread retries of many sidecars over the whole window.
  return Math.max(1, Math.round(ceiling * random()));
}

export class CaptureQueue {
  private readonly pending: Capture[] = [];
  private timer: NodeJS.Timeout | undefined;
  private writing = false;
  private failedAttempts = 0;
  private closed = false;
  private readonly idleWaiters: Array<() => void> = [];
  private readonly maxQueued: number;
  private readonly maxBatch: number;
  private readonly flushDelayMs: number;
  private readonly retryInitialMs: number;
  private readonly retryMaxMs: number;

  constructor(private readonly options: CaptureQueueOptions) {
    this.maxQueued = options.maxQueued ?? 10_000;
    this.maxBatch = options.maxBatch ?? 200;
    this.flushDelayMs = options.flushDelayMs ?? 5;
    this.retryInitialMs = options.retryInitialMs ?? 100;
    this.retryMaxMs = options.retryMaxMs ?? 10_000;
  }

  get depth(): number {
    return this.pending.length;
  }

  /** Queues a capture; false when it was dropped because the queue is full or closed. */
  enqueue(capture: Capture): boolean {
    if (this.closed || this.pending.length >= this.maxQueued) {
      const reason = this.closed ? 'shutting_down' : 'queue_full';
      this.options.metrics.capturesDropped.inc({ reason });
      this.options.logger.error({ idp: capture.idp, captureId: capture.captureId, reason }, 'capture dropped');
      return false;
    }
    this.pending.push(capture);
    this.options.metrics.queueDepth.set(this.pending.length);
    this.schedule(this.pending.length >= this.maxBatch ? 0 : this.flushDelayMs);
    return true;
  }

  /** Resolves true once everything queued is written, or false when the time is up. */
  async drain(timeoutMs: number): Promise<boolean> {
    if (this.isIdle()) return true;
    this.schedule(0);
    return new Promise((resolve) => {
      const timeout = setTimeout(() => resolve(false), timeoutMs);
      this.idleWaiters.push(() => {
        clearTimeout(timeout);
        resolve(true);
      });
    });
  }

  /** Stops taking captures and stops retrying; what is still queued is reported by `depth`. */
  close(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private isIdle(): boolean {
    return this.pending.length === 0 && !this.writing;
  }

  private schedule(delayMs: number): void {
    if (this.writing || (this.timer && delayMs > 0)) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.writeBatch();
    }, delayMs);
  }

  private async writeBatch(): Promise<void> {
    if (this.writing || this.pending.length === 0) return;
    this.writing = true;
    const batch = this.pending.slice(0, this.maxBatch);
    const endTimer = this.options.metrics.writeBatchSeconds.startTimer();
    try {
      const { rejected } = await this.options.writer.recordCaptures(batch);
      endTimer();
      this.pending.splice(0, batch.length);
      this.failedAttempts = 0;
      const refused = new Set(rejected.map((entry) => entry.captureId));
      for (const entry of rejected) {
        this.options.metrics.capturesDropped.inc({ reason: 'refused_by_postgres' });
        this.options.logger.error({ idp: entry.idp, captureId: entry.captureId, reason: entry.reason }, 'capture dropped');
      }
      this.logWritten(batch.filter((capture) => !refused.has(capture.captureId)));
    } catch (error) {
      this.failedAttempts += 1;
      this.options.metrics.postgresErrors.inc();
      const retryInMs = backoffMs(this.failedAttempts, this.retryInitialMs, this.retryMaxMs);
      this.options.logger.warn(
        { err: { message: (error as Error).message, code: (error as { code?: string }).code }, batch: batch.length, retryInMs },
        'writing captures to Postgres failed; will retry',
      );
      this.writing = false;
      this.options.metrics.queueDepth.set(this.pending.length);
      if (!this.closed) this.timer = setTimeout(() => { this.timer = undefined; void this.writeBatch(); }, retryInMs);
      return;
    }
    this.writing = false;
    this.options.metrics.queueDepth.set(this.pending.length);
    if (this.pending.length > 0) this.schedule(0);
    else this.idleWaiters.splice(0).forEach((wake) => wake());
  }

  private logWritten(batch: readonly Capture[]): void {
    const now = Date.now();
    for (const capture of batch) {
      this.options.metrics.captures.inc({ idp: capture.idp, outcome: capture.outcome });
      this.options.logger.info(
        {
          idp: capture.idp,
          subject: capture.subject,
          outcome: capture.outcome,
          httpStatus: capture.httpStatus,
          errorCode: capture.errorCode,
          detail: capture.detail,
          durationMs: now - capture.observedAt.getTime(),
        },
        'capture recorded',
      );
    }
  }
}
