-- The audit trail, version 4: added to versions 1 to 3, which stay as they are.
--
-- * Every run of a report or incidents command is a row of its own (`runs`): when it started
--   and ended on the database's clock, and how (its exit status). The exporter reads it to
--   page before the regulator's deadline when a run failed, was killed, or never started
--   (alerts NccReportRunFailed and NccReportRunNotStarted), not only once the last accepted
--   submission has grown old. A dry run records its run too, and nothing else.

CREATE TABLE IF NOT EXISTS ncc_audit.runs (
    run_id          bigserial   PRIMARY KEY,
    command         text        NOT NULL CHECK (command IN ('daily', 'weekly', 'monthly', 'incidents')),
    license_number  text        NOT NULL,
    environment     text        NOT NULL,  -- sandbox | production
    dry_run         boolean     NOT NULL,
    named_period    text,                  -- what the operator named; NULL: the scheduled run
    started_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,           -- NULL: running, or killed before it could say
    exit_status     integer,               -- ncc-report's exit status (its --help lists them)
    detail          text,
    retain_until    timestamptz NOT NULL DEFAULT now() + interval '7 years'
);
CREATE INDEX IF NOT EXISTS runs_newest
    ON ncc_audit.runs (command, license_number, environment, dry_run, started_at DESC);

DROP TRIGGER IF EXISTS retain_runs ON ncc_audit.runs;
CREATE TRIGGER retain_runs BEFORE DELETE ON ncc_audit.runs
    FOR EACH ROW EXECUTE FUNCTION ncc_audit.refuse_early_delete();
