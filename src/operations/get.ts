// Reading a grant for a front door: the stored grant, opened, refreshed at its IdP first when its
// access token expires within the caller's window (TokenVault GetGrant's automatic refresh). The API,
// the CLI and the token exchange read grants through here, so a read means the same at each door.
import type { GrantRefresher } from './refresh.js';
import { grantNotFound, VaultError } from '../store/errors.js';
import type { GrantRecord, GrantStore, OpenableGrantRow } from '../store/grants.js';

export interface GetGrantRequest {
  idp: string;
  subject: string;
  /** The grant's row when the front door read it already (the API, with the key check), still sealed. */
  prefetched?: OpenableGrantRow | undefined;
  /** A revoked grant is refused (a service: the user must sign in again); operators are shown it. */
  refuseRevoked: boolean;
  /** Refresh first when the access token expires within this many seconds and a refresh token is stored; 0: never. */
  refreshWithinSeconds?: number;
  /** Epoch ms: the longest a refresh waits for another holder's (the caller's deadline). */
  waitUntil?: number | undefined;
}

export interface GetGrantResult {
  grant: GrantRecord;
  /** This call refreshed the grant at the IdP before answering. */
  refreshed: boolean;
  /**
   * The refresh before the read failed because the IdP was unavailable while the stored access token
   * still works: that token is served, and this says why it was not refreshed.
   */
  refreshFailed?: string;
}

export interface GrantReader {
  store: Pick<GrantStore, 'decrypt' | 'findGrant'>;
  /** Needed only for reads that may refresh. */
  refresher?: Pick<GrantRefresher, 'refresh'> | undefined;
}

/** The grant, from the row already read when there is one. */
async function readGrant(reader: GrantReader, request: GetGrantRequest): Promise<GrantRecord> {
  const { idp, subject } = request;
  const grant = request.prefetched ? reader.store.decrypt(request.prefetched) : await reader.store.findGrant(idp, subject);
  if (!grant) throw grantNotFound(idp, subject);
  if (request.refuseRevoked && grant.status === 'revoked')
    throw new VaultError(`grant (${idp}, ${subject}) is revoked: the user must sign in again`, 'failed_precondition');
  return grant;
}

export async function getGrant(reader: GrantReader, request: GetGrantRequest): Promise<GetGrantResult> {
  const { idp, subject } = request;
  const readAt = new Date();
  const grant = await readGrant(reader, request);
  const windowSeconds = request.refreshWithinSeconds ?? 0;
  const expiresAt = grant.accessTokenExpiresAt?.getTime();
  if (!(windowSeconds > 0 && expiresAt !== undefined && expiresAt - Date.now() < windowSeconds * 1000 && grant.refreshToken))
    return { grant, refreshed: false };
  if (!reader.refresher) throw new Error('getGrant: a read that may refresh needs the refresher');
  try {
    const result = await reader.refresher.refresh(idp, subject, {
      arrivedAt: readAt,
      onlyIfExpiringWithinMs: windowSeconds * 1000,
      waitUntil: request.waitUntil,
    });
    return { grant: result.grant, refreshed: result.refreshedByThisCall };
  } catch (error) {
    // An IdP that is down should not take away a token that still works.
    if (!(error instanceof VaultError && error.outcome === 'unavailable' && expiresAt > Date.now())) throw error;
    return { grant, refreshed: false, refreshFailed: error.message };
  }
}
