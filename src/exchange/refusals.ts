// Token requests refused before a client was authenticated (unauthenticated, bad_request),
// summarised by the shared refusal writer (lib/refusal-writer.ts), as the Okta hook's refused calls
// are: anyone who reaches the listener can make them, so each costs nothing durable. Per (peer,
// outcome) and interval one access_events row (relaxed commit), per (peer, outcome, reason) one log
// line, plus summaries with the counts. Every one is counted in the metrics as it comes.
import type { Logger } from 'pino';
import { RefusalWriter, type RefusalWriterOptions } from '../lib/refusal-writer.js';
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

export interface ExchangeRefusalsOptions extends Pick<RefusalWriterOptions<ExchangeRefusal>, 'intervalMs' | 'maxPeers' | 'summarised' | 'now'> {
  /** An access_events writer with relaxedCommit: summary rows need no WAL flush of their own. */
  audit: Pick<AccessEventLog, 'record'>;
  logger: Pick<Logger, 'warn' | 'error'>;
}

export class ExchangeRefusals extends RefusalWriter<ExchangeRefusal> {
  constructor({ audit, ...options }: ExchangeRefusalsOptions) {
    super({
      ...options,
      source: 'token_exchange',
      wording: {
        one: 'token exchange request',
        many: 'token exchange requests',
        things: 'requests',
        writeFailed: 'token exchange: cannot write the access_events row of refused requests',
      },
      logFields: ({ apiKeyId }) => ({ apiKeyId }),
      // The key id named is kept on the first row only: a summary row counts requests of any key.
      writeRow: ({ peer, outcome, count, detail, first }) =>
        audit.record({ operation: 'exchange', outcome: outcome as RefusedOutcome, peer, apiKeyId: first?.apiKeyId, detail, count }),
    });
  }
}
