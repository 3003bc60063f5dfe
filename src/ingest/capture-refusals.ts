// Token responses that are plainly no token response (idp_error, unparseable, too_large,
// incomplete; no tokens in them), summarised before the spool: whoever can make a token route
// answer junk (an IdP, or a client sending bad codes) must not fill the spool and capture_events
// with a row each. Per (IdP, outcome, error code, detail) and interval the first is spooled and written as
// every capture is; the rest are counted in token_tap_captures_total as they come and written as
// one capture_events row with their count when the interval ends (or at shutdown), past the spool
// with a relaxed commit: all they carry is a count. A summary Postgres does not take is tried
// again an interval later; what is still unwritten at shutdown is logged with its count.
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { Capture } from '../capture/types.js';
import type { CaptureSummary } from '../store/grants.js';
import { MAX_EVENT_TEXT } from '../store/capture-events.js';
import type { LabelledCount } from './metrics.js';
import { DEFAULT_MAX_SUMMARY_KEYS, RefusalSummary, type RefusalCount } from '../lib/refusal-summary.js';
import { describeError } from '../lib/error-description.js';

/** Outcomes of a response that held no token; `incomplete` where capture/ tells a cut-off body apart. */
const SUMMARISED_OUTCOMES: ReadonlySet<string> = new Set(['idp_error', 'unparseable', 'too_large', 'incomplete']);
/** The error code of refusals counted once `maxKeys` kinds, or an IdP's share, are tracked (an IdP inventing codes). */
export const OTHER_ERROR_CODES = '(other)';
/** Kinds one IdP may have tracked at once: far more than a real IdP's errors, far fewer than `maxKeys`. */
export const DEFAULT_MAX_KEYS_PER_IDP = 32;

/**
 * A kind of refusal. The detail is capture/'s own words (which field is over which bound, which
 * encoding is corrupt), never a value, so a too-long subject and a too-long email stay apart.
 */
type CaptureKey = { idp: string; outcome: string; errorCode: string; detail: string };

export interface CaptureRefusalsOptions {
  store: { recordCaptureSummaries(summaries: readonly CaptureSummary[]): Promise<void> };
  logger: Pick<Logger, 'info' | 'error'>;
  metrics: {
    captures: LabelledCount<'idp' | 'outcome'>;
    refusalsSummarised?: LabelledCount<'source' | 'outcome'>;
  };
  intervalMs: number;
  /** Kinds (IdP, outcome, error code, detail) tracked at most; past it new error codes count under "(other)". */
  maxKeys?: number;
  /** Kinds of one IdP tracked at most; past it that IdP's new kinds count under its own "(other)". */
  maxKeysPerIdp?: number;
  now?: () => number;
}

export class CaptureRefusals {
  private readonly summary: RefusalSummary<CaptureKey>;
  private timer: NodeJS.Timeout | undefined;
  /** Summaries Postgres did not take yet: tried again with the next ones. */
  private unwritten: CaptureSummary[] = [];
  /** When a write last failed: unwritten summaries wait an interval before the next try. */
  private failedAt = 0;
  private writing: Promise<void> | undefined;
  private readonly maxKeys: number;
  private readonly now: () => number;

  constructor(private readonly options: CaptureRefusalsOptions) {
    this.maxKeys = options.maxKeys ?? DEFAULT_MAX_SUMMARY_KEYS;
    this.now = options.now ?? Date.now;
    this.summary = new RefusalSummary<CaptureKey>({
      intervalMs: options.intervalMs,
      maxKeys: this.maxKeys,
      overflow: (key) => ({ ...key, errorCode: OTHER_ERROR_CODES, detail: '' }),
      groupOf: (key) => key.idp,
      maxKeysPerGroup: options.maxKeysPerIdp ?? DEFAULT_MAX_KEYS_PER_IDP,
      ...(options.now ? { now: options.now } : {}),
    });
  }

  start(): void {
    this.timer ??= setInterval(() => this.tick(), Math.min(1_000, this.options.intervalMs));
    this.timer.unref();
  }

  /** True: spool it as every capture is. False: it was counted into its kind's summary row. */
  admit(capture: Capture): boolean {
    if (capture.tokens || !SUMMARISED_OUTCOMES.has(capture.outcome)) return true;
    const noted = this.summary.note({
      idp: capture.idp,
      outcome: capture.outcome,
      errorCode: capture.errorCode?.slice(0, MAX_EVENT_TEXT) ?? '',
      detail: capture.detail ?? '',
    });
    if (noted.first) return true;
    this.options.metrics.captures.inc({ idp: capture.idp, outcome: capture.outcome });
    this.options.metrics.refusalsSummarised?.inc({ source: 'capture', outcome: capture.outcome });
    return false;
  }

  /** Writes the summaries of the intervals that have ended (one write at a time). */
  tick(): void {
    if (this.writing) return;
    const retry = this.unwritten.length > 0 && this.now() - this.failedAt >= this.options.intervalMs;
    const summaries = [...(retry ? this.unwritten : []), ...this.summary.due().map((counted) => this.row(counted))];
    if (retry) this.unwritten = [];
    if (summaries.length === 0) return;
    this.writing = this.write(summaries, true).finally(() => (this.writing = undefined));
  }

  /** Shutdown: writes everything counted, once; what Postgres does not take is logged with its count. */
  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.writing;
    const summaries = [...this.unwritten, ...this.summary.drain().map((counted) => this.row(counted))];
    this.unwritten = [];
    if (summaries.length > 0) await this.write(summaries, false);
  }

  private row({ key, count, since, until }: RefusalCount<CaptureKey>): CaptureSummary {
    const { idp, outcome, errorCode, detail } = key;
    return {
      captureId: randomUUID(),
      idp,
      observedAt: new Date(since),
      httpStatus: undefined,
      outcome: outcome as Capture['outcome'],
      subject: undefined,
      issuer: undefined,
      clientId: undefined,
      email: undefined,
      tokens: undefined,
      errorCode: errorCode || undefined,
      // capture/'s own words; the error code is in its column (an IdP's text, so not in the detail).
      detail: `summary: ${count} more ${outcome} responses between ${new Date(since).toISOString()} and ${new Date(until).toISOString()}${detail ? ` (${detail})` : ''}`,
      count,
    };
  }

  private async write(summaries: CaptureSummary[], retry: boolean): Promise<void> {
    const { logger, store } = this.options;
    try {
      await store.recordCaptureSummaries(summaries);
      for (const summary of summaries) {
        logger.info(
          { idp: summary.idp, outcome: summary.outcome, errorCode: summary.errorCode, count: summary.count },
          'captures summarised: responses with no token, counted into one capture_events row',
        );
      }
    } catch (error) {
      this.failedAt = this.now();
      const counted = summaries.reduce((sum, summary) => sum + (summary.count ?? 1), 0);
      // Bounded: as many as there are kinds tracked; the oldest go first (their counts are in the metric and this line).
      const kept = retry ? summaries.slice(-this.maxKeys) : [];
      this.unwritten = [...kept, ...this.unwritten].slice(-this.maxKeys);
      logger.error(
        { err: describeError(error), rows: summaries.length, counted, retrying: kept.length },
        retry
          ? 'cannot write capture summary rows; trying again in an interval'
          : 'cannot write capture summary rows at shutdown; their counts are only in this line and the metric',
      );
    }
  }
}
