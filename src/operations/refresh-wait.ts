// A caller that finds another holder's live refresh claim on a grant waits for its result rather
// than spend the refresh token itself (the rules: operations/refresh.ts).
import type pg from 'pg';
import type { Logger } from 'pino';
import { sleep } from '../lib/abortable-wait.js';
import { VaultError } from '../store/errors.js';
import { claimProgress, type RefreshClaim } from '../store/refresh-claims.js';

export interface HolderWait {
  pool: pg.Pool;
  idp: string;
  subject: string;
  claim: RefreshClaim;
  /** The grant's version when the claim was seen. */
  version: number;
  /** Epoch ms: the caller's deadline. */
  waitUntil: number;
  /** Epoch ms: an expired claim counts as expired only from then (Postgres came back lately: refresh-takeover.ts). */
  takeoverAfter?: number | undefined;
  pollMs: number;
  /** Aborts when the sidecar stops: the wait ends at once. */
  stopping: AbortSignal;
  logger: Logger | undefined;
}

/**
 * Polls until the grant changes or the claim expires, settles or is replaced, never past
 * `waitUntil`; the caller then looks again (and serves what the holder wrote). A claim released
 * with nothing written is UNAVAILABLE: the holder's refresh failed, perhaps after its request
 * reached the IdP (a timeout), so the waiting caller does not spend the token on its own.
 */
export async function waitForHolder(wait: HolderWait): Promise<void> {
  const { idp, subject, claim, version, takeoverAfter } = wait;
  wait.logger?.info(
    { idp, subject, holder: claim.holder, claimExpiresAt: claim.expiresAt },
    'another holder is refreshing this grant; waiting for its result instead of spending the refresh token',
  );
  const expired = (now: RefreshClaim) => now.expired && (takeoverAfter === undefined || Date.now() >= takeoverAfter);
  for (;;) {
    const left = wait.waitUntil - Date.now();
    if (left <= 0) {
      const until =
        takeoverAfter === undefined
          ? `claimed until ${claim.expiresAt.toISOString()}`
          : `its claim expired while Postgres was away; it has until ${new Date(takeoverAfter).toISOString()} to write its answer`;
      throw new VaultError(
        `grant (${idp}, ${subject}) is being refreshed by ${claim.holder} (${until}); its result did not come within this call's wait; try again`,
        'unavailable',
      );
    }
    await sleep(Math.min(wait.pollMs, left), wait.stopping);
    if (wait.stopping.aborted) return;
    const now = await claimProgress(wait.pool, idp, subject);
    if (now.version !== version || (now.claim && (now.claim.claimId !== claim.claimId || expired(now.claim) || now.claim.settled))) return;
    if (!now.claim) throw new VaultError(`the refresh of grant (${idp}, ${subject}) by ${claim.holder} did not succeed; try again`, 'unavailable');
  }
}
