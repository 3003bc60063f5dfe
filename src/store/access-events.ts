// The access_events table: one row per TokenVault call or operator command. It names the caller,
// the operation, the grant and the outcome; it never holds a token, a key or a secret. Refused
// Okta hook calls are summarised (hook/refusals.ts): a row may stand for `count` of them.
//
// Rows are written with group commit: calls that arrive while a write is in flight wait for the
// next one, which inserts them all in one statement, so one WAL flush serves the whole batch.
// Each caller learns that its own row is durably committed before it answers (design §5). When a
// batch fails, its rows are written one at a time, so a row Postgres refuses fails only its own call.
//
// A durable row commits with the pool's commitDurability (TOKEN_TAP_COMMIT_DURABILITY: on,
// remote_write or remote_apply), whatever the database's default.
// `relaxedCommit` (TOKEN_TAP_AUDIT_RELAXED_COMMIT=true, opt-in): the commit does not wait for the
// WAL flush (synchronous_commit off for this statement alone); Postgres flushes within
// wal_writer_delay (200 ms by default), so a crash of Postgres in that window loses those rows.
// bench/RESULTS.md has what it buys.
import type pg from 'pg';
import type { Outcome } from '../lib/errors.js';
import { commitDurability, isPostgresUnavailable } from './pool.js';
import { asError } from '../lib/errors.js';

/** The Okta token inline hook's outcomes (hook/server.ts). */
export type HookOutcome = 'patched' | 'no_provider' | 'no_user' | 'no_grant' | 'ambiguous' | 'unverified' | 'email_unverified' | 'bad_request';

/** The token exchange's outcomes (operations/exchange.ts); each answers one OAuth error, or 200. */
export type ExchangeOutcome =
  | 'ok'
  | 'invalid_request'
  | 'unsupported_grant_type'
  | 'unauthorized_client'
  | 'invalid_subject_token'
  | 'invalid_target'
  | 'wrong_idp'
  | 'no_user'
  | 'no_grant'
  | 'ambiguous'
  | 'unverified'
  | 'email_unverified'
  | 'no_token'
  | 'refresh_refused'
  | 'unavailable'
  | 'internal';

/**
 * An error's outcome (lib/errors.ts), `ok`, or `cancelled`: the caller gave up (its deadline passed,
 * or it cancelled) before the answer was decided.
 */
export type AccessOutcome = 'ok' | 'cancelled' | Outcome;

/**
 * The refresh-token policy's (policy/runner.ts); `skipped`: a grant no longer due once it was locked;
 * `started`: a rotation's intent, written before the IdP is called (its outcome follows in a row of its own);
 * `revoke_failed`: an expiry erased in the vault though the IdP's revocation failed.
 */
export type PolicyOutcome = 'ok' | 'skipped' | 'started' | 'revoke_failed' | Outcome;

export interface AccessEvent {
  /** GetGrant, ListGrants, RefreshGrant, RevokeGrant, DeleteSubject, okta_hook, exchange, ... */
  operation: string;
  outcome: AccessOutcome | HookOutcome | PolicyOutcome | ExchangeOutcome;
  apiKeyId?: string | undefined;
  /** The key's name, or "cli:<user>" for operator commands. */
  caller?: string | undefined;
  /** The client certificate's subject, with mTLS. */
  tlsClient?: string | undefined;
  peer?: string | undefined;
  idp?: string | undefined;
  subject?: string | undefined;
  /** Why, in words; never token material. */
  detail?: string | undefined;
  /** How many calls the row stands for: a summary of refusals (hook/refusals.ts) counts several; default 1. */
  count?: number | undefined;
}

const MAX_DETAIL = 500;
const MAX_BATCH = 500;

interface Waiting {
  event: AccessEvent;
  done: (error?: Error) => void;
}

/**
 * Batches in flight at once. With one, every batch waits for the previous one's WAL flush, and a
 * durable commit costs a flush per batch; with a few, Postgres flushes them together.
 */
const MAX_IN_FLIGHT = 3;

export class AccessEventLog {
  private waiting: Waiting[] = [];
  private writers = 0;

  private readonly relaxedCommit: boolean;

  constructor(
    private readonly pool: pg.Pool,
    options: { relaxedCommit?: boolean } = {},
  ) {
    this.relaxedCommit = options.relaxedCommit ?? false;
  }

  /** Resolves once the row is committed. */
  record(event: AccessEvent): Promise<void> {
    return new Promise((resolve, reject) => {
      this.waiting.push({ event, done: (error) => (error ? reject(error) : resolve()) });
      if (this.writers < MAX_IN_FLIGHT) void this.writeAll();
    });
  }

  private async writeAll(): Promise<void> {
    this.writers += 1;
    try {
      while (this.waiting.length > 0) {
        const batch = this.waiting.splice(0, MAX_BATCH);
        try {
          await this.insert(batch.map((entry) => entry.event));
          for (const entry of batch) entry.done();
        } catch (error) {
          // Postgres away: every row would fail the same way, each after its own wait.
          if (batch.length === 1 || isPostgresUnavailable(error)) {
            for (const entry of batch) entry.done(asError(error));
            continue;
          }
          // One bad row (or a blip) must not fail every caller in the batch: each on its own.
          for (const entry of batch) {
            await this.insert([entry.event]).then(
              () => entry.done(),
              (rowError: unknown) => entry.done(asError(rowError)),
            );
          }
        }
      }
    } finally {
      this.writers -= 1;
    }
  }

  /**
   * Writes one row in the caller's transaction (committed with what it records, or not at all), at
   * that transaction's commit durability; no group commit.
   */
  async recordIn(client: pg.PoolClient, event: AccessEvent): Promise<void> {
    await this.insert([event], client);
  }

  private async insert(events: AccessEvent[], client?: pg.PoolClient): Promise<void> {
    const columns: unknown[][] = Array.from({ length: 10 }, () => []);
    for (const event of events) {
      [
        event.operation,
        event.outcome,
        event.apiKeyId ?? null,
        event.caller ?? null,
        event.tlsClient ?? null,
        event.peer ?? null,
        event.idp ?? null,
        event.subject ?? null,
        event.detail?.slice(0, MAX_DETAIL) ?? null,
        event.count ?? 1,
      ].forEach((value, index) => void columns[index]!.push(value));
    }
    // WITH ORDINALITY keeps the rows in call order, so ids follow the order calls finished.
    // set_config(..., true) lasts for this statement's own transaction, so its commit is the one
    // relaxed; the durable level is asked for explicitly, whatever the role's default is.
    // In a caller's transaction its own commit decides (store/pool.ts withTransaction sets it).
    const mode = client ? 'tx' : this.relaxedCommit ? 'off' : commitDurability(this.pool);
    const commitMode = client ? '(SELECT 1) AS commit_mode' : `(SELECT set_config('synchronous_commit', '${mode}', true)) AS commit_mode`;
    await (client ?? this.pool).query({
      name: `token-tap-access-events-${mode}`,
      text: `INSERT INTO access_events (operation, outcome, api_key_id, caller, tls_client, peer, idp, subject, detail, count)
       SELECT operation, outcome, api_key_id, caller, tls_client, peer, idp, subject, detail, count
       FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::int[])
         WITH ORDINALITY AS event(operation, outcome, api_key_id, caller, tls_client, peer, idp, subject, detail, count, n), ${commitMode}
       ORDER BY n`,
      values: columns,
    });
  }
}
