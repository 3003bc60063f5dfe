// Refused Okta hook calls (unauthenticated, bad_request), summarised: anyone who reaches the hook
// can make them, so each one must cost nothing durable. Per (peer, outcome) and interval the first
// gets an access_events row at once (count 1) and the rest one row with their count when the
// interval ends (or at shutdown); per (peer, outcome, reason) the first gets a log line at once and
// the rest a summary line with their count. Both rows commit relaxed (no wait for the WAL flush):
// a Postgres crash can lose the last ~200 ms of them, never an authenticated call's row. Every call
// is still counted in token_tap_okta_hook_calls_total, as it comes.
import type { Logger } from 'pino';
import type { AccessEventLog, AccessOutcome, HookOutcome } from '../store/access-events.js';
import { DEFAULT_MAX_SUMMARY_KEYS, RefusalSummary, type RefusalCount } from '../lib/refusal-summary.js';
import { describeError } from '../lib/error-description.js';

export interface HookRefusal {
  /** The connection's address (Envoy's, behind Envoy); never a header the caller writes. */
  peer: string;
  outcome: AccessOutcome | HookOutcome;
  /** Why it was refused, from the hook's own words (auth.ts, server.ts); never token material. */
  reason: string;
  status: number;
  durationMs: number;
}

export interface HookRefusalsOptions {
  /** An access_events writer with relaxedCommit: summary rows need no WAL flush of their own. */
  audit: Pick<AccessEventLog, 'record'>;
  logger: Pick<Logger, 'warn' | 'error'>;
  intervalMs: number;
  /** Peers tracked at most per summary; past it refusals of new peers are counted under peer "(other)". */
  maxPeers?: number;
  /** Refusals that got no row of their own (counted into a summary row), by outcome. */
  summarised?: { inc(labels: { source: string; outcome: string }, value?: number): void };
  now?: () => number;
}

/** The peer refusals of untracked peers are counted under, once the summary is full. */
export const OTHER_PEERS = '(other)';

type AuditKey = { peer: string; outcome: string };
type LogKey = { peer: string; outcome: string; reason: string };

export class HookRefusals {
  private readonly rows: RefusalSummary<AuditKey>;
  private readonly lines: RefusalSummary<LogKey>;
  private timer: NodeJS.Timeout | undefined;
  private readonly writes = new Set<Promise<void>>();

  constructor(private readonly options: HookRefusalsOptions) {
    const common = { intervalMs: options.intervalMs, maxKeys: options.maxPeers ?? DEFAULT_MAX_SUMMARY_KEYS, ...(options.now ? { now: options.now } : {}) };
    this.rows = new RefusalSummary<AuditKey>({ ...common, overflow: (key) => ({ ...key, peer: OTHER_PEERS }) });
    this.lines = new RefusalSummary<LogKey>({ ...common, overflow: (key) => ({ ...key, peer: OTHER_PEERS, reason: '(any)' }) });
  }

  /** Ticks often enough that a summary is at most a second (or an interval, when shorter) late. */
  start(): void {
    this.timer ??= setInterval(() => this.tick(), Math.min(1_000, this.options.intervalMs));
    this.timer.unref();
  }

  record(refusal: HookRefusal): void {
    const { peer, outcome, reason } = refusal;
    const row = this.rows.note({ peer, outcome });
    if (row.first) {
      this.write({ key: row.key, count: 1, detail: `${reason}; more ${outcome} calls from ${row.key.peer} are counted into one row per ${seconds(this.options.intervalMs)}` });
    } else {
      this.options.summarised?.inc({ source: 'okta_hook', outcome });
    }
    const line = this.lines.note({ peer, outcome, reason });
    if (line.first) {
      this.options.logger.warn(
        // More like it from this peer in the interval get one summary line (summarisedEveryMs).
        { peer, outcome, status: refusal.status, durationMs: refusal.durationMs, detail: reason, summarisedEveryMs: this.options.intervalMs, ...(line.overflowed ? { overflow: true } : {}) },
        'okta hook call refused',
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

  private summarise(rows: Array<RefusalCount<AuditKey>>, lines: Array<RefusalCount<LogKey>>): void {
    for (const row of rows) {
      this.write({ key: row.key, count: row.count, detail: `${row.count} more ${row.key.outcome} calls from ${row.key.peer} between ${iso(row.since)} and ${iso(row.until)} (summary)` });
    }
    for (const line of lines) {
      this.options.logger.warn(
        { peer: line.key.peer, outcome: line.key.outcome, detail: line.key.reason, count: line.count, since: iso(line.since), until: iso(line.until) },
        'okta hook calls refused (summary: how many more like the line before)',
      );
    }
  }

  private write({ key, count, detail }: { key: AuditKey; count: number; detail: string }): void {
    const written = this.options.audit
      .record({ operation: 'okta_hook', outcome: key.outcome as AccessOutcome, caller: 'okta', peer: key.peer, detail, count })
      .catch((error: unknown) => {
        // The calls were counted in the metric as they came; the log line keeps the count.
        this.options.logger.error({ err: describeError(error), peer: key.peer, outcome: key.outcome, count }, 'okta hook: cannot write the access_events row of refused calls');
      })
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
