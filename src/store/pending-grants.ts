// Held grants: a token response that names no user waits in pending_grants, sealed, until a
// profile response names the user of its access token; a profile seen first leaves a short-lived
// hint in subject_hints that links the tokens when they arrive.
import type pg from 'pg';
import type { Capture, TokenSet } from '../capture/types.js';
import { fingerprint, open, parseDecrypted, seal, type FieldBinding, type KeyRing } from '../keys/key-ring.js';
import { erasedSql } from './tombstones.js';
import { upsertGrant } from './grant-upsert.js';

/** What the batch being written notes besides its events (GrantStore's RecordResult). */
export interface BatchNotes {
  /** Profiles whose held grant is sealed under a key the ring lacks. */
  heldUnreadable: Array<{ captureId: string; idp: string; keyId: string }>;
  /** Captures dropped for an erasure. */
  erased: string[];
}

interface PendingRow {
  capture_id: string;
  idp: string;
  access_token_fp: string;
  observed_at: Date;
  key_id: string;
  payload: Buffer;
}

/** What a held grant keeps until its user is known. */
interface PendingPayload {
  tokens: TokenSet;
  issuer: string | null;
  clientId: string | null;
  email: string | null;
  httpStatus: number | null;
}

export interface PendingGrant extends PendingPayload {
  captureId: string;
  idp: string;
  observedAt: Date;
}

/** Grants held without a subject, newest first, tokens decrypted (for operators). */
export async function findPending(pool: pg.Pool, ring: KeyRing, idp: string): Promise<PendingGrant[]> {
  const { rows } = await pool.query<PendingRow>('SELECT * FROM pending_grants WHERE idp = $1 ORDER BY observed_at DESC', [idp]);
  return rows.map((row) => ({ captureId: row.capture_id, idp: row.idp, observedAt: row.observed_at, ...openPending(ring, row) }));
}

/** What a held grant's payload is sealed to: its capture, never a user's row. */
export function pendingBinding(idp: string, captureId: string): FieldBinding {
  return { idp, subject: `pending:${captureId}`, field: 'pending' };
}

function openPending(ring: KeyRing, row: PendingRow): PendingPayload {
  return parseDecrypted<PendingPayload>(open(ring, row.key_id, row.payload, pendingBinding(row.idp, row.capture_id)), `held grant ${row.capture_id}`);
}

/** A held grant or profile now names its user: linked, or erased when that user was erased after it was observed. */
async function markLinked(client: pg.PoolClient, notes: BatchNotes, captureId: string, subject: string, erased = false): Promise<void> {
  await client.query('UPDATE capture_events SET outcome = $3, subject = $2 WHERE capture_id = $1', [captureId, subject, erased ? 'erased' : 'linked']);
  if (erased) notes.erased.push(captureId);
}

/** A token response without a user: link it at once if its profile was already seen, else hold it. */
export async function holdOrLink(client: pg.PoolClient, ring: KeyRing, notes: BatchNotes, capture: Capture): Promise<void> {
  const tokens = capture.tokens!;
  const fp = fingerprint(ring, tokens.accessToken!);
  const { rows } = await client.query<{ subject: string; email: string | null }>(
    'DELETE FROM subject_hints WHERE idp = $1 AND access_token_fp = $2 RETURNING subject, email',
    [capture.idp, fp],
  );
  const hint = rows[0];
  if (hint) {
    const erased = await upsertGrant(client, ring, { ...capture, outcome: 'stored', subject: hint.subject, email: capture.email ?? hint.email ?? undefined });
    await markLinked(client, notes, capture.captureId, hint.subject, erased);
    return;
  }
  const payload: PendingPayload = {
    tokens,
    issuer: capture.issuer ?? null,
    clientId: capture.clientId ?? null,
    email: capture.email ?? null,
    httpStatus: capture.httpStatus ?? null,
  };
  await client.query(
    `INSERT INTO pending_grants (capture_id, idp, access_token_fp, observed_at, key_id, payload)
     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (capture_id) DO NOTHING`,
    [
      capture.captureId,
      capture.idp,
      fp,
      capture.observedAt,
      ring.activeKeyId,
      seal(ring, JSON.stringify(payload), pendingBinding(capture.idp, capture.captureId)),
    ],
  );
}

/** A profile names the user of an access token: move the held grant with that token into grants. */
export async function linkProfile(client: pg.PoolClient, ring: KeyRing, notes: BatchNotes, capture: Capture): Promise<void> {
  const profile = capture.profile!;
  const fp = fingerprint(ring, profile.accessToken);
  const { rows } = await client.query<PendingRow>(
    'SELECT * FROM pending_grants WHERE idp = $1 AND access_token_fp = $2 ORDER BY observed_at DESC LIMIT 1 FOR UPDATE',
    [capture.idp, fp],
  );
  const pending = rows[0];
  if (pending && !ring.keys.has(pending.key_id)) {
    notes.heldUnreadable.push({ captureId: capture.captureId, idp: capture.idp, keyId: pending.key_id });
  }
  if (!pending || !ring.keys.has(pending.key_id)) {
    const linked = await client.query('SELECT 1 FROM grants WHERE idp = $1 AND access_token_fp = $2', [capture.idp, fp]);
    if (linked.rowCount === 0) {
      await client.query("DELETE FROM subject_hints WHERE observed_at < now() - interval '10 minutes'");
      // No hint of an erased user: it would link that user's tokens when they arrive.
      const hinted = await client.query(
        `INSERT INTO subject_hints (idp, access_token_fp, subject, email, observed_at)
         SELECT $1, $2, $3, $4, $5 WHERE NOT ${erasedSql('$1', '$3', '$5::timestamptz')}
         ON CONFLICT (idp, access_token_fp) DO UPDATE SET subject = EXCLUDED.subject, email = EXCLUDED.email, observed_at = EXCLUDED.observed_at`,
        [capture.idp, fp, profile.subject, profile.email ?? null, capture.observedAt],
      );
      if (hinted.rowCount === 0) await markLinked(client, notes, capture.captureId, profile.subject, true);
    }
    return;
  }
  const held = openPending(ring, pending);
  const erased = await upsertGrant(client, ring, {
    ...capture,
    captureId: pending.capture_id,
    observedAt: pending.observed_at,
    httpStatus: held.httpStatus ?? undefined,
    outcome: 'stored',
    subject: profile.subject,
    issuer: held.issuer ?? undefined,
    clientId: held.clientId ?? undefined,
    email: held.email ?? profile.email,
    tokens: held.tokens,
  });
  await client.query('DELETE FROM pending_grants WHERE idp = $1 AND access_token_fp = $2', [capture.idp, fp]);
  await markLinked(client, notes, capture.captureId, profile.subject, erased);
  await markLinked(client, notes, pending.capture_id, profile.subject, erased);
}
