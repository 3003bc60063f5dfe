// Deleting everything stored about a user (privacy requests): their grants, the capture events
// that name them, and profile hints. access_events rows stay: they record who did what, this
// deletion included.
import type pg from 'pg';
import { withTransaction } from './pool.js';
import { VaultError } from './errors.js';

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
    deleted.sort((a, b) => a.idp.localeCompare(b.idp) || a.subject.localeCompare(b.subject));
    return { deleted, captureEventsDeleted: events.rowCount ?? 0 };
  });
}
