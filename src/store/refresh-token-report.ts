// The figures of the refresh-token report (`token-tap report`, and the per-IdP gauges on /metrics),
// in two aggregate statements: one pass over grants, and the policy's access_events rows of the
// last 24 hours (by the access_events_by_at index). No token is opened.
import type pg from 'pg';
import { CHAIN_BEGAN_AT_SQL } from './policy-grants.js';

/** One IdP's figures, as Postgres counts them. */
export interface IdpFigures {
  idp: string;
  grants: number;
  active: number;
  /** Active grants holding a refresh token. */
  withRefreshToken: number;
  /** true: a refresh answer of one of its grants carried a new refresh token last time; false: only others; null: none seen. */
  rotatesRefreshTokens: boolean | null;
  /** Active grants whose refresh token has an expiry (the IdP sent refresh_token_expires_in or the like). */
  refreshTokenExpiryKnown: number;
  /** Age of the oldest refresh token held by an active grant; null without one. */
  oldestRefreshTokenAgeSeconds: number | null;
  /** Age of the oldest refresh-token chain of an active grant, counted as the policy's max_age counts it (store/policy-grants.ts); null without one. */
  oldestChainAgeSeconds: number | null;
  /** Grants whose id_token was verified before it was stored. */
  verified: number;
  /** Rotations seen, over its grants (store/grant-upsert.ts). */
  rotationsSeen: number;
  /** The last interactive login captured (NULL for rows from before migration 000013: their captured_at). */
  lastCaptureAt: Date | null;
}

export interface PolicyActionCount {
  idp: string;
  action: string;
  outcome: string;
  count: number;
}

export const POLICY_CALLER = 'policy';

export async function readIdpFigures(pool: pg.Pool): Promise<IdpFigures[]> {
  const { rows } = await pool.query<IdpFigures>(
    `SELECT idp,
            count(*)::int AS "grants",
            count(*) FILTER (WHERE status = 'active')::int AS "active",
            count(*) FILTER (WHERE status = 'active' AND refresh_token IS NOT NULL)::int AS "withRefreshToken",
            bool_or(refresh_rotates) AS "rotatesRefreshTokens",
            count(*) FILTER (WHERE status = 'active' AND refresh_token IS NOT NULL AND refresh_token_expires_at IS NOT NULL)::int AS "refreshTokenExpiryKnown",
            extract(epoch FROM now() - min(COALESCE(refresh_token_first_seen_at, refresh_token_observed_at, captured_at))
                    FILTER (WHERE status = 'active' AND refresh_token IS NOT NULL))::float8 AS "oldestRefreshTokenAgeSeconds",
            extract(epoch FROM now() - min(${CHAIN_BEGAN_AT_SQL}) FILTER (WHERE status = 'active' AND refresh_token IS NOT NULL))::float8 AS "oldestChainAgeSeconds",
            count(*) FILTER (WHERE verified)::int AS "verified",
            COALESCE(sum(rotations_seen), 0)::int AS "rotationsSeen",
            max(COALESCE(last_login_at, captured_at)) AS "lastCaptureAt"
     FROM grants GROUP BY idp ORDER BY idp`,
  );
  return rows;
}

/**
 * The policy's actions of the last `hours` hours, per IdP, action and outcome. The runner writes its
 * rows with no API key and operation rotate or expire (policy/runner.ts); an API key's name is free
 * text, so a key named "policy" must not have its calls counted as the policy's.
 */
export async function readPolicyActions(pool: pg.Pool, hours = 24): Promise<PolicyActionCount[]> {
  const { rows } = await pool.query<PolicyActionCount>(
    `SELECT idp, operation AS action, outcome, sum(count)::int AS count
     FROM access_events WHERE at > now() - $1::float8 * interval '1 hour' AND caller = $2 AND api_key_id IS NULL
       AND operation IN ('rotate', 'expire') AND idp IS NOT NULL AND outcome <> 'started'
     GROUP BY idp, operation, outcome ORDER BY idp, operation, outcome`,
    [hours, POLICY_CALLER],
  );
  return rows;
}
