-- Captures the writer set aside instead of retrying them forever: each failed when written alone
-- for a reason other than Postgres being unavailable (a value Postgres refuses, such as a subject
-- over the btree limit; a held grant that cannot be opened; a verification step that throws).
-- The rest of its batch, and everything behind it, was written. `record` is the capture sealed
-- exactly as in the spool (its JSON under key_id, bound to the capture id), never plaintext;
-- `reason` names the SQLSTATE or the error's class, never a value. `stage` says whether it failed
-- before verification ran (a retry verifies it first) or when written. `token-tap captures retry`
-- writes them again; a capture written leaves this table in the same transaction.
CREATE TABLE quarantined_captures (
  capture_id      uuid        PRIMARY KEY,
  idp             text        NOT NULL,
  observed_at     timestamptz,
  quarantined_at  timestamptz NOT NULL DEFAULT now(),
  stage           text        NOT NULL CHECK (stage IN ('verification', 'write')),
  reason          text        NOT NULL CHECK (length(reason) <= 200),
  attempts        integer     NOT NULL DEFAULT 1,
  key_id          text        NOT NULL,
  record          bytea       NOT NULL
);

CREATE INDEX quarantined_captures_by_idp ON quarantined_captures (idp, quarantined_at);
