-- The audit trail, version 2: added to version 1 (ncc_audit_v1.sql), which stays as it is.
--
-- * Every HTTP try of a submission attempt is a row of its own (`http_tries`), with its status
--   (or the error when no answer came) and its timing: an attempt that ended "HTTP 500 after
--   4 tries" says which four, when, and how long each took.
-- * An attempt may end `unconfirmed`: its POST got no answer, and where the regulator's
--   honouring of Idempotency-Key is not confirmed the job does not resend it; a person asks
--   the regulator and records the answer (`ncc-report resolve`).

CREATE TABLE IF NOT EXISTS ncc_audit.http_tries (
    try_id         bigserial   PRIMARY KEY,
    submission_id  bigint      NOT NULL REFERENCES ncc_audit.submissions (submission_id),
    try_number     integer     NOT NULL,   -- 1 for the first try of a call
    method         text        NOT NULL,
    path           text        NOT NULL,
    started_at     timestamptz NOT NULL,
    duration_ms    numeric     NOT NULL,
    http_status    integer,                -- NULL: no answer
    error          text,
    retain_until   timestamptz NOT NULL DEFAULT now() + interval '7 years'
);
CREATE INDEX IF NOT EXISTS http_tries_submission ON ncc_audit.http_tries (submission_id);

DROP TRIGGER IF EXISTS retain_http_tries ON ncc_audit.http_tries;
CREATE TRIGGER retain_http_tries BEFORE DELETE ON ncc_audit.http_tries
    FOR EACH ROW EXECUTE FUNCTION ncc_audit.refuse_early_delete();

ALTER TABLE ncc_audit.submissions DROP CONSTRAINT IF EXISTS submissions_outcome_check;
ALTER TABLE ncc_audit.submissions ADD CONSTRAINT submissions_outcome_check CHECK (outcome IN
    ('uploading', 'submitting', 'accepted', 'rejected', 'failed', 'interrupted', 'unconfirmed'));
