// The quarantine (quarantined_captures, migration 000005): captures the writer could not store,
// set aside so that one bad capture never blocks the ones behind it. Each is sealed as the spool
// seals a capture, but bound to the quarantine: a spool record copied into a quarantine row (or a
// row into a spool) does not open, so neither can pass for the other. Nothing here reads a token. Operators list and retry them (`token-tap captures`).
// Each names its user only by a keyed fingerprint (subject_fp, 000011): erasure deletes by it
// (store/erase.ts), the retention purge by age (store/purge.ts).
import type pg from 'pg';
import type { Capture } from '../capture/types.js';
import { open, seal, subjectFingerprint, type FieldBinding, type KeyRing } from '../keys/key-ring.js';
import { decodeCapture, encodeCapture } from '../ingest/spool-codec.js';
import { errorName } from '../lib/error-description.js';
import { describeCaptureFailure, isPostgresUnavailable, type QuarantineLabel } from './errors.js';
import { withTransaction } from './pool.js';
import { erasedSql, HOLD_OFF_ERASURES } from './tombstones.js';
import { TokenTapError } from '../lib/errors.js';

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

/** Not the spool's binding (spool-codec.ts): the capture id, and that it is a quarantined capture. */
function quarantineBinding(captureId: string): FieldBinding {
  return { idp: 'quarantine', subject: captureId, field: 'capture' };
}

/** A quarantined capture's record: its JSON under the ring's active key, bound to its capture id and to the quarantine. */
function sealQuarantined(ring: KeyRing, capture: Capture): { keyId: string; sealed: Buffer } {
  return { keyId: ring.activeKeyId, sealed: seal(ring, encodeCapture(capture), quarantineBinding(capture.captureId)) };
}

/** The capture in a quarantine row's record; throws DecryptError (a key missing, other material, or not a quarantine record) or a parse error. */
export function openQuarantined(ring: KeyRing, keyId: string, record: Buffer, captureId: string): Capture {
  return decodeCapture(open(ring, keyId, record, quarantineBinding(captureId)));
}

/** A quarantine row's record re-sealed under the ring's active key (key rotation), opened and sealed whole, never parsed. */
export function resealQuarantined(ring: KeyRing, keyId: string, record: Buffer, captureId: string): Buffer {
  return seal(ring, open(ring, keyId, record, quarantineBinding(captureId)), quarantineBinding(captureId));
}

/**
 * Seals `capture` into the quarantine inside the caller's transaction, with a keyed fingerprint of
 * its user's subject (migration 000011) so an erasure finds it. A capture already there (a spool
 * replayed after a crash) stays as it is: a replay is not a new attempt. A capture of a user erased
 * after it was observed is not kept at all (`erased`), as the writer drops it (store/tombstones.ts).
 */
export async function quarantineCapture(client: pg.PoolClient, ring: KeyRing, capture: Capture, stage: QuarantineStage, reason: string): Promise<{ known: boolean; erased: boolean }> {
  const { keyId, sealed } = sealQuarantined(ring, capture);
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
    [capture.captureId, capture.idp, observedAt, stage, reason.slice(0, MAX_REASON), keyId, sealed, subject === null ? null : subjectFingerprint(ring, subject), tombstoneSubject],
  );
  const { erased, inserted } = rows[0]!;
  return { known: !erased && inserted === 0, erased };
}

/** Quarantined captures, oldest first, optionally of one IdP or with the given ids. */
export async function listQuarantined(pool: pg.Pool, filter: { idp?: string | undefined; captureIds?: readonly string[] | undefined } = {}): Promise<QuarantineEntry[]> {
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

/** What a retry did with one quarantined capture. */
export type RetryOutcome =
  | { captureId: string; result: 'written' }
  /** Its user was erased after it was observed: dropped by the writer (recorded `erased`), no grant. */
  | { captureId: string; result: 'erased' }
  | { captureId: string; result: 'stayed'; reason: string; attempts: number }
  | { captureId: string; result: 'gone' };

export interface RetryDependencies {
  pool: pg.Pool;
  ring: KeyRing;
  /** Writes one capture inside the transaction (GrantStore.writeCaptureIn): erased, when the writer dropped it for a tombstone. */
  write: (client: pg.PoolClient, capture: Capture) => Promise<{ erased: boolean }>;
  /**
   * Verifies a capture quarantined before verification ran, as the pump would have; returns the
   * capture to write, or why it cannot be yet. Throws as the verification step does.
   */
  verify: (capture: Capture) => Promise<Capture | { notYet: string }>;
}

/** Thrown inside the retry transaction to keep the capture quarantined with a reason of our own. */
class Stays extends TokenTapError {
  constructor(readonly reason: string) {
    super(reason, 'failed_precondition');
  }
}

/**
 * Writes a quarantined capture again, in one transaction: written, its quarantine row is deleted
 * in that transaction; failed, the row stays with attempts + 1 and the new reason. Postgres being
 * unavailable throws (nothing changes). A row another retry holds, or one already gone: 'gone'.
 */
export async function retryQuarantined(captureId: string, deps: RetryDependencies): Promise<RetryOutcome> {
  return withTransaction(deps.pool, async (client) => {
    const { rows } = await client.query<QuarantineRow>('SELECT * FROM quarantined_captures WHERE capture_id = $1 FOR UPDATE SKIP LOCKED', [captureId]);
    const row = rows[0];
    if (!row) return { captureId, result: 'gone' };
    await client.query('SAVEPOINT retry');
    try {
      let capture: Capture;
      try {
        capture = openQuarantined(deps.ring, row.key_id, row.record, row.capture_id);
      } catch (error) {
        throw new Stays(`cannot open the quarantined record (${errorName(error)})`);
      }
      if (row.stage === 'verification') {
        let verified: Capture | { notYet: string };
        try {
          verified = await deps.verify(capture);
        } catch (error) {
          throw new Stays(`verifying it failed (${errorName(error)})`);
        }
        if ('notYet' in verified) throw new Stays(verified.notYet);
        capture = verified;
      }
      // Through the writer: a capture of a user erased after it was observed is dropped there.
      const { erased } = await deps.write(client, capture);
      await client.query('DELETE FROM quarantined_captures WHERE capture_id = $1', [captureId]);
      return { captureId, result: erased ? 'erased' : 'written' };
    } catch (error) {
      if (isPostgresUnavailable(error)) throw error;
      await client.query('ROLLBACK TO SAVEPOINT retry');
      const reason = (error instanceof Stays ? error.reason : describeCaptureFailure(error).reason).slice(0, MAX_REASON);
      const { rows: updated } = await client.query<{ attempts: number }>(
        'UPDATE quarantined_captures SET attempts = attempts + 1, reason = $2 WHERE capture_id = $1 RETURNING attempts',
        [captureId, reason],
      );
      return { captureId, result: 'stayed', reason, attempts: updated[0]!.attempts };
    }
    // As a capture batch: no erasure commits between its tombstone check and its commit.
  }, { opening: [HOLD_OFF_ERASURES] });
}
