-- The audit trail, version 5: added to versions 1 to 4, which stay as they are.
--
-- * The evidence archive: for each accepted submission, where its evidence lies in the object
--   store (the exact files uploaded, the request posted, the regulator's answer, the attempt's
--   audit rows), locked write-once until `retain_until`, and the SHA-256 of each object and of
--   the manifest listing them. A missing row for an accepted submission is what the next run
--   archives, and what NccEvidenceNotArchived pages for meanwhile.
-- * The regulator's answer is kept as it came (`response_text`), so that the archive holds it
--   byte for byte even when it is written by a later run.
-- * Database backups are runs too (command `backup`).

CREATE TABLE IF NOT EXISTS ncc_audit.archives (
    submission_id   bigint      PRIMARY KEY REFERENCES ncc_audit.submissions (submission_id),
    bucket          text        NOT NULL,
    key_prefix      text        NOT NULL,   -- LICENCE/REPORT/PERIOD/submission-ID/
    objects         jsonb       NOT NULL,   -- [{"key", "sha256", "bytes"}]
    manifest_sha256 text        NOT NULL,
    archived_at     timestamptz NOT NULL DEFAULT now(),
    retain_until    timestamptz NOT NULL    -- the objects' Object Lock, and this row's
);

DROP TRIGGER IF EXISTS retain_archives ON ncc_audit.archives;
CREATE TRIGGER retain_archives BEFORE DELETE ON ncc_audit.archives
    FOR EACH ROW EXECUTE FUNCTION ncc_audit.refuse_early_delete();

ALTER TABLE ncc_audit.submissions ADD COLUMN IF NOT EXISTS response_text text;

ALTER TABLE ncc_audit.runs DROP CONSTRAINT IF EXISTS runs_command_check;
ALTER TABLE ncc_audit.runs ADD CONSTRAINT runs_command_check CHECK (command IN
    ('daily', 'weekly', 'monthly', 'incidents', 'backup'));
