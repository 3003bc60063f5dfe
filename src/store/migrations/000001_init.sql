-- Grants: the latest tokens per (idp, subject). Token columns hold AES-256-GCM ciphertext
-- (nonce | ciphertext | tag) under key_id, bound to (idp, subject, field, key_id).
CREATE TABLE grants (
  idp                       text        NOT NULL,
  subject                   text        NOT NULL,
  issuer                    text,
  client_id                 text,
  email                     text,
  scope                     text[]      NOT NULL DEFAULT '{}',
  token_type                text,
  key_id                    text        NOT NULL,
  access_token              bytea,
  refresh_token             bytea,
  id_token                  bytea,
  extras                    bytea,
  access_token_fp           text,
  access_token_expires_at   timestamptz,
  refresh_token_expires_at  timestamptz,
  id_token_expires_at       timestamptz,
  status                    text        NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked')),
  captured_at               timestamptz NOT NULL,
  updated_at                timestamptz NOT NULL DEFAULT now(),
  version                   integer     NOT NULL DEFAULT 1,
  PRIMARY KEY (idp, subject)
);

CREATE INDEX grants_by_email ON grants (idp, lower(email));
CREATE INDEX grants_by_access_token_fp ON grants (access_token_fp);

-- Append-only audit of every token response seen. Never a plaintext token: fingerprints are
-- keyed HMACs.
CREATE TABLE capture_events (
  id                 bigserial   PRIMARY KEY,
  capture_id         uuid        NOT NULL UNIQUE,
  observed_at        timestamptz NOT NULL,
  recorded_at        timestamptz NOT NULL DEFAULT now(),
  idp                text        NOT NULL,
  subject            text,
  http_status        integer,
  outcome            text        NOT NULL CHECK (outcome IN ('stored', 'idp_error', 'unparseable', 'too_large', 'no_subject')),
  error_code         text,
  detail             text,
  access_token_fp    text,
  refresh_token_fp   text,
  id_token_fp        text
);

CREATE INDEX capture_events_by_grant ON capture_events (idp, subject, observed_at);
