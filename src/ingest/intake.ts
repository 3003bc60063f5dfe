// The intake: where finished responses wait between the ext_proc stream and capture work
// (parsing, sealing, the spool). A response is only queued when its stream completes; the work
// starts `gatherMs` later, for everything that arrived meanwhile, so it never runs at the moment
// Envoy and the client need the CPU to finish that very response, and it runs in slices that
// give the event loop back between them (a buffered-mode reply never waits behind a whole batch).
// Bounded: past `maxBacklog` waiting responses, new ones are dropped, counted and logged; the
// login went on long ago.
import type { Logger } from 'pino';
import type { ObservedResponse } from '../capture/types.js';
import { ITEMS_PER_TURN } from './turns.js';

export interface IntakeOptions {
  /** Called for each response, in arrival order; a throw drops that one response only. */
  handle: (observed: ObservedResponse) => void;
  /** How long responses gather before their work starts. */
  gatherMs: number;
  maxBacklog: number;
  logger: Pick<Logger, 'error'>;
  metrics: { capturesDropped: { inc(labels: { reason: string }, value?: number): void } };
  /** Responses handled per slice before the event loop gets a turn. */
  sliceSize?: number;
}

export class CaptureIntake {
  private waiting: ObservedResponse[] = [];
  private timer: NodeJS.Timeout | undefined;
  private working = false;
  private droppedSinceLog = 0;
  private readonly sliceSize: number;

  constructor(private readonly options: IntakeOptions) {
    this.sliceSize = options.sliceSize ?? ITEMS_PER_TURN;
  }

  /** Responses not handled yet. */
  get depth(): number {
    return this.waiting.length;
  }

  take(observed: ObservedResponse): void {
    if (this.waiting.length >= this.options.maxBacklog) {
      this.droppedSinceLog += 1;
      this.options.metrics.capturesDropped.inc({ reason: 'capture_backlog_full' });
    } else {
      this.waiting.push(observed);
    }
    if (!this.timer && !this.working) this.timer = setTimeout(() => this.work(), this.options.gatherMs);
  }

  /** Handles everything waiting now, in one go (shutdown: the streams are closed already). */
  flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    while (this.waiting.length > 0) this.slice(this.waiting.length);
    this.logDrops();
  }

  private work(): void {
    this.timer = undefined;
    this.working = true;
    this.slice(this.sliceSize);
    this.logDrops();
    if (this.waiting.length > 0) {
      setImmediate(() => this.work());
      return;
    }
    this.working = false;
  }

  private slice(size: number): void {
    const batch = this.waiting.length <= size ? this.waiting : this.waiting.slice(0, size);
    this.waiting = batch === this.waiting ? [] : this.waiting.slice(size);
    for (const observed of batch) {
      try {
        this.options.handle(observed);
      } catch (error) {
        // One response that cannot be taken must not take the rest of its batch (or the process) with it.
        this.options.metrics.capturesDropped.inc({ reason: 'capture_failed' });
        this.options.logger.error({ idp: observed.idp, reason: 'capture_failed', err: { name: (error as Error).name, message: (error as Error).message } }, 'capture dropped');
      }
    }
  }

  private logDrops(): void {
    if (this.droppedSinceLog === 0) return;
    this.options.logger.error({ dropped: this.droppedSinceLog, reason: 'capture_backlog_full', maxBacklog: this.options.maxBacklog }, 'captures dropped: capture work is behind');
    this.droppedSinceLog = 0;
  }
}
