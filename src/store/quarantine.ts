// The quarantine (quarantined_captures, migration 000005): captures the writer could not store,
// set aside so that one bad capture never blocks the ones behind it. SQL only: each row's record
// comes sealed (ingest/quarantine.ts seals and opens it), and nothing here reads a token. Operators
// list and retry them (`token-tap captures`, operations/captures-retry.ts).
// Each names its user only by a keyed fingerprint (subject_fp, 000011): erasure deletes by it
// (store/erase.ts), the retention purge by age (store/purge.ts).
import type pg from 'pg';
import type { Capture } from '../capture/types.js';
import { subjectFingerprint, type KeyRing } from '../keys/key-ring.js';
import type { QuarantineLabel } from './errors.js';
import { erasedSql } from './tombstones.js';

/** Where a capture was when it failed: before verification (a retry verifies it first) or when written. */
export type QuarantineStage = 'verification' | 'write';

/** A capture set aside: what the pump counts and logs (no value of the capture). */
export interface QuarantinedCapture {
  captureId: string;
  idp: string;
  /** A metric label: refused_by_postgres, unreadable or failed. */
  label: QuarantineLabel;
  /** Bounded words naming the SQLSTATE or the error's class. */
  reason: string;
  /** It was in the quarantine already (a spool replayed after a crash): not new. */
  known: boolean;
}

/** A quarantined capture as listed for operators: never its record. */
export interface QuarantineEntry {
  captureId: string;
  idp: string;
  observedAt: Date | null;
  quarantinedAt: Date;
  stage: QuarantineStage;
  reason: string;
  attempts: number;
  keyId: string;
}

interface QuarantineRow {
  capture_id: string;
  idp: string;
  observed_at: Date | null;
  quarantined_at: Date;
  stage: QuarantineStage;
  reason: string;
  attempts: number;
  key_id: string;
  record: Buffer;
}

const MAX_REASON = 200;

/** A capture's record as ingest/quarantine.ts sealed it (sealQuarantined): the key it is under, and the bytes. */
export interface QuarantineRecord {
  keyId: string;
  sealed: Buffer;
}

/** How the writer seals a capture it sets aside (ingest/quarantine.ts sealQuarantined), handed to GrantStore. */
export type QuarantineSealer = (ring: KeyRing, capture: Capture) => QuarantineRecord;

/**
 * Puts `capture`, sealed as `record`, into the quarantine inside the caller's transaction, with a keyed fingerprint of
 * its user's subject (migration 000011) so an erasure finds it. A capture already there (a spool
 * replayed after a crash) stays as it is: a replay is not a new attempt. A capture of a user erased
 * after it was observed is not kept at all (`erased`), as the writer drops it (store/tombstones.ts).
 */
export async function quarantineCapture(
  client: pg.PoolClient,
  ring: KeyRing,
  capture: Capture,
  record: QuarantineRecord,
  stage: QuarantineStage,
  reason: string,
): Promise<{ known: boolean; erased: boolean }> {
  const { keyId, sealed } = record;
  const observedAt = capture.observedAt instanceof Date && !Number.isNaN(capture.observedAt.getTime()) ? capture.observedAt : null;
  // A held token response names no user yet; its profile capture does.
  const subject = capture.subject ?? capture.profile?.subject ?? null;
  // A subject Postgres cannot hold as text (a NUL: often why the capture is here) has no tombstone.
  const tombstoneSubject = subject !== null && !subject.includes('\u0000') ? subject : null;
  const { rows } = await client.query<{ erased: boolean; inserted: number }>(
    `WITH tombstone AS (
       SELECT $9::text IS NOT NULL AND $3::timestamptz IS NOT NULL AND ${erasedSql('$2::text', '$9::text', '$3::timestamptz')} AS erased
     ), inserted AS (
       INSERT INTO quarantined_captures (capture_id, idp, observed_at, stage, reason, key_id, record, subject_fp)
       SELECT $1, $2, $3, $4, $5, $6, $7, $8 FROM tombstone WHERE NOT tombstone.erased
       ON CONFLICT (capture_id) DO NOTHING RETURNING 1
     )
     SELECT (SELECT erased FROM tombstone) AS erased, (SELECT count(*) FROM inserted)::int AS inserted`,
    [
      capture.captureId,
      capture.idp,
      observedAt,
      stage,
      reason.slice(0, MAX_REASON),
      keyId,
      sealed,
      subject === null ? null : subjectFingerprint(ring, subject),
      tombstoneSubject,
    ],
  );
  const { erased, inserted } = rows[0]!;
  return { known: !erased && inserted === 0, erased };
}

/** Quarantined captures, oldest first, optionally of one IdP or with the given ids. */
export async function listQuarantined(
  pool: pg.Pool,
  filter: { idp?: string | undefined; captureIds?: readonly string[] | undefined } = {},
): Promise<QuarantineEntry[]> {
  const { rows } = await pool.query<Omit<QuarantineRow, 'record'>>(
    `SELECT capture_id, idp, observed_at, quarantined_at, stage, reason, attempts, key_id FROM quarantined_captures
     WHERE ($1::text IS NULL OR idp = $1) AND ($2::uuid[] IS NULL OR capture_id = ANY($2::uuid[]))
     ORDER BY quarantined_at, capture_id`,
    [filter.idp ?? null, filter.captureIds && filter.captureIds.length > 0 ? filter.captureIds : null],
  );
  return rows.map((row) => ({
    captureId: row.capture_id,
    idp: row.idp,
    observedAt: row.observed_at,
    quarantinedAt: row.quarantined_at,
    stage: row.stage,
    reason: row.reason,
    attempts: row.attempts,
    keyId: row.key_id,
  }));
}

/** A quarantined capture as a retry reads it: its row, record included (still sealed). */
export interface QuarantinedRecord {
  captureId: string;
  stage: QuarantineStage;
  keyId: string;
  record: Buffer;
}

/** Locks one quarantined capture for a retry in the caller's transaction; undefined when another retry holds it or it is gone. */
export async function lockQuarantined(client: pg.PoolClient, captureId: string): Promise<QuarantinedRecord | undefined> {
  const { rows } = await client.query<QuarantineRow>('SELECT * FROM quarantined_captures WHERE capture_id = $1 FOR UPDATE SKIP LOCKED', [captureId]);
  const row = rows[0];
  return row && { captureId: row.capture_id, stage: row.stage, keyId: row.key_id, record: row.record };
}

/** Takes a capture out of the quarantine (written by a retry), in the caller's transaction. */
export async function deleteQuarantined(client: pg.PoolClient, captureId: string): Promise<void> {
  await client.query('DELETE FROM quarantined_captures WHERE capture_id = $1', [captureId]);
}

/** Counts a failed retry of a quarantined capture, with its reason (bounded): the reason kept and the attempts so far. */
export async function noteFailedRetry(client: pg.PoolClient, captureId: string, reason: string): Promise<{ reason: string; attempts: number }> {
  const bounded = reason.slice(0, MAX_REASON);
  const { rows } = await client.query<{ attempts: number }>(
    'UPDATE quarantined_captures SET attempts = attempts + 1, reason = $2 WHERE capture_id = $1 RETURNING attempts',
    [captureId, bounded],
  );
  return { reason: bounded, attempts: rows[0]!.attempts };
}
