// Deleting everything stored about a user (privacy requests): their grants, the capture events
// that name them, and profile hints. access_events rows stay: they record who did what, this
// deletion included. A tombstone, written in the same transaction, makes the capture writer drop
// any capture of the user observed before now that is still on its way (store/tombstones.ts).
import type pg from 'pg';
import { withTransaction } from './pool.js';
import { errorCode, VaultError } from './errors.js';
import { EVERY_IDP, HOLD_OFF_CAPTURE_WRITES, writeTombstones } from './tombstones.js';

/** How long an erasure waits for the capture batches in flight (each holds off erasures while it runs) or a grant's row lock. */
const ERASE_LOCK_TIMEOUT_MS = 5_000;
const LOCK_NOT_AVAILABLE = '55P03';

export interface EraseRequest {
  /** Only these IdPs; undefined: every IdP. */
  idps: readonly string[] | undefined;
  subject?: string;
  /** Matches the email claim case-insensitively. */
  email?: string;
  /** Revoke each grant at its IdP first (where revocation is configured); idp/revoke.ts's GrantRevoker. */
  revoker?: { revoke(idp: string, subject: string): Promise<unknown> };
}

export interface EraseResult {
  deleted: Array<{ idp: string; subject: string }>;
  captureEventsDeleted: number;
}

export async function eraseSubject(pool: pg.Pool, request: EraseRequest): Promise<EraseResult> {
  if ((request.subject === undefined) === (request.email === undefined)) throw new VaultError('name the user by subject or by email', 'invalid_argument');
  const idps = request.idps ?? null;
  if (request.revoker) {
    const { rows } = await pool.query<{ idp: string; subject: string }>(
      `SELECT idp, subject FROM grants WHERE ($1::text[] IS NULL OR idp = ANY($1))
         AND ($2::text IS NULL OR subject = $2) AND ($3::text IS NULL OR lower(email) = lower($3)) AND status = 'active'`,
      [idps, request.subject ?? null, request.email ?? null],
    );
    // A failed revocation stops the deletion: the tokens would stay alive at the IdP unnoticed.
    for (const row of rows) await request.revoker.revoke(row.idp, row.subject);
  }
  const opening = [`SET LOCAL lock_timeout = ${ERASE_LOCK_TIMEOUT_MS}`, HOLD_OFF_CAPTURE_WRITES];
  return withTransaction(pool, async (client) => {
    const { rows: deleted } = await client.query<{ idp: string; subject: string }>(
      `DELETE FROM grants WHERE ($1::text[] IS NULL OR idp = ANY($1))
         AND ($2::text IS NULL OR subject = $2) AND ($3::text IS NULL OR lower(email) = lower($3))
       RETURNING idp, subject`,
      [idps, request.subject ?? null, request.email ?? null],
    );
    // By subject, events of the user are deleted even where no grant is left (held, failed logins).
    const pairs = request.subject !== undefined ? undefined : deleted;
    const byUser = `($1::text[] IS NULL OR idp = ANY($1)) AND subject = $2`;
    const byPairs = `(idp, subject) IN (SELECT * FROM unnest($1::text[], $2::text[]))`;
    const params = pairs ? [pairs.map((pair) => pair.idp), pairs.map((pair) => pair.subject)] : [idps, request.subject];
    const events = await client.query(`DELETE FROM capture_events WHERE ${pairs ? byPairs : byUser}`, params);
    await client.query(`DELETE FROM subject_hints WHERE ${pairs ? byPairs : byUser}`, params);
    // By subject the user is erased at the IdPs named (every IdP: '*'), grant or not; by email, the users found.
    const erased = request.subject === undefined ? deleted : (idps ?? [EVERY_IDP]).map((idp) => ({ idp, subject: request.subject! }));
    await writeTombstones(client, erased);
    deleted.sort((a, b) => a.idp.localeCompare(b.idp) || a.subject.localeCompare(b.subject));
    return { deleted, captureEventsDeleted: events.rowCount ?? 0 };
  }, { opening }).catch((error: unknown) => {
    if (errorCode(error) === LOCK_NOT_AVAILABLE) {
      throw new VaultError(`the erasure waited over ${ERASE_LOCK_TIMEOUT_MS} ms for capture writes (or a refresh holding the grant); nothing was deleted, try again`, 'unavailable', { cause: error });
    }
    throw error;
  });
}
