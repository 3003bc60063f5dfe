-- Refusals are summarised, not written one row each: an unauthenticated or malformed Okta hook
-- call, or a token response that is plainly no token response (idp_error, unparseable, too_large),
-- gets a row of its own only when it is the first of its kind in an interval; the rest of the
-- interval becomes one row whose count says how many it stands for. Every earlier row stands for one.
-- ADD COLUMN with a constant default rewrites nothing (Postgres 11+).
ALTER TABLE access_events ADD COLUMN count integer NOT NULL DEFAULT 1;
ALTER TABLE capture_events ADD COLUMN count integer NOT NULL DEFAULT 1;
