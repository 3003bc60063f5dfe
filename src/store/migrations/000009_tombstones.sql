-- Erasures that stick: a capture of an erased user observed at or before erased_at is dropped by
-- the capture writer (its event recorded as 'erased'), wherever it waited meanwhile (a spool, a
-- held grant). idp '*': the subject was erased at every IdP. Purged with the event retention.
CREATE TABLE tombstones (
  idp        text        NOT NULL,
  subject    text        NOT NULL,
  erased_at  timestamptz NOT NULL,
  PRIMARY KEY (idp, subject)
);

CREATE INDEX tombstones_by_erased_at ON tombstones (erased_at);

-- 'erased' joins the outcomes capture_events allows. The list is read from the constraint as it is
-- (other migrations before this one may have added outcomes of their own), not written out again.
-- NOT VALID: rows already there passed the narrower constraint, so there is nothing to check, and
-- a validating scan would hold capture_events' ACCESS EXCLUSIVE lock (old sidecars' writes too) for
-- the whole table. New rows are checked as ever.
DO $$
DECLARE
  allowed text[];
BEGIN
  SELECT array_agg(DISTINCT value[1] ORDER BY value[1]) INTO allowed
  FROM pg_constraint, regexp_matches(pg_get_constraintdef(pg_constraint.oid), '''([a-z_]+)''', 'g') AS value
  WHERE conname = 'capture_events_outcome_check' AND conrelid = 'capture_events'::regclass;
  ALTER TABLE capture_events DROP CONSTRAINT capture_events_outcome_check;
  EXECUTE format('ALTER TABLE capture_events ADD CONSTRAINT capture_events_outcome_check CHECK (outcome IN (%s)) NOT VALID',
    (SELECT string_agg(quote_literal(outcome), ', ') FROM unnest(array_append(allowed, 'erased')) AS outcome));
END
$$;
