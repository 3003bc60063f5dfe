-- A token response whose stream ended before Envoy signalled its end is recorded as `incomplete`:
-- a form or JSON body cut short can still parse, so it is not read and changes no grant.
-- The outcome CHECK is rebuilt from the outcomes it allows now, plus 'incomplete', rather than
-- from a list written here: an outcome an earlier migration added is kept whatever it is.
-- NOT VALID: rows already there passed the narrower constraint, so there is nothing to check, and
-- a validating scan would hold capture_events' ACCESS EXCLUSIVE lock (old sidecars' writes too) for
-- the whole table. New rows are checked as ever.
DO $$
DECLARE
  allowed text;
BEGIN
  SELECT string_agg(quote_literal(outcome), ', ' ORDER BY outcome) INTO allowed
  FROM (
    SELECT (regexp_matches(pg_get_constraintdef(oid), '''([^'']+)''', 'g'))[1] AS outcome
    FROM pg_constraint
    WHERE conrelid = 'capture_events'::regclass AND conname = 'capture_events_outcome_check'
    UNION
    SELECT 'incomplete'
  ) AS outcomes;
  ALTER TABLE capture_events DROP CONSTRAINT capture_events_outcome_check;
  EXECUTE format('ALTER TABLE capture_events ADD CONSTRAINT capture_events_outcome_check CHECK (outcome IN (%s)) NOT VALID', allowed);
END
$$;
