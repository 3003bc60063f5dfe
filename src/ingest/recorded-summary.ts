// The info line that sums up captures written to Postgres: one line every SUMMARY_INTERVAL_MS with
// counts per outcome and per IdP, instead of an info line per capture (15-35 µs of pino each at
// 1,000 captures/s, bench/RESULTS.md issue 25; the per-capture line is now debug, and
// token_tap_captures_total counts the same). The first write after a quiet spell is summed up at
// once, so a start or a burst shows in the log without waiting; close() says what is left.
import type { Logger } from 'pino';

export const SUMMARY_INTERVAL_MS = 10_000;

export class RecordedSummary {
  private byOutcome: Record<string, number> = {};
  private byIdp: Record<string, number> = {};
  private count = 0;
  private since = Date.now();
  private lastLineAt = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly logger: Logger,
    private readonly intervalMs = SUMMARY_INTERVAL_MS,
  ) {}

  note(idp: string, outcome: string): void {
    if (this.count === 0) this.since = Date.now();
    this.count += 1;
    this.byOutcome[outcome] = (this.byOutcome[outcome] ?? 0) + 1;
    this.byIdp[idp] = (this.byIdp[idp] ?? 0) + 1;
  }

  /** After a batch: the line now when the last one is an interval old, else once it is. */
  settle(): void {
    if (this.count === 0 || this.timer) return;
    const wait = this.lastLineAt + this.intervalMs - Date.now();
    if (wait <= 0) {
      this.line();
      return;
    }
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.line();
    }, wait);
    this.timer.unref();
  }

  /** What is counted and not said yet, said now (a stop). */
  close(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.line();
  }

  private line(): void {
    this.lastLineAt = Date.now();
    if (this.count === 0) return;
    this.logger.info(
      { captures: this.count, outcomes: this.byOutcome, idps: this.byIdp, seconds: Math.round((this.lastLineAt - this.since) / 100) / 10 },
      'captures recorded',
    );
    this.byOutcome = {};
    this.byIdp = {};
    this.count = 0;
  }
}
