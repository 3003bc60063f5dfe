// Refused requests that anyone who reaches a listener can make (unauthenticated, bad_request),
// summarised so each one costs nothing durable; the Okta hook's refused calls and the token
// exchange's refused requests go through it. On the pure summariser (refusal-summary.ts): per
// (peer, outcome) and interval the first gets a row at once (count 1) and the rest one row with
// their count when the interval ends (or at shutdown); per (peer, outcome, reason) the first gets a
// log line at once and the rest a summary line with their count. What a row is and where it goes
// is the caller's (`writeRow`); this file keeps the timer, the rows in flight and the wording.
import { DEFAULT_MAX_SUMMARY_KEYS, RefusalSummary, type RefusalCount } from './refusal-summary.js';
import { describeError } from './error-description.js';

/** What is known of one refused request: never a credential or a token. */
export interface Refusal {
  /** The connection's address (Envoy's, behind Envoy); never a header the caller writes. */
  peer: string;
  outcome: string;
  /** Why it was refused, in the front door's own words. */
  reason: string;
}

/** One row to write: the first refusal of its key (`first` set), or the count of the rest. */
export interface RefusalRow<R extends Refusal> {
  peer: string;
  outcome: string;
  count: number;
  detail: string;
  /** The refusal itself when this row is its own (count 1). */
  first?: R;
}

export interface RefusalLogger {
  warn(fields: object, message: string): void;
  error(fields: object, message: string): void;
}

/** How the refused things are named in rows and log lines. */
export interface RefusalWording {
  /** `okta hook call`: "<one> refused". */
  one: string;
  /** `okta hook calls`: "<many> refused (summary: ...)". */
  many: string;
  /** `calls`: "N more <outcome> <things> from <peer>". */
  things: string;
  /** The log line when a row cannot be written. */
  writeFailed: string;
}

export interface RefusalWriterOptions<R extends Refusal> {
  wording: RefusalWording;
  /** Writes one row (relaxed commit is enough: summary rows need no WAL flush of their own). */
  writeRow: (row: RefusalRow<R>) => Promise<unknown>;
  logger: RefusalLogger;
  intervalMs: number;
  /** Peers tracked at most per summary; past it refusals of new peers are counted under peer "(other)". */
  maxPeers?: number;
  /** Fields of the first log line besides peer, outcome and detail (status, the key id named). */
  logFields?: (refusal: R) => Record<string, unknown>;
  /** Refusals that got no row of their own (counted into a summary row), by outcome. */
  summarised?: { inc(labels: { source: string; outcome: string }, value?: number): void };
  /** The `source` label of `summarised`. */
  source: string;
  now?: () => number;
}

/** The peer refusals of untracked peers are counted under, once the summary is full. */
export const OTHER_PEERS = '(other)';

type RowKey = { peer: string; outcome: string };
type LineKey = RowKey & { reason: string };

export class RefusalWriter<R extends Refusal> {
  private readonly rows: RefusalSummary<RowKey>;
  private readonly lines: RefusalSummary<LineKey>;
  private timer: NodeJS.Timeout | undefined;
  private readonly writes = new Set<Promise<void>>();

  constructor(private readonly options: RefusalWriterOptions<R>) {
    const common = { intervalMs: options.intervalMs, maxKeys: options.maxPeers ?? DEFAULT_MAX_SUMMARY_KEYS, ...(options.now ? { now: options.now } : {}) };
    this.rows = new RefusalSummary<RowKey>({ ...common, overflow: (key) => ({ ...key, peer: OTHER_PEERS }) });
    this.lines = new RefusalSummary<LineKey>({ ...common, overflow: (key) => ({ ...key, peer: OTHER_PEERS, reason: '(any)' }) });
  }

  /** Ticks often enough that a summary is at most a second (or an interval, when shorter) late. */
  start(): void {
    this.timer ??= setInterval(() => this.tick(), Math.min(1_000, this.options.intervalMs));
    this.timer.unref();
  }

  record(refusal: R): void {
    const { peer, outcome, reason } = refusal;
    const { wording, intervalMs } = this.options;
    const row = this.rows.note({ peer, outcome });
    if (row.first) {
      const detail = `${reason}; more ${outcome} ${wording.things} from ${row.key.peer} are counted into one row per ${seconds(intervalMs)}`;
      this.write({ peer: row.key.peer, outcome, count: 1, detail, first: refusal });
    } else {
      this.options.summarised?.inc({ source: this.options.source, outcome });
    }
    const line = this.lines.note({ peer, outcome, reason });
    if (line.first) {
      this.options.logger.warn(
        // More like it from this peer in the interval get one summary line (summarisedEveryMs).
        { peer, outcome, ...this.options.logFields?.(refusal), detail: reason, summarisedEveryMs: intervalMs, ...(line.overflowed ? { overflow: true } : {}) },
        `${wording.one} refused`,
      );
    }
  }

  /** Writes and logs the summaries of the intervals that have ended. */
  tick(): void {
    this.summarise(this.rows.due(), this.lines.due());
  }

  /** Shutdown: writes and logs everything counted, and waits for the rows in flight. */
  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.summarise(this.rows.drain(), this.lines.drain());
    await Promise.all([...this.writes]);
  }

  private summarise(rows: Array<RefusalCount<RowKey>>, lines: Array<RefusalCount<LineKey>>): void {
    const { wording, logger } = this.options;
    for (const { key, count, since, until } of rows) {
      this.write({
        ...key,
        count,
        detail: `${count} more ${key.outcome} ${wording.things} from ${key.peer} between ${iso(since)} and ${iso(until)} (summary)`,
      });
    }
    for (const { key, count, since, until } of lines) {
      logger.warn(
        { peer: key.peer, outcome: key.outcome, detail: key.reason, count, since: iso(since), until: iso(until) },
        `${wording.many} refused (summary: how many more like the line before)`,
      );
    }
  }

  private write(row: RefusalRow<R>): void {
    const written = this.options
      .writeRow(row)
      .then(
        () => undefined,
        (error: unknown) => {
          // The refusals were counted in the metrics as they came; the log line keeps the count.
          this.options.logger.error({ err: describeError(error), peer: row.peer, outcome: row.outcome, count: row.count }, this.options.wording.writeFailed);
        },
      )
      .finally(() => this.writes.delete(written));
    this.writes.add(written);
  }
}

function seconds(ms: number): string {
  return ms % 1_000 === 0 ? `${ms / 1_000} s` : `${ms} ms`;
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}
