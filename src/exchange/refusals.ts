// Token requests refused before a client was authenticated (unauthenticated, bad_request),
// summarised as the Okta hook's refused calls are (hook/refusals.ts): anyone who reaches the
// listener can make them, so each costs nothing durable. Per (peer, outcome) and interval the
// first gets an access_events row at once (count 1, relaxed commit) and the rest one row with
// their count when the interval ends (or at shutdown); per (peer, outcome, reason) the first gets
// a log line and the rest a summary line. Every one is counted in the metrics as it comes.
import type { Logger } from 'pino';
import { DEFAULT_MAX_SUMMARY_KEYS, RefusalSummary, type RefusalCount } from '../lib/refusal-summary.js';
import type { AccessEventLog } from '../store/access-events.js';
import type { RefusedOutcome } from './answers.js';

export interface ExchangeRefusal {
  /** The connection's address; never a header the caller writes. */
  peer: string;
  outcome: RefusedOutcome;
  /** Why, in the front door's own words; never a credential or a token. */
  reason: string;
  /** The API key id the client named, when it named a well-formed one (public: it names the key in listings). */
  apiKeyId?: string | undefined;
}

export interface ExchangeRefusalsOptions {
  /** An access_events writer with relaxedCommit: summary rows need no WAL flush of their own. */
  audit: Pick<AccessEventLog, 'record'>;
  logger: Pick<Logger, 'warn' | 'error'>;
  intervalMs: number;
  maxPeers?: number;
  /** Refusals that got no row of their own (counted into a summary row). */
  summarised?: { inc(labels: { source: string; outcome: string }, value?: number): void };
}

type Key = { peer: string; outcome: string };
type LineKey = Key & { reason: string };

export class ExchangeRefusals {
  private readonly rows: RefusalSummary<Key>;
  private readonly lines: RefusalSummary<LineKey>;
  private timer: NodeJS.Timeout | undefined;
  private readonly writes = new Set<Promise<void>>();

  constructor(private readonly options: ExchangeRefusalsOptions) {
    const common = { intervalMs: options.intervalMs, maxKeys: options.maxPeers ?? DEFAULT_MAX_SUMMARY_KEYS };
    this.rows = new RefusalSummary<Key>({ ...common, overflow: (key) => ({ ...key, peer: '(other)' }) });
    this.lines = new RefusalSummary<LineKey>({ ...common, overflow: (key) => ({ ...key, peer: '(other)', reason: '(any)' }) });
  }

  start(): void {
    this.timer ??= setInterval(() => this.summarise(this.rows.due(), this.lines.due()), Math.min(1_000, this.options.intervalMs));
    this.timer.unref();
  }

  record(refusal: ExchangeRefusal): void {
    const { peer, outcome, reason } = refusal;
    const row = this.rows.note({ peer, outcome });
    if (row.first) this.write(row.key, 1, `${reason}; more ${outcome} requests from ${row.key.peer} are counted into one row per interval`, refusal.apiKeyId);
    else this.options.summarised?.inc({ source: 'token_exchange', outcome });
    if (this.lines.note({ peer, outcome, reason }).first) {
      this.options.logger.warn({ peer, outcome, detail: reason, apiKeyId: refusal.apiKeyId, summarisedEveryMs: this.options.intervalMs }, 'token exchange request refused');
    }
  }

  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.summarise(this.rows.drain(), this.lines.drain());
    await Promise.all([...this.writes]);
  }

  private summarise(rows: Array<RefusalCount<Key>>, lines: Array<RefusalCount<LineKey>>): void {
    for (const row of rows) this.write(row.key, row.count, `${row.count} more ${row.key.outcome} requests from ${row.key.peer} between ${iso(row.since)} and ${iso(row.until)} (summary)`);
    for (const line of lines) {
      this.options.logger.warn({ peer: line.key.peer, outcome: line.key.outcome, detail: line.key.reason, count: line.count, since: iso(line.since), until: iso(line.until) }, 'token exchange requests refused (summary: how many more like the line before)');
    }
  }

  private write(key: Key, count: number, detail: string, apiKeyId?: string): void {
    const written = this.options.audit
      .record({ operation: 'exchange', outcome: key.outcome as RefusedOutcome, peer: key.peer, apiKeyId, detail, count })
      .catch((error: unknown) => {
        this.options.logger.error({ err: { message: (error as Error).message }, peer: key.peer, outcome: key.outcome, count }, 'token exchange: cannot write the access_events row of refused requests');
      })
      .finally(() => this.writes.delete(written));
    this.writes.add(written);
  }
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}
