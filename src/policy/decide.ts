// The refresh-token policy's decision: which action a grant is due at time `now`. Pure: the runner
// (policy/runner.ts) reads the facts, in SQL for the candidates and again under the grant's row lock
// before it acts, and both ask this.
import type { RefreshTokenPolicy } from '../config/refresh-token-policy.js';

/** What the policy knows of a grant (migration 000013's columns, with their fallbacks for older rows). */
export interface GrantFacts {
  status: 'active' | 'revoked';
  hasRefreshToken: boolean;
  /** The interactive login that began the refresh-token chain (max_age counts from it). */
  chainBeganAt: Date;
  /** When the stored refresh token was first seen. */
  tokenSince: Date;
  /** The last refresh answer written, whoever asked; null: none since the login. */
  lastRefreshedAt: Date | null;
  /** The last login or refresh a caller asked for (idle_max counts from it). */
  lastUsedAt: Date;
}

export type ExpireReason = 'max_age' | 'idle_max';
export type PolicyDecision = { action: 'expire'; reason: ExpireReason } | { action: 'rotate' } | undefined;

/** A grants row as read by SELECT * (store/grant-reads.ts GrantRow), the columns the facts need. */
export interface FactRow {
  status: 'active' | 'revoked';
  refresh_token: unknown;
  captured_at: Date;
  refresh_token_observed_at: Date | null;
  refresh_token_first_seen_at?: Date | null | undefined;
  chain_began_at?: Date | null | undefined;
  last_refreshed_at?: Date | null | undefined;
  last_login_at?: Date | null | undefined;
  last_used_at?: Date | null | undefined;
}

/**
 * The facts of a row. Rows from before migration 000013 lack them, and a sidecar of an earlier
 * release writes a refresh token without them (the facts then belong to an older token): a row
 * whose refresh token was captured after the last login and the last refresh it knows of was
 * written by such a writer. For both, the refresh token's capture time is when it was first seen,
 * and the chain and the last use count from the row's last capture (captured_at).
 * The same rules are written in SQL in store/policy-grants.ts.
 */
export function factsOf(row: FactRow): GrantFacts {
  if (writtenByUnknownWriter(row)) {
    const last = row.captured_at;
    return {
      status: row.status,
      hasRefreshToken: hasToken(row),
      chainBeganAt: last,
      tokenSince: row.refresh_token_observed_at ?? last,
      lastRefreshedAt: row.last_refreshed_at ?? null,
      lastUsedAt: row.last_used_at && row.last_used_at > last ? row.last_used_at : last,
    };
  }
  const tokenSince = row.refresh_token_first_seen_at ?? row.refresh_token_observed_at ?? row.captured_at;
  return {
    status: row.status,
    hasRefreshToken: hasToken(row),
    chainBeganAt: row.chain_began_at ?? tokenSince,
    tokenSince,
    lastRefreshedAt: row.last_refreshed_at ?? null,
    lastUsedAt: row.last_used_at ?? row.captured_at,
  };
}

const hasToken = (row: FactRow) => row.refresh_token !== null && row.refresh_token !== undefined;

/** The stored refresh token is newer than every login and refresh the facts record. */
export function writtenByUnknownWriter(row: FactRow): boolean {
  if (!row.refresh_token_observed_at) return false;
  const known = Math.max(row.last_login_at?.getTime() ?? -Infinity, row.last_refreshed_at?.getTime() ?? -Infinity);
  return row.refresh_token_observed_at.getTime() > known;
}

const since = (at: Date, now: Date) => now.getTime() - at.getTime();

/**
 * Expiry first: max_age, then idle_max. Otherwise a rotation once the stored refresh token, or the
 * last refresh, is rotate_every old: at an IdP that hands the same refresh token back, a refresh is
 * all rotating can do, so it happens once per period too, not at every run.
 * Only an active grant holding a refresh token is acted on.
 */
export function decide(facts: GrantFacts, policy: RefreshTokenPolicy, now: Date): PolicyDecision {
  if (facts.status !== 'active' || !facts.hasRefreshToken) return undefined;
  if (policy.maxAgeMs !== undefined && since(facts.chainBeganAt, now) >= policy.maxAgeMs) return { action: 'expire', reason: 'max_age' };
  if (policy.idleMaxMs !== undefined && since(facts.lastUsedAt, now) >= policy.idleMaxMs) return { action: 'expire', reason: 'idle_max' };
  if (policy.rotateEveryMs !== undefined) {
    const fresh = facts.lastRefreshedAt && facts.lastRefreshedAt > facts.tokenSince ? facts.lastRefreshedAt : facts.tokenSince;
    if (since(fresh, now) >= policy.rotateEveryMs) return { action: 'rotate' };
  }
  return undefined;
}
