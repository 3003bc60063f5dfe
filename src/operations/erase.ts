// Erasing a user (privacy requests): optionally revoke their grants at the IdPs first, then delete
// everything stored about them (store/erase.ts), tombstone included.
import type pg from 'pg';
import { activeGrantsToErase, checkErasable, eraseSubject, type EraseRequest, type EraseResult } from '../store/erase.js';

export type { EraseResult } from '../store/erase.js';

export interface EraseUserRequest extends EraseRequest {
  /** Revoke each grant at its IdP first (where revocation is configured): operations/revoke.ts's GrantRevoker. */
  revoker?: { revoke(idp: string, subject: string): Promise<unknown> } | undefined;
}

export async function eraseUser(pool: pg.Pool, request: EraseUserRequest): Promise<EraseResult> {
  const { revoker, ...erasure } = request;
  if (revoker) {
    // Refused before anything is revoked, as it would be before anything is deleted.
    await checkErasable(pool, erasure);
    // A failed revocation stops the deletion: the tokens would stay alive at the IdP unnoticed.
    for (const grant of await activeGrantsToErase(pool, erasure)) await revoker.revoke(grant.idp, grant.subject);
  }
  return eraseSubject(pool, erasure);
}
