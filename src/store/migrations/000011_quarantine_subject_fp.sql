-- Erasure reaches the quarantine: each quarantined capture written from now on carries a keyed
-- fingerprint of its user's subject (keys/key-ring.ts subjectFingerprint: an HMAC under the
-- fingerprint key, never the subject itself), so an erasure (store/erase.ts) deletes the user's
-- quarantined captures in its transaction. Rows quarantined before this migration, and captures that
-- name no user (a held token response), keep NULL: no erasure finds them; they go with the retention
-- purge (quarantined_at older than the event retention), and until then a retry of one observed
-- before an erasure is dropped by the tombstone, which the purge keeps while such a row remains.
-- The table is small (captures that failed alone), so a plain index build here is brief.
ALTER TABLE quarantined_captures ADD COLUMN subject_fp text;

CREATE INDEX quarantined_captures_by_subject_fp ON quarantined_captures (subject_fp) WHERE subject_fp IS NOT NULL;
