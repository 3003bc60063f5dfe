-- What the refresh-token report and policy (docs/refresh-token-hygiene.md) read per grant, kept by
-- the capture writer and the refresh path (store/grant-upsert.ts), never by opening a token:
--  refresh_token_fp             keyed fingerprint of the stored refresh token (as capture_events has
--                               it): tells a refresh answer that rotated from one that handed the
--                               same token back.
--  refresh_token_first_seen_at  when the stored refresh token was first seen (refresh_token_observed_at
--                               moves when an IdP hands the same token back; this does not).
--  chain_began_at               the interactive login that brought the refresh token its chain of
--                               rotations began with (max_age counts from it).
--  last_refreshed_at            the last refresh answer written (the vault's, whoever asked).
--  last_login_at                the last interactive login captured (a refresh answer is none).
--  last_used_at                 the last login or refresh a caller asked for; the policy's own
--                               rotations do not count (idle_max counts from it).
--  rotations_seen               refresh answers that carried a new refresh token.
--  refresh_rotates              the last refresh answer carried a new refresh token: true; none or
--                               the same one: false; NULL while no refresh answer was seen.
--  revoked_through              set by the policy's expiry only (operations/revoke.ts markRevoked): the
--                               newest capture time the revocation saw; a login captured later makes
--                               the grant active again even when it is written after the revocation
--                               (an operator's revoke leaves it NULL: updated_at is the cut-off).
--  policy_failed_at             the last policy action on the grant that failed (policy/runner.ts): the
--                               runner leaves it out for a back-off, so grants that keep failing (an
--                               IdP refusing, a token that cannot be opened) do not take every run's
--                               budget; any write of the grant (store/grant-upsert.ts, the revocation)
--                               clears it.
-- The refresh token's expiry, when the IdP gave one, is refresh_token_expires_at (000001).
-- Rows from before this migration have NULLs: readers fall back to refresh_token_observed_at and
-- captured_at, and the first write after it (a login, a refresh answer, a policy rotation) stores
-- chain_began_at and last_used_at as those fallbacks said before it moved them (store/grant-upsert.ts),
-- so rotations never reset max_age or idle_max; no UPDATE here (it would rewrite the table). ADD COLUMN without a volatile default rewrites nothing; one statement takes the ACCESS
-- EXCLUSIVE lock once (store/migrate.ts bounds the wait for it, and retries).
ALTER TABLE grants
  ADD COLUMN IF NOT EXISTS refresh_token_fp text,
  ADD COLUMN IF NOT EXISTS refresh_token_first_seen_at timestamptz,
  ADD COLUMN IF NOT EXISTS chain_began_at timestamptz,
  ADD COLUMN IF NOT EXISTS last_refreshed_at timestamptz,
  ADD COLUMN IF NOT EXISTS last_login_at timestamptz,
  ADD COLUMN IF NOT EXISTS last_used_at timestamptz,
  ADD COLUMN IF NOT EXISTS rotations_seen integer NOT NULL DEFAULT 0,
  ADD COLUMN IF NOT EXISTS refresh_rotates boolean,
  ADD COLUMN IF NOT EXISTS revoked_through timestamptz,
  ADD COLUMN IF NOT EXISTS policy_failed_at timestamptz;
