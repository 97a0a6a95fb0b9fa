-- The ACM platform's write side, as the compliance jobs rely on it (schema `acm`).
--
-- The ACM engine owns these tables in production (YugabyteDB YSQL); this file is the
-- description the jobs were written against, and what the tests load into PostgreSQL.
-- The jobs never write here. Their contract is the `ncc_read_v2` schema (ncc_read_v2.sql).

CREATE SCHEMA IF NOT EXISTS acm;

-- One row per call the engine screened. `screening_latency_ms` is the time the engine took
-- to reach its verdict: the "detection latency" of the NCC daily statistics.
CREATE TABLE IF NOT EXISTS acm.call_records (
    call_id              bigint      PRIMARY KEY,
    started_at           timestamptz NOT NULL,
    a_number             text        NOT NULL,
    b_number             text        NOT NULL,
    screening_latency_ms integer     NOT NULL CHECK (screening_latency_ms >= 0)
);
CREATE INDEX IF NOT EXISTS call_records_started_at ON acm.call_records (started_at);

-- One row per fraud alert; numbers as the engine saw them (not necessarily E.164).
CREATE TABLE IF NOT EXISTS acm.fraud_alerts (
    alert_id     text        PRIMARY KEY,
    detected_at  timestamptz NOT NULL,
    call_id      bigint,
    severity     text        NOT NULL CHECK (severity IN ('CRITICAL', 'HIGH', 'MEDIUM', 'LOW')),
    fraud_type   text        NOT NULL,
    a_number     text        NOT NULL,
    b_number     text        NOT NULL,
    -- FALSE_POSITIVE: an analyst cleared the alert; the false positive rate counts these.
    status       text        NOT NULL CHECK (status IN ('OPEN', 'CONFIRMED', 'FALSE_POSITIVE', 'CLOSED'))
);
CREATE INDEX IF NOT EXISTS fraud_alerts_detected_at ON acm.fraud_alerts (detected_at);

-- What the platform did about an alert: DISCONNECT (the call was torn down),
-- BLOCK_PATTERN (a number range or route was blocked), MONITOR (no action on the call).
CREATE TABLE IF NOT EXISTS acm.actions (
    action_id bigint      PRIMARY KEY,
    alert_id  text        NOT NULL REFERENCES acm.fraud_alerts (alert_id),
    taken_at  timestamptz NOT NULL,
    action    text        NOT NULL CHECK (action IN ('DISCONNECT', 'BLOCK_PATTERN', 'MONITOR'))
);
CREATE INDEX IF NOT EXISTS actions_alert ON acm.actions (alert_id);
CREATE INDEX IF NOT EXISTS actions_taken_at ON acm.actions (taken_at);

-- Availability of the screening service, sampled once a minute by the monitoring stack.
CREATE TABLE IF NOT EXISTS acm.uptime_samples (
    sampled_at timestamptz NOT NULL,
    up         boolean     NOT NULL,
    PRIMARY KEY (sampled_at)
);
