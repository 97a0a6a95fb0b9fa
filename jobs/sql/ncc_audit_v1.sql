-- The compliance jobs' audit trail, version 1 (schema `ncc_audit`).
--
-- Append-only history of every generated package and every submission attempt, kept for
-- seven years. Rows are inserted, an attempt's own outcome is filled in once, and nothing
-- is deleted before its retention date (enforced by a trigger, not by good manners).
-- Applied by the jobs at start (idempotent).

CREATE SCHEMA IF NOT EXISTS ncc_audit;

-- A package: the files generated for one report and period, with their checksums.
CREATE TABLE IF NOT EXISTS ncc_audit.packages (
    package_id     bigserial   PRIMARY KEY,
    report         text        NOT NULL CHECK (report IN ('daily', 'weekly', 'monthly')),
    period         text        NOT NULL,   -- 2026-11-23, 2026-W47, 2026-11
    license_number text        NOT NULL,
    generated_at   timestamptz NOT NULL DEFAULT now(),
    read_contract  text        NOT NULL,   -- ncc_read_v1
    files          jsonb       NOT NULL,   -- [{"name", "sha256", "bytes"}]
    payload_sha256 text        NOT NULL,   -- of all files: identical packages share it
    retain_until   timestamptz NOT NULL DEFAULT now() + interval '7 years'
);
CREATE INDEX IF NOT EXISTS packages_period ON ncc_audit.packages (report, period, license_number);

-- A submission attempt of a package (report) or of one CRITICAL alert (incident).
-- outcome: uploading -> submitting -> accepted | rejected | failed; `interrupted` marks an
-- attempt a later run found unfinished (the process died) and took over.
CREATE TABLE IF NOT EXISTS ncc_audit.submissions (
    submission_id       bigserial   PRIMARY KEY,
    report              text        NOT NULL CHECK (report IN ('daily', 'weekly', 'monthly', 'incident')),
    period              text        NOT NULL,  -- the period, or the alert id of an incident
    license_number      text        NOT NULL,
    package_id          bigint      REFERENCES ncc_audit.packages (package_id),
    environment         text        NOT NULL,  -- sandbox | production
    started_at          timestamptz NOT NULL DEFAULT now(),
    finished_at         timestamptz,
    outcome             text        NOT NULL CHECK (outcome IN
                            ('uploading', 'submitting', 'accepted', 'rejected', 'failed', 'interrupted')),
    idempotency_key     text,
    request_body        jsonb,
    http_status         integer,
    regulator_reference text,
    detail              text,
    resumes             bigint      REFERENCES ncc_audit.submissions (submission_id),
    retain_until        timestamptz NOT NULL DEFAULT now() + interval '7 years'
);
CREATE INDEX IF NOT EXISTS submissions_period ON ncc_audit.submissions (report, period, license_number);
-- The database itself refuses a second accepted submission of a period (or an incident).
CREATE UNIQUE INDEX IF NOT EXISTS one_acceptance_per_period
    ON ncc_audit.submissions (report, period, license_number, environment)
    WHERE outcome = 'accepted';

-- The regulator's view of each submitted incident, refreshed by `ncc-report status incident`.
CREATE TABLE IF NOT EXISTS ncc_audit.incidents (
    alert_id        text        NOT NULL,
    license_number  text        NOT NULL,
    environment     text        NOT NULL,
    incident_id     text        NOT NULL,
    detected_at     timestamptz NOT NULL,
    submitted_at    timestamptz NOT NULL,
    status          text        NOT NULL,
    status_checked_at timestamptz NOT NULL,
    retain_until    timestamptz NOT NULL DEFAULT now() + interval '7 years',
    PRIMARY KEY (alert_id, license_number, environment)
);

-- How far the incident feed has been submitted without gaps: the next run starts here.
CREATE TABLE IF NOT EXISTS ncc_audit.incident_watermark (
    license_number text        NOT NULL,
    environment    text        NOT NULL,
    detected_at    timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (license_number, environment)
);

CREATE OR REPLACE FUNCTION ncc_audit.refuse_early_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.retain_until > now() THEN
        RAISE EXCEPTION 'ncc_audit.%: rows are retained until % (7 years)', TG_TABLE_NAME, OLD.retain_until;
    END IF;
    RETURN OLD;
END
$$;

DROP TRIGGER IF EXISTS retain_packages ON ncc_audit.packages;
CREATE TRIGGER retain_packages BEFORE DELETE ON ncc_audit.packages
    FOR EACH ROW EXECUTE FUNCTION ncc_audit.refuse_early_delete();
DROP TRIGGER IF EXISTS retain_submissions ON ncc_audit.submissions;
CREATE TRIGGER retain_submissions BEFORE DELETE ON ncc_audit.submissions
    FOR EACH ROW EXECUTE FUNCTION ncc_audit.refuse_early_delete();
DROP TRIGGER IF EXISTS retain_incidents ON ncc_audit.incidents;
CREATE TRIGGER retain_incidents BEFORE DELETE ON ncc_audit.incidents
    FOR EACH ROW EXECUTE FUNCTION ncc_audit.refuse_early_delete();
