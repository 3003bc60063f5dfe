// Revoking a grant: RFC 7009 at the IdP when it has a revocation_url, then the grant is marked
// revoked and its tokens erased. The row stays locked throughout, so no refresh can rotate the
// refresh token between the IdP's revocation and the mark.
import type pg from 'pg';
import { grantNotFound, VaultError } from '../store/errors.js';
import { openGrant, rereadGrant, withLockedGrant } from '../store/grant-lock.js';
import { IdpCallError, type IdpClients } from '../idp/client.js';
import type { GrantRecord, GrantRow, GrantStore } from '../store/grants.js';

/**
 * Marks a grant revoked inside the caller's transaction (which holds the row lock). Its tokens are
 * erased: they are dead at the IdP, and a vault should not keep what it cannot use. The extras go
 * with them (an IdP may have put a token there, Slack's authed_user.refresh_token), and with the
 * id_token what it vouched for, and the facts of the refresh token (migration 000013), so a login
 * written by a sidecar that does not keep them finds none of the old token's.
 *
 * What a later login is measured against (store/grant-upsert.ts): an operator's revocation (and an
 * IdP's invalid_grant) cuts off everything captured before it committed (updated_at). The policy's
 * expiry (`seenOnly`) cuts off only what it saw, the newest capture in the locked row
 * (revoked_through): a login observed before the expiry committed but written after it (the spool,
 * the IdP's revocation call under the row lock, a skewed clock) makes the grant active again.
 */
export async function markRevoked(client: pg.PoolClient, idp: string, subject: string, options: { seenOnly?: boolean } = {}): Promise<void> {
  await client.query(
    `UPDATE grants SET status = 'revoked', access_token = NULL, refresh_token = NULL, id_token = NULL, extras = NULL, access_token_fp = NULL,
                       refresh_token_key_id = NULL, id_token_key_id = NULL, refresh_token_observed_at = NULL, id_token_observed_at = NULL,
                       vouched_email = '', vouched_email_checked_at = NULL,
                       refresh_token_fp = NULL, refresh_token_first_seen_at = NULL, chain_began_at = NULL,
                       revoked_through = CASE WHEN $3::boolean THEN captured_at END, policy_failed_at = NULL,
                       updated_at = clock_timestamp(), version = version + 1
     WHERE idp = $1 AND subject = $2`,
    [idp, subject, options.seenOnly === true],
  );
}

/** A revoked grant's cut-off moves to this commit (updated_at), for every capture (no revoked_through). */
async function tightenCutOff(client: pg.PoolClient, idp: string, subject: string): Promise<void> {
  await client.query(
    `UPDATE grants SET revoked_through = NULL, updated_at = clock_timestamp(), version = version + 1
     WHERE idp = $1 AND subject = $2 AND status = 'revoked' AND revoked_through IS NOT NULL`,
    [idp, subject],
  );
}

export interface RevokeResult {
  grant: GrantRecord;
  revokedAtIdp: boolean;
  /** `onlyIf` said no under the row lock: nothing was done. */
  skipped?: boolean;
}

export interface RevokeConditions {
  /** Judged under the row lock before anything is revoked (the refresh-token policy: still due?). */
  onlyIf?: (row: GrantRow, tx: pg.PoolClient) => Promise<boolean>;
  /** The policy's expiry: a cut-off only for the captures the locked row holds (markRevoked). */
  seenOnly?: boolean;
  /** Run in the revocation's transaction before it commits (the policy's audit row): if it fails, nothing is revoked in the vault. */
  audit?: (tx: pg.PoolClient, done: RevokeDone) => Promise<void>;
  /**
   * The IdP refusing the revocation, or unreachable, still erases in the vault and marks the grant
   * revoked (the policy's expiry: the vault must not keep a token the policy says is too old);
   * `idpFailure` then says why. Without it such a failure leaves the grant unchanged.
   */
  eraseWhenIdpFails?: boolean;
}

/** What the revocation did, for its audit row. */
export interface RevokeDone {
  revokedAtIdp: boolean;
  skipped: boolean;
  /** The IdP's revocation failed (eraseWhenIdpFails): its message, naming the IdP and OAuth error only. */
  idpFailure?: string;
}

export interface GrantRevokerOptions {
  pool: pg.Pool;
  store: GrantStore;
  clients: IdpClients;
  lockTimeoutMs?: number;
}

export class GrantRevoker {
  constructor(private readonly options: GrantRevokerOptions) {}

  /** Revoking a revoked grant succeeds and changes nothing. */
  async revoke(idp: string, subject: string, conditions: RevokeConditions = {}): Promise<RevokeResult> {
    const { pool, store, clients } = this.options;
    const client = clients.get(idp);
    return withLockedGrant(pool, idp, subject, this.options.lockTimeoutMs ?? 30_000, async (tx, row) => {
      let idpFailure: string | undefined;
      const done = async (result: RevokeResult): Promise<RevokeResult> => {
        await conditions.audit?.(tx, { revokedAtIdp: result.revokedAtIdp, skipped: result.skipped === true, ...(idpFailure ? { idpFailure } : {}) });
        return result;
      };
      if (!row) throw grantNotFound(idp, subject);
      if (row.status === 'revoked') {
        // Revoked by the policy, which cut off only what it saw: an operator's (or an IdP's) revocation
        // now cuts off everything captured before it commits, as it would on an active grant.
        if (!conditions.seenOnly) await tightenCutOff(tx, idp, subject);
        return done({ grant: openGrant(store, row), revokedAtIdp: false });
      }
      if (conditions.onlyIf && !(await conditions.onlyIf(row, tx))) return done({ grant: openGrant(store, row), revokedAtIdp: false, skipped: true });
      let revokedAtIdp = false;
      if (client?.canRevoke) {
        const grant = openGrant(store, row);
        // The refresh token first: revoking it ends the whole grant at most IdPs (RFC 7009 2.1).
        const tokens = [
          ['refresh_token', grant.refreshToken],
          ['access_token', grant.accessToken],
        ] as const;
        try {
          for (const [hint, token] of tokens) {
            if (token && (await client.revoke(token, hint)) === 'revoked') revokedAtIdp = true;
          }
        } catch (error) {
          if (!(error instanceof IdpCallError)) throw error;
          if (conditions.eraseWhenIdpFails) idpFailure = error.message;
          else
            throw new VaultError(`${error.message}; the grant is unchanged, try again`, error.kind === 'unavailable' ? 'unavailable' : 'failed_precondition', {
              cause: error,
            });
        }
      }
      await markRevoked(tx, idp, subject, { seenOnly: conditions.seenOnly === true });
      return done({ grant: openGrant(store, await rereadGrant(tx, idp, subject)), revokedAtIdp });
    });
  }
}
