-- The Okta hook's `match: email` weighs every grant carrying the address, in SQL: which of them has
-- an id_token that vouches for it must be readable without opening the sealed id_token.
-- vouched_email: the stored id_token's `email`, lower-cased, when it says `email_verified: true`;
-- '' when it vouches for no address (or there is no id_token). It follows the id_token: replaced
-- whenever the id_token is, kept whenever the id_token is kept.
-- vouched_email_checked_at: the id_token_observed_at of the id_token vouched_email was read from.
-- When the two differ (or vouched_email is NULL) the value is unknown and the hook opens the
-- id_token instead: rows from before this migration, and rows whose id_token a sidecar of an earlier
-- release replaced during a rolling update (it does not know these columns). No backfill: the
-- id_tokens are sealed.
ALTER TABLE grants ADD COLUMN vouched_email text;
ALTER TABLE grants ADD COLUMN vouched_email_checked_at timestamptz;

-- A revoked grant keeps no extras (an IdP may have put a refresh token there): revocations from
-- now on erase them with the tokens; these are the ones revoked before.
UPDATE grants SET extras = NULL WHERE status = 'revoked' AND extras IS NOT NULL;
