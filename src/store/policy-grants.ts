// The SQL of the refresh-token policy runner (policy/runner.ts): one run at a time across sidecars
// (a session advisory lock), the grants of one IdP that may be due, and whether an IdP was seen
// rotating. Times are Postgres's clock, so sidecars with skewed clocks agree on what is due.
import type pg from 'pg';

/** The policy run's session advisory lock (the migrations' is MIGRATION_LOCK_ID, 0x746f6b65). */
export const POLICY_LOCK_ID = 7_461_696_573;

/**
 * Runs `run` holding the policy lock on a connection of its own, or returns undefined at once when
 * another sidecar holds it. A connection lost mid-run lets the lock go with it: another run may then
 * start, and the refresh claims (store/refresh-claims.ts) still keep two refreshes of one grant apart.
 */
export async function withPolicyLock<T>(pool: pg.Pool, run: () => Promise<T>): Promise<T | undefined> {
  const client = await pool.connect();
  let broken: Error | undefined;
  try {
    const { rows } = await client.query<{ locked: boolean }>('SELECT pg_try_advisory_lock($1) AS locked', [POLICY_LOCK_ID]);
    if (!rows[0]!.locked) return undefined;
    try {
      return await run();
    } finally {
      await client.query('SELECT pg_advisory_unlock($1)', [POLICY_LOCK_ID]).catch((error: Error) => (broken = error));
    }
  } catch (error) {
    broken ??= error as Error;
    throw error;
  } finally {
    client.release(broken);
  }
}

/** The thresholds of one IdP's policy, in ms (undefined: not set). */
export interface PolicyThresholds {
  maxAgeMs: number | undefined;
  idleMaxMs: number | undefined;
  rotateEveryMs: number | undefined;
}

/** A grant that may be due: the columns policy/decide.ts factsOf reads; `refresh_token` only says whether there is one. */
export interface CandidateRow {
  subject: string;
  status: 'active' | 'revoked';
  refresh_token: true | null;
  captured_at: Date;
  refresh_token_observed_at: Date | null;
  refresh_token_first_seen_at: Date | null;
  chain_began_at: Date | null;
  last_refreshed_at: Date | null;
  last_login_at: Date | null;
  last_used_at: Date | null;
}

// The rules of policy/decide.ts factsOf in SQL, over the grants columns prefixed `t` (`grants.` in
// the upsert, where EXCLUDED is in scope too): a refresh token captured after every login and refresh
// the facts record was written by a sidecar that does not keep them (or before migration 000013).
const unknownWriter = (t = '') => `(${t}refresh_token_observed_at > COALESCE(GREATEST(${t}last_login_at, ${t}last_refreshed_at), '-infinity'))`;
const tokenSince = (t = '') =>
  `CASE WHEN ${unknownWriter(t)} THEN ${t}refresh_token_observed_at ELSE COALESCE(${t}refresh_token_first_seen_at, ${t}refresh_token_observed_at, ${t}captured_at) END`;
/** When the grant's refresh-token chain began, as the policy counts max_age. */
export const chainBeganSql = (t = '') => `CASE WHEN ${unknownWriter(t)} THEN ${t}captured_at ELSE COALESCE(${t}chain_began_at, ${tokenSince(t)}) END`;
/** The grant's last use, as the policy counts idle_max. */
export const lastUsedSql = (t = '') =>
  `CASE WHEN ${unknownWriter(t)} THEN GREATEST(${t}last_used_at, ${t}captured_at) ELSE COALESCE(${t}last_used_at, ${t}captured_at) END`;
const CHAIN = chainBeganSql();
const USED = lastUsedSql();
const FRESH = `GREATEST(${tokenSince()}, last_refreshed_at)`;
const after = (at: string, param: string) => `(${at} + ${param}::float8 * interval '1 millisecond')`;
/** When a grant's refresh-token chain began, as max_age counts it here: the report's chain age (store/refresh-token-report.ts) reads the same. */
export const CHAIN_BEGAN_AT_SQL = CHAIN;

/**
 * Up to `limit` active grants of `idp` holding a refresh token that one of the thresholds makes due
 * now, the longest due first, and Postgres's now. The decision itself is policy/decide.ts's. A grant
 * whose policy action failed less than `retryAfterMs` ago is left out, and one that failed before
 * comes after those that never did: grants that keep failing never hold up the others.
 */
export async function dueGrants(
  pool: pg.Pool,
  idp: string,
  thresholds: PolicyThresholds,
  limit: number,
  retryAfterMs: number,
): Promise<{ now: Date; rows: CandidateRow[] }> {
  const dueAt = `LEAST(${after(CHAIN, '$2')}, ${after(USED, '$3')}, ${after(FRESH, '$4')})`;
  const { rows } = await pool.query<Omit<CandidateRow, 'refresh_token'> & { refresh_token: boolean; now: Date }>(
    `SELECT subject, status, (refresh_token IS NOT NULL) AS refresh_token, captured_at, refresh_token_observed_at, refresh_token_first_seen_at,
            chain_began_at, last_refreshed_at, last_login_at, last_used_at, now() AS now
     FROM grants
     WHERE idp = $1 AND status = 'active' AND refresh_token IS NOT NULL AND ${dueAt} <= now()
       AND (policy_failed_at IS NULL OR ${after('policy_failed_at', '$6')} <= now())
     ORDER BY policy_failed_at IS NOT NULL, ${dueAt}
     LIMIT $5`,
    [idp, thresholds.maxAgeMs ?? null, thresholds.idleMaxMs ?? null, thresholds.rotateEveryMs ?? null, limit, retryAfterMs],
  );
  const now = rows[0]?.now ?? (await pool.query<{ now: Date }>('SELECT now() AS now')).rows[0]!.now;
  // refresh_token here says only whether there is one (never the ciphertext): null when not.
  return { now, rows: rows.map(({ now: _now, ...row }) => ({ ...row, refresh_token: row.refresh_token ? (true as const) : null })) };
}

/** Records that a policy action on the grant failed (dueGrants backs off from it). */
export async function markPolicyFailed(pool: pg.Pool, idp: string, subject: string): Promise<void> {
  await pool.query('UPDATE grants SET policy_failed_at = now() WHERE idp = $1 AND subject = $2', [idp, subject]);
}

/** Postgres's clock now (the policy judges a locked row against it). */
export async function databaseNow(client: pg.PoolClient | pg.Pool): Promise<Date> {
  return (await client.query<{ now: Date }>('SELECT clock_timestamp() AS now')).rows[0]!.now;
}

/** Whether a refresh answer of any grant of `idp` carried a new refresh token last time (reuse detection's signature). */
export async function idpSeenRotating(client: pg.PoolClient | pg.Pool, idp: string): Promise<boolean> {
  const { rows } = await client.query<{ rotating: boolean }>('SELECT EXISTS (SELECT 1 FROM grants WHERE idp = $1 AND refresh_rotates) AS rotating', [idp]);
  return rows[0]!.rotating;
}
