-- Each sealed token field names its own key, so a login that lacks a field (many IdPs send a
-- refresh token only at first consent) keeps the stored ciphertext in SQL, without opening it:
-- a sidecar whose key ring lacks the stored key (a rolling key rollout) cannot lose it.
ALTER TABLE grants ADD COLUMN refresh_token_key_id text;
ALTER TABLE grants ADD COLUMN id_token_key_id text;
UPDATE grants SET refresh_token_key_id = key_id WHERE refresh_token IS NOT NULL;
UPDATE grants SET id_token_key_id = key_id WHERE id_token IS NOT NULL;

-- When each of those tokens was captured: a login or refresh answer applied late (a replayed
-- spool, another sidecar's slower batch) replaces a refresh token or id_token only when it is
-- newer than the stored one, and fills in one that nothing newer replaced. NULL (rows from before
-- this migration, or a sidecar that does not know the column): captured_at.
ALTER TABLE grants ADD COLUMN refresh_token_observed_at timestamptz;
ALTER TABLE grants ADD COLUMN id_token_observed_at timestamptz;

-- Whether the grant's id_token was verified (signature against the IdP's JWKS, pinned issuer,
-- Okta's client as audience) before it was stored. Rows from before verification existed are not.
ALTER TABLE grants ADD COLUMN verified boolean NOT NULL DEFAULT false;

ALTER TABLE capture_events DROP CONSTRAINT capture_events_outcome_check;
ALTER TABLE capture_events ADD CONSTRAINT capture_events_outcome_check
  CHECK (outcome IN ('stored', 'idp_error', 'unparseable', 'too_large', 'no_subject', 'linked', 'unmatched', 'unverified'));
