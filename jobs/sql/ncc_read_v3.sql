-- The compliance jobs' read-side contract, version 3 (schema `ncc_read_v3`).
--
-- What changed from v2 (docs/ncc-compliance.md, "Version 3"): one definition of every
-- statistic at every period length. Calls disconnected and patterns blocked count an alert's
-- action when it was taken before the end of the WAT day the alert was detected in (v2: before
-- the end of the period), and count distinct calls per day. A week or a month is then exactly
-- the sum of its days, in the daily packages and in its own day rows alike: in v2 two
-- DISCONNECTs taken just after midnight counted for the week but for no day (19 against 17).
-- A daily package is the same as with v2 (its day's end is the period's end); weekly and
-- monthly totals of these two statistics change.
--
-- v2's readings (tables `numbers` and `alert_statuses`) stay where they are and are shared:
-- a number or a status is read once, whichever contract version reads it. The functions whose
-- output did not change are v2's, named here so the jobs read one schema.
-- Applied by the jobs at start (idempotent); works on PostgreSQL 13+ and YugabyteDB YSQL.

CREATE SCHEMA IF NOT EXISTS ncc_read_v3;
COMMENT ON SCHEMA ncc_read_v3 IS 'NCC compliance read contract v3 (jobs/sql/ncc_read_v3.sql)';

-- The end of the WAT day `moment` falls in.
CREATE OR REPLACE FUNCTION ncc_read_v3.wat_day_end(moment timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT (date_trunc('day', moment AT TIME ZONE 'Africa/Lagos') + interval '1 day')
           AT TIME ZONE 'Africa/Lagos'
$$;

-- The 12 statistics over [period_start, period_end).
CREATE OR REPLACE FUNCTION ncc_read_v3.statistics(period_start timestamptz, period_end timestamptz)
RETURNS TABLE (
    total_calls                 bigint,
    alerts_total                bigint,
    alerts_critical             bigint,
    alerts_high                 bigint,
    alerts_medium               bigint,
    alerts_low                  bigint,
    calls_disconnected          bigint,
    patterns_blocked            bigint,
    detection_latency_p99_ms    numeric,
    detection_latency_avg_ms    numeric,
    uptime_percent              numeric,
    false_positive_rate_percent numeric
)
LANGUAGE sql STABLE AS $$
    SELECT v2.total_calls, v2.alerts_total, v2.alerts_critical, v2.alerts_high,
           v2.alerts_medium, v2.alerts_low, actions.disconnected, actions.blocked,
           v2.detection_latency_p99_ms, v2.detection_latency_avg_ms, v2.uptime_percent,
           v2.false_positive_rate_percent
    FROM ncc_read_v2.statistics(period_start, period_end) AS v2,
         -- A call once per day it was acted on; an action counts on its alert's own day.
         (SELECT count(DISTINCT (ncc_read_v3.wat_day_end(a.detected_at)::text || ' '
                                 || coalesce(a.call_id::text, 'alert:' || a.alert_id)))
                     FILTER (WHERE x.action = 'DISCONNECT') AS disconnected,
                 count(DISTINCT (ncc_read_v3.wat_day_end(a.detected_at)::text || ' '
                                 || coalesce(a.call_id::text, 'alert:' || a.alert_id)))
                     FILTER (WHERE x.action = 'BLOCK_PATTERN') AS blocked
          FROM acm.fraud_alerts AS a
          JOIN acm.actions AS x ON x.alert_id = a.alert_id
               AND x.taken_at < least(ncc_read_v3.wat_day_end(a.detected_at), period_end)
          WHERE a.detected_at >= period_start AND a.detected_at < period_end) AS actions
$$;

-- The statistics of each WAT day in [first_day, last_day], for weekly and monthly packages.
CREATE OR REPLACE FUNCTION ncc_read_v3.daily_statistics(first_day date, last_day date)
RETURNS TABLE (
    report_date                 date,
    total_calls                 bigint,
    alerts_total                bigint,
    alerts_critical             bigint,
    alerts_high                 bigint,
    alerts_medium               bigint,
    alerts_low                  bigint,
    calls_disconnected          bigint,
    patterns_blocked            bigint,
    detection_latency_p99_ms    numeric,
    detection_latency_avg_ms    numeric,
    uptime_percent              numeric,
    false_positive_rate_percent numeric
)
LANGUAGE sql STABLE AS $$
    SELECT day::date, s.*
    FROM generate_series(first_day::timestamp, last_day::timestamp, interval '1 day') AS day,
         LATERAL ncc_read_v3.statistics(day AT TIME ZONE 'Africa/Lagos',
                                        (day + interval '1 day') AT TIME ZONE 'Africa/Lagos') AS s
    ORDER BY day
$$;

-- Unchanged from v2.
CREATE OR REPLACE FUNCTION ncc_read_v3.alerts(period_start timestamptz, period_end timestamptz)
RETURNS TABLE (alert_id text, detected_at text, severity text, fraud_type text,
               a_number text, b_number text, action_taken text, status text)
LANGUAGE sql STABLE AS $$
    SELECT * FROM ncc_read_v2.alerts(period_start, period_end)
$$;

CREATE OR REPLACE FUNCTION ncc_read_v3.unnormalized_numbers(period_start timestamptz,
                                                            period_end timestamptz)
RETURNS TABLE (alert_id text, field text, raw_value text)
LANGUAGE sql STABLE AS $$
    SELECT * FROM ncc_read_v2.unnormalized_numbers(period_start, period_end)
$$;

CREATE OR REPLACE FUNCTION ncc_read_v3.top_targets(period_start timestamptz,
                                                   period_end timestamptz, how_many integer)
RETURNS TABLE (rank bigint, b_number text, alert_count bigint)
LANGUAGE sql STABLE AS $$
    SELECT * FROM ncc_read_v2.top_targets(period_start, period_end, how_many)
$$;

CREATE OR REPLACE FUNCTION ncc_read_v3.critical_alerts(since timestamptz)
RETURNS TABLE (alert_id text, detected_at timestamptz, fraud_type text,
               a_number text, b_number text, action_taken text)
LANGUAGE sql STABLE AS $$
    SELECT * FROM ncc_read_v2.critical_alerts(since)
$$;

CREATE OR REPLACE FUNCTION ncc_read_v3.record_statuses(since timestamptz, until timestamptz)
RETURNS bigint
LANGUAGE sql AS $$
    SELECT ncc_read_v2.record_statuses(since, until)
$$;

CREATE OR REPLACE FUNCTION ncc_read_v3.unread_numbers(since timestamptz, until timestamptz)
RETURNS TABLE (raw text)
LANGUAGE sql STABLE AS $$
    SELECT * FROM ncc_read_v2.unread_numbers(since, until)
$$;

-- Whether the platform recorded any call in [period_start, period_end): a period without one
-- is an ingestion outage or a day before the platform, never "0 calls" to file unasked.
CREATE OR REPLACE FUNCTION ncc_read_v3.call_records_exist(period_start timestamptz,
                                                          period_end timestamptz)
RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM acm.call_records
                   WHERE started_at >= period_start AND started_at < period_end)
$$;
