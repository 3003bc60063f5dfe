// capture_events: one row per capture, keyed by capture_id, so a replayed capture is applied at
// most once; and the summary rows of responses that carried no tokens.
import type pg from 'pg';
import type { Capture } from '../capture/types.js';
import { fingerprint, type KeyRing } from '../keys/key-ring.js';
import { withTransaction } from './pool.js';
import { erasedSql } from './tombstones.js';

/** What capture_events keeps at most of an error code and of a detail (characters). */
export const MAX_EVENT_TEXT = 200;

/** A capture_events row that stands for `count` responses of one kind (ingest/capture-refusals.ts). */
export type CaptureSummary = Capture & { count?: number };

/** The fingerprint a token is found by (never the token), or null without one. */
export function fingerprintOrNull(ring: KeyRing, token: string | undefined): string | null {
  return token ? fingerprint(ring, token) : null;
}

/**
 * Inserts the events not seen before; returns their capture ids (a replayed capture is skipped)
 * with the outcome recorded: a login of a user erased after it was observed is `erased`.
 */
export async function insertEvents(client: pg.PoolClient, ring: KeyRing, captures: readonly CaptureSummary[]): Promise<Map<string, string>> {
  const fp = (token: string | undefined) => fingerprintOrNull(ring, token);
  const columns: unknown[][] = Array.from({ length: 12 }, () => []);
  for (const capture of captures) {
    const tokens = capture.tokens;
    // A profile is recorded as unmatched until it links a held grant.
    const outcome = capture.outcome === 'profile' ? 'unmatched' : capture.outcome;
    [
      capture.captureId,
      capture.observedAt,
      capture.idp,
      capture.subject ?? null,
      capture.httpStatus ?? null,
      outcome,
      capture.errorCode?.slice(0, MAX_EVENT_TEXT) ?? null,
      // Our own words, never the IdP's (capture/); cut all the same, as error_code is.
      capture.detail?.slice(0, MAX_EVENT_TEXT) ?? null,
      fp(tokens?.accessToken ?? capture.profile?.accessToken),
      fp(tokens?.refreshToken),
      fp(tokens?.idToken),
      capture.count ?? 1,
    ].forEach((value, index) => void columns[index]!.push(value));
  }
  const { rows } = await client.query<{ capture_id: string; outcome: string }>(
    `INSERT INTO capture_events (capture_id, observed_at, idp, subject, http_status, outcome, error_code, detail,
                                 access_token_fp, refresh_token_fp, id_token_fp, count)
     SELECT capture_id, observed_at, idp, subject, http_status,
            CASE WHEN outcome = 'stored' AND ${erasedSql('event.idp', 'event.subject', 'event.observed_at')} THEN 'erased' ELSE outcome END,
            error_code, detail, access_token_fp, refresh_token_fp, id_token_fp, count
     FROM unnest($1::uuid[], $2::timestamptz[], $3::text[], $4::text[], $5::int[], $6::text[], $7::text[],
                 $8::text[], $9::text[], $10::text[], $11::text[], $12::int[])
       AS event(capture_id, observed_at, idp, subject, http_status, outcome, error_code, detail, access_token_fp, refresh_token_fp, id_token_fp, count)
     ON CONFLICT (capture_id) DO NOTHING
     RETURNING capture_id, outcome`,
    columns,
  );
  return new Map(rows.map((row) => [row.capture_id, row.outcome]));
}

/**
 * Summary rows of responses that carried no tokens (idp_error, unparseable, ...), written past
 * the spool: a relaxed commit (no wait for the WAL flush), as nothing here can be lost but a count.
 */
export async function recordCaptureSummaries(pool: pg.Pool, ring: KeyRing, summaries: readonly CaptureSummary[]): Promise<void> {
  await withTransaction(pool, async (client) => {
    await client.query("SET LOCAL synchronous_commit = 'off'");
    await insertEvents(client, ring, summaries);
  });
}
