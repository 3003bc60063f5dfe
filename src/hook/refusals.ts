// Refused Okta hook calls (unauthenticated, bad_request), summarised by the shared refusal writer
// (lib/refusal-writer.ts): anyone who reaches the hook can make them, so each one must cost nothing
// durable. Per (peer, outcome) and interval one access_events row, per (peer, outcome, reason) one
// log line, plus summaries with the counts. Both rows commit relaxed (no wait for the WAL flush): a
// Postgres crash can lose the last ~200 ms of them, never an authenticated call's row. Every call is
// still counted in token_tap_okta_hook_calls_total, as it comes.
import type { Logger } from 'pino';
import { RefusalWriter, type RefusalWriterOptions } from '../lib/refusal-writer.js';
import type { AccessEventLog, AccessOutcome, HookOutcome } from '../store/access-events.js';

export { OTHER_PEERS } from '../lib/refusal-writer.js';

export interface HookRefusal {
  /** The connection's address (Envoy's, behind Envoy); never a header the caller writes. */
  peer: string;
  outcome: AccessOutcome | HookOutcome;
  /** Why it was refused, from the hook's own words (auth.ts, server.ts); never token material. */
  reason: string;
  status: number;
  durationMs: number;
}

export interface HookRefusalsOptions extends Pick<RefusalWriterOptions<HookRefusal>, 'intervalMs' | 'maxPeers' | 'summarised' | 'now'> {
  /** An access_events writer with relaxedCommit: summary rows need no WAL flush of their own. */
  audit: Pick<AccessEventLog, 'record'>;
  logger: Pick<Logger, 'warn' | 'error'>;
}

export class HookRefusals extends RefusalWriter<HookRefusal> {
  constructor({ audit, ...options }: HookRefusalsOptions) {
    super({
      ...options,
      source: 'okta_hook',
      wording: {
        one: 'okta hook call',
        many: 'okta hook calls',
        things: 'calls',
        writeFailed: 'okta hook: cannot write the access_events row of refused calls',
      },
      logFields: ({ status, durationMs }) => ({ status, durationMs }),
      writeRow: ({ peer, outcome, count, detail }) =>
        audit.record({ operation: 'okta_hook', outcome: outcome as AccessOutcome, caller: 'okta', peer, detail, count }),
    });
  }
}
