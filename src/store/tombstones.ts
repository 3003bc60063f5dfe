// Tombstones: an erased user stays erased. Deleting a subject (store/erase.ts) records
// (idp, subject, erased_at) in the same transaction; the capture writer then drops any capture of
// that user observed at or before erased_at (one still in a spool, a replay, a held grant linked
// later), recording its event as `erased`. A capture observed after it is a new login. An erasure
// for every IdP is one row with idp '*' (no IdP name can be '*').
//
// The writer checks tombstones inside its batch transaction, so an erasure must not commit between
// that check and the batch's commit: each batch holds ROW SHARE on the table, an erasure takes
// EXCLUSIVE (which waits for the batches in flight and holds new ones off until it commits). ROW SHARE
// conflicts with nothing else (purge, autovacuum), so batches never wait on each other through it.
import type pg from 'pg';

/** Opening statement of a capture batch (store/grants.ts): no erasure commits while it runs. */
export const HOLD_OFF_ERASURES = 'LOCK TABLE tombstones IN ROW SHARE MODE';
/** Opening statement of an erasure: waits for the capture batches in flight, holds new ones off. */
export const HOLD_OFF_CAPTURE_WRITES = 'LOCK TABLE tombstones IN EXCLUSIVE MODE';

/** The idp of a tombstone that erases the subject at every IdP. */
export const EVERY_IDP = '*';

/**
 * SQL condition: the user (idp, subject) was erased at or after `observedAt` (SQL expressions), so
 * a capture observed then must not be stored. One primary-key probe per row.
 */
export function erasedSql(idp: string, subject: string, observedAt: string): string {
  return `EXISTS (SELECT 1 FROM tombstones t WHERE t.subject = ${subject} AND t.idp IN (${idp}, '${EVERY_IDP}') AND t.erased_at >= ${observedAt})`;
}

/** Writes (or moves later) the tombstones of `pairs`, all at one time: the moment of the erasure. */
export async function writeTombstones(client: pg.PoolClient, pairs: ReadonlyArray<{ idp: string; subject: string }>): Promise<void> {
  // One row per pair: an upsert may touch a row only once.
  const unique = [...new Map(pairs.map((pair) => [JSON.stringify([pair.idp, pair.subject]), pair])).values()];
  if (unique.length === 0) return;
  await client.query(
    `INSERT INTO tombstones (idp, subject, erased_at)
     SELECT pair.idp, pair.subject, erasure.at FROM unnest($1::text[], $2::text[]) AS pair(idp, subject), (SELECT clock_timestamp() AS at) AS erasure
     ON CONFLICT (idp, subject) DO UPDATE SET erased_at = GREATEST(tombstones.erased_at, EXCLUDED.erased_at)`,
    [unique.map((pair) => pair.idp), unique.map((pair) => pair.subject)],
  );
}
