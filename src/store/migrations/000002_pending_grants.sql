-- Grants whose token response named no user (no id_token: GitHub, Facebook, ...), held until the
-- IdP's profile call names the user of their access token. Tokens sealed as one payload, bound to
-- the capture id.
CREATE TABLE pending_grants (
  capture_id       uuid        PRIMARY KEY,
  idp              text        NOT NULL,
  access_token_fp  text        NOT NULL,
  observed_at      timestamptz NOT NULL,
  key_id           text        NOT NULL,
  payload          bytea       NOT NULL
);

CREATE INDEX pending_grants_by_fp ON pending_grants (idp, access_token_fp, observed_at);

-- A profile seen before its token response was written (another sidecar, or a replay): the
-- user of an access token, kept briefly so the token response links when it arrives.
CREATE TABLE subject_hints (
  idp              text        NOT NULL,
  access_token_fp  text        NOT NULL,
  subject          text        NOT NULL,
  email            text,
  observed_at      timestamptz NOT NULL,
  PRIMARY KEY (idp, access_token_fp)
);

ALTER TABLE capture_events DROP CONSTRAINT capture_events_outcome_check;
ALTER TABLE capture_events ADD CONSTRAINT capture_events_outcome_check
  CHECK (outcome IN ('stored', 'idp_error', 'unparseable', 'too_large', 'no_subject', 'linked', 'unmatched'));
