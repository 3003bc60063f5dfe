-- The TokenVault API: who may call it, and who did.

-- API keys. The caller holds "ttk_<id>_<secret>"; only a SHA-256 of the secret is kept. The secret
-- is 256 random bits, so a fast hash is enough (nothing to guess), and every call can afford it.
CREATE TABLE api_keys (
  id           text        PRIMARY KEY,
  name         text        NOT NULL,
  secret_hash  bytea       NOT NULL,
  -- IdP names this key may touch; '*' is every IdP.
  idps         text[]      NOT NULL,
  -- get, list, refresh, revoke, delete, read_refresh_token; '*' is all of them.
  operations   text[]      NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  revoked_at   timestamptz
);

-- One row per API call or operator command: who, what, when, outcome. Never a token or a key.
-- api_key_id is not a foreign key: unknown ids presented by a caller are recorded too.
CREATE TABLE access_events (
  id          bigserial   PRIMARY KEY,
  at          timestamptz NOT NULL DEFAULT now(),
  operation   text        NOT NULL,
  outcome     text        NOT NULL,
  api_key_id  text,
  caller      text,
  tls_client  text,
  peer        text,
  idp         text,
  subject     text,
  detail      text
);

CREATE INDEX access_events_by_at ON access_events (at);
CREATE INDEX access_events_by_grant ON access_events (idp, subject, at);

-- Retention purges by age.
CREATE INDEX grants_by_updated_at ON grants (updated_at);
CREATE INDEX capture_events_by_observed_at ON capture_events (observed_at);
