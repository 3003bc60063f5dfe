-- Refresh claims: before a sidecar (or the CLI) spends a grant's refresh token at the IdP it claims
-- the grant here, in a committed row, so a refresh on another sidecar waits for its result instead
-- of spending the same token again (IdPs with reuse detection, Okta and Auth0 among them, revoke
-- the whole token family then). A row lock would not do: it dies with its connection, while the
-- IdP call and the answer's outbox outlive it. See src/idp/refresh.ts for the rules.
CREATE TABLE refresh_claims (
  idp                 text        NOT NULL,
  subject             text        NOT NULL,
  -- One per attempt: the holder writes its answer as the claim's own only while this is still here.
  claim_id            uuid        NOT NULL,
  -- Who: hostname/pid/random of the process (for operators; never a secret).
  holder              text        NOT NULL,
  claimed_at          timestamptz NOT NULL,
  -- Postgres's clock: the IdP call timeout plus the outbox apply window after claimed_at.
  expires_at          timestamptz NOT NULL,
  grant_version       integer     NOT NULL,
  -- Which refresh token the claim spends: when it was captured (refresh_token_observed_at, or
  -- captured_at for rows from before 000004). Another value on the grant means the claim settled.
  refresh_token_seen  timestamptz,
  PRIMARY KEY (idp, subject),
  FOREIGN KEY (idp, subject) REFERENCES grants (idp, subject) ON DELETE CASCADE
);
