// A refresh the IdP refused with invalid_grant (the rules: operations/refresh.ts): the stored refresh
// token is dead, so the grant is marked revoked (a login makes it active again), but only while the
// claim is still this attempt's: a holder that took it over decides otherwise. At an IdP seen
// rotating refresh tokens this is the signature of reuse detection: another holder of the same token
// (Okta, which keeps its own copy, or a copy elsewhere) spent it first, and the IdP may have revoked
// the whole family, that holder's tokens included.
import type pg from 'pg';
import type { Logger } from 'pino';
import type { VaultError } from '../store/errors.js';
import { withLockedGrant } from '../store/grant-lock.js';
import { idpSeenRotating } from '../store/policy-grants.js';
import { releaseClaim } from '../store/refresh-claims.js';
import { revokedError } from './refresh-refusals.js';
import { markRevoked } from './revoke.js';

export interface InvalidGrantContext {
  pool: pg.Pool;
  lockTimeoutMs: number;
  logger: Logger | undefined;
  /** Counted per IdP (token_tap_refresh_family_revoked_total) when the IdP was seen rotating. */
  onFamilyRevoked: ((idp: string) => void) | undefined;
}

/** Marks the grant revoked (while the claim is this attempt's) and returns the error the caller throws. */
export async function refusedStoredToken(context: InvalidGrantContext, idp: string, subject: string, claimId: string): Promise<VaultError> {
  const { pool, lockTimeoutMs, logger } = context;
  const rotating = await withLockedGrant(pool, idp, subject, lockTimeoutMs, async (tx, row) => {
    if (row && (await releaseClaim(tx, idp, subject, claimId))) await markRevoked(tx, idp, subject);
    return idpSeenRotating(tx, idp);
  });
  if (rotating) {
    context.onFamilyRevoked?.(idp);
    logger?.warn(
      { idp, subject },
      'IdP refused the stored refresh token (invalid_grant) although it rotates refresh tokens: another holder (Okta, or a copy) spent this token, and reuse detection may have revoked the whole family; grant marked revoked',
    );
  } else {
    logger?.warn({ idp, subject }, 'IdP refused the stored refresh token (invalid_grant); grant marked revoked');
  }
  return revokedError(idp, subject, 'the IdP refused the stored refresh token (invalid_grant)');
}
