// Refresh claims (migration 000010): the committed row that says "this holder is spending this
// grant's refresh token at the IdP now". SQL only; the rules are src/operations/refresh.ts's. Every
// time is Postgres's clock, so sidecars with skewed clocks agree on when a claim expires.
import type pg from 'pg';

type Queryable = pg.Pool | pg.PoolClient;

export interface RefreshClaim {
  claimId: string;
  holder: string;
  claimedAt: Date;
  expiresAt: Date;
  /** expires_at has passed (Postgres's clock). */
  expired: boolean;
  /**
   * The grant's refresh token is no longer the one the claim was taken to spend: the holder's
   * answer was written (by it, or by its pump from the spooled copy), or a login brought another.
   */
  settled: boolean;
  /** How long Postgres has been up (since its postmaster started), in ms: a restart's claims expired while it was down. */
  postgresUpMs: number;
}

/** What a caller waiting on another holder's claim polls. `version` undefined: the grant is gone. */
export interface ClaimProgress {
  version: number | undefined;
  status: string | undefined;
  claim: RefreshClaim | undefined;
}

// The refresh token's identity without opening it: when it was captured. A key rotation re-seals
// it without changing this; any write of another refresh token changes it. Rows from before 000004
// have no refresh_token_observed_at; the same COALESCE the upsert uses keeps them stable.
const REFRESH_TOKEN_SEEN = 'COALESCE(g.refresh_token_observed_at, CASE WHEN g.refresh_token IS NULL THEN NULL ELSE g.captured_at END)';

const CLAIM_COLUMNS = `c.claim_id, c.holder, c.claimed_at, c.expires_at,
  c.expires_at <= clock_timestamp() AS expired,
  (${REFRESH_TOKEN_SEEN}) IS DISTINCT FROM c.refresh_token_seen AS settled,
  (extract(epoch FROM clock_timestamp() - pg_postmaster_start_time()) * 1000)::float8 AS postgres_up_ms`;

interface ClaimRow {
  claim_id: string | null;
  holder: string;
  claimed_at: Date;
  expires_at: Date;
  expired: boolean;
  settled: boolean;
  postgres_up_ms: number;
}

function toClaim(row: ClaimRow): RefreshClaim | undefined {
  if (!row.claim_id) return undefined;
  return {
    claimId: row.claim_id,
    holder: row.holder,
    claimedAt: row.claimed_at,
    expiresAt: row.expires_at,
    expired: row.expired,
    settled: row.settled,
    postgresUpMs: row.postgres_up_ms,
  };
}

/** The grant's claim, if any (inside the transaction that locked the grant row). */
export async function readClaim(client: Queryable, idp: string, subject: string): Promise<RefreshClaim | undefined> {
  const { rows } = await client.query<ClaimRow>(
    `SELECT ${CLAIM_COLUMNS} FROM refresh_claims c JOIN grants g USING (idp, subject) WHERE c.idp = $1 AND c.subject = $2`,
    [idp, subject],
  );
  return rows[0] ? toClaim(rows[0]) : undefined;
}

/**
 * Claims the grant for `holdMs` (replacing an expired, settled or own earlier claim), inside the
 * transaction that locked the grant row. The caller commits before it calls the IdP.
 */
export async function takeClaim(
  client: pg.PoolClient,
  claim: { idp: string; subject: string; claimId: string; holder: string; holdMs: number },
): Promise<{ expiresAt: Date }> {
  const { rows } = await client.query<{ expires_at: Date }>(
    `INSERT INTO refresh_claims AS c (idp, subject, claim_id, holder, claimed_at, expires_at, grant_version, refresh_token_seen)
     SELECT g.idp, g.subject, $3, $4, clock_timestamp(), clock_timestamp() + $5 * interval '1 millisecond', g.version, ${REFRESH_TOKEN_SEEN}
     FROM grants g WHERE g.idp = $1 AND g.subject = $2
     ON CONFLICT (idp, subject) DO UPDATE SET claim_id = EXCLUDED.claim_id, holder = EXCLUDED.holder, claimed_at = EXCLUDED.claimed_at,
       expires_at = EXCLUDED.expires_at, grant_version = EXCLUDED.grant_version, refresh_token_seen = EXCLUDED.refresh_token_seen
     RETURNING c.expires_at`,
    [claim.idp, claim.subject, claim.claimId, claim.holder, Math.max(1, Math.floor(claim.holdMs))],
  );
  return { expiresAt: rows[0]!.expires_at };
}

/** Ends one claim (only that attempt's: a claim taken over since stays). True when it was there. */
export async function releaseClaim(client: Queryable, idp: string, subject: string, claimId: string): Promise<boolean> {
  const { rowCount } = await client.query('DELETE FROM refresh_claims WHERE idp = $1 AND subject = $2 AND claim_id = $3', [idp, subject, claimId]);
  return (rowCount ?? 0) > 0;
}

/**
 * The grant's refresh token was spent at the IdP and the answer that replaced it was set aside (a
 * token over its bound): it is removed, inside the transaction holding the row lock, so no one
 * presents it again (an IdP with reuse detection would revoke the whole family). The claim taken
 * to spend it is settled by this (the grant's refresh token is no longer the claimed one).
 */
export async function retireSpentRefreshToken(client: pg.PoolClient, idp: string, subject: string): Promise<void> {
  // No new updated_at: callers waiting on the claim are not served this as a refresh; they look
  // again and are told the grant has no refresh token. The token's facts (000013) go with it.
  await client.query(
    `UPDATE grants SET refresh_token = NULL, refresh_token_key_id = NULL, refresh_token_expires_at = NULL, refresh_token_observed_at = NULL,
                       refresh_token_fp = NULL, refresh_token_first_seen_at = NULL, chain_began_at = NULL, version = version + 1
     WHERE idp = $1 AND subject = $2 AND refresh_token IS NOT NULL`,
    [idp, subject],
  );
}

/** One poll of a waiting caller, without locks: the grant's version and status, and its claim. */
export async function claimProgress(pool: pg.Pool, idp: string, subject: string): Promise<ClaimProgress> {
  const { rows } = await pool.query<ClaimRow & { version: number; status: string }>(
    `SELECT g.version, g.status, ${CLAIM_COLUMNS} FROM grants g LEFT JOIN refresh_claims c USING (idp, subject) WHERE g.idp = $1 AND g.subject = $2`,
    [idp, subject],
  );
  const row = rows[0];
  return { version: row?.version, status: row?.status, claim: row ? toClaim(row) : undefined };
}
