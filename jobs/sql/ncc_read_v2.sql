-- The compliance jobs' read-side contract, version 2 (schema `ncc_read_v2`).
--
-- Every figure the regulator receives is computed here, in the database, from the ACM
-- platform's tables (acm_source_v1.sql). The jobs only stream these results to files.
-- A change that alters any output is a new version (`ncc_read_v2`, created next to this one),
-- never an edit of this file: a re-generated past period must come out byte for byte the same.
-- Applied by the jobs at start (idempotent); works on PostgreSQL 13+ and YugabyteDB YSQL.

CREATE SCHEMA IF NOT EXISTS ncc_read_v2;
COMMENT ON SCHEMA ncc_read_v2 IS 'NCC compliance read contract v2 (jobs/sql/ncc_read_v2.sql)';

-- What changed from v1 (docs/ncc-compliance.md, "Version 2"):
-- * A package is reproducible as of its period: an alert's actions count only when taken
--   before the period's end, in the alerts file and in the statistics alike, so an action
--   recorded later never changes a past period's files; an alert's status is the one it had
--   when a package first read it (table `alert_statuses`).
-- * Calls disconnected and patterns blocked count distinct calls among the period's alerts
--   (the call id, or the alert when the engine recorded none), not action rows: a duplicate
--   action row counts once, and the statistic agrees with the alerts file.
-- * Phone numbers are read by libphonenumber (table `numbers`), not by regular expressions.
-- * Top targets use competition ranking: numbers tied at the cut all stay, with their shared
--   rank in the file (five numbers tied at rank 8 give five rows of rank 8).

-- E.164 forms of the numbers the engine recorded, as libphonenumber's Python port
-- (`phonenumbers`, jobs/numbers.py) read them. The jobs fill this table before they read a
-- period, for the raw numbers it does not hold yet; a raw number's first reading stays, so a
-- later library release with other numbering metadata never changes a past package. `e164`
-- NULL: the library found no valid number (alphanumeric sender ids, short codes, numbers
-- outside the numbering plan); such alerts are listed by unnormalized_numbers.
CREATE TABLE IF NOT EXISTS ncc_read_v2.numbers (
    raw         text PRIMARY KEY,
    e164        text,
    read_by     text NOT NULL,           -- e.g. phonenumbers 9.0.43
    read_at     timestamptz NOT NULL DEFAULT now()
);

CREATE OR REPLACE FUNCTION ncc_read_v2.e164(raw text) RETURNS text
LANGUAGE sql STABLE STRICT AS $$
    SELECT n.e164 FROM ncc_read_v2.numbers AS n WHERE n.raw = e164.raw
$$;

-- The status each alert had when a package first read it. The engine keeps only an alert's
-- current status, so a later edit (an analyst clearing an alert as a false positive) would
-- change a past package's alerts file and false positive rate; the first reading stays.
CREATE TABLE IF NOT EXISTS ncc_read_v2.alert_statuses (
    alert_id    text PRIMARY KEY,
    status      text NOT NULL,
    read_at     timestamptz NOT NULL DEFAULT now()
);

-- Freeze the status of the alerts detected in [since, until) that have no reading yet.
CREATE OR REPLACE FUNCTION ncc_read_v2.record_statuses(since timestamptz, until timestamptz)
RETURNS bigint
LANGUAGE sql AS $$
    WITH added AS (
        INSERT INTO ncc_read_v2.alert_statuses (alert_id, status)
        SELECT a.alert_id, a.status FROM acm.fraud_alerts AS a
        WHERE a.detected_at >= since AND a.detected_at < until
        ON CONFLICT (alert_id) DO NOTHING
        RETURNING 1)
    SELECT count(*) FROM added
$$;

-- An alert's status as first read (its current one when it was never read).
CREATE OR REPLACE FUNCTION ncc_read_v2.status_of(alert_id text, current_status text)
RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT coalesce((SELECT s.status FROM ncc_read_v2.alert_statuses AS s
                     WHERE s.alert_id = status_of.alert_id), current_status)
$$;

-- The raw numbers of the alerts detected since `since` that have no reading yet.
CREATE OR REPLACE FUNCTION ncc_read_v2.unread_numbers(since timestamptz, until timestamptz)
RETURNS TABLE (raw text)
LANGUAGE sql STABLE AS $$
    SELECT DISTINCT number
    FROM acm.fraud_alerts AS a,
         LATERAL (VALUES (a.a_number), (a.b_number)) AS numbers (number)
    WHERE a.detected_at >= since AND a.detected_at < until
      AND NOT EXISTS (SELECT 1 FROM ncc_read_v2.numbers AS n WHERE n.raw = number)
$$;

-- The 12 statistics of the daily report over [period_start, period_end).
CREATE OR REPLACE FUNCTION ncc_read_v2.statistics(period_start timestamptz, period_end timestamptz)
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
    SELECT calls.total,
           alerts.total, alerts.critical, alerts.high, alerts.medium, alerts.low,
           actions.disconnected, actions.blocked,
           round(calls.p99::numeric, 2), round(calls.average, 2),
           round(uptime.percent, 3),
           -- No alerts means no false positives: the rate is 0, not undefined.
           CASE WHEN alerts.total = 0 THEN 0.000
                ELSE round(100.0 * alerts.false_positives / alerts.total, 3) END
    FROM (SELECT count(*) AS total,
                 percentile_cont(0.99) WITHIN GROUP (ORDER BY screening_latency_ms) AS p99,
                 avg(screening_latency_ms) AS average
          FROM acm.call_records
          WHERE started_at >= period_start AND started_at < period_end) AS calls,
         (SELECT count(*) AS total,
                 count(*) FILTER (WHERE severity = 'CRITICAL') AS critical,
                 count(*) FILTER (WHERE severity = 'HIGH') AS high,
                 count(*) FILTER (WHERE severity = 'MEDIUM') AS medium,
                 count(*) FILTER (WHERE severity = 'LOW') AS low,
                 count(*) FILTER (WHERE ncc_read_v2.status_of(alert_id, status)
                                  = 'FALSE_POSITIVE') AS false_positives
          FROM acm.fraud_alerts
          WHERE detected_at >= period_start AND detected_at < period_end) AS alerts,
         (SELECT count(DISTINCT coalesce(a.call_id::text, 'alert:' || a.alert_id))
                     FILTER (WHERE x.action = 'DISCONNECT') AS disconnected,
                 count(DISTINCT coalesce(a.call_id::text, 'alert:' || a.alert_id))
                     FILTER (WHERE x.action = 'BLOCK_PATTERN') AS blocked
          FROM acm.fraud_alerts AS a
          JOIN acm.actions AS x ON x.alert_id = a.alert_id AND x.taken_at < period_end
          WHERE a.detected_at >= period_start AND a.detected_at < period_end) AS actions,
         -- No samples at all: uptime unknown (NULL, an empty field), never a guessed 100.
         (SELECT 100.0 * count(*) FILTER (WHERE up) / nullif(count(*), 0) AS percent
          FROM acm.uptime_samples
          WHERE sampled_at >= period_start AND sampled_at < period_end) AS uptime
$$;

-- The statistics of each WAT day in [first_day, last_day], for weekly and monthly packages.
CREATE OR REPLACE FUNCTION ncc_read_v2.daily_statistics(first_day date, last_day date)
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
         LATERAL ncc_read_v2.statistics(day AT TIME ZONE 'Africa/Lagos',
                                        (day + interval '1 day') AT TIME ZONE 'Africa/Lagos') AS s
    ORDER BY day
$$;

-- One row per fraud alert detected in [period_start, period_end), in detection order.
-- Timestamps in ISO 8601 with the WAT offset, to the millisecond; numbers in E.164 or empty
-- (the rows whose numbers cannot be normalized are listed by unnormalized_numbers).
CREATE OR REPLACE FUNCTION ncc_read_v2.alerts(period_start timestamptz, period_end timestamptz)
RETURNS TABLE (
    alert_id     text,
    detected_at  text,
    severity     text,
    fraud_type   text,
    a_number     text,
    b_number     text,
    action_taken text,
    status       text
)
LANGUAGE sql STABLE
SET TimeZone = 'Africa/Lagos'
AS $$
    SELECT a.alert_id,
           to_char(a.detected_at, 'YYYY-MM-DD"T"HH24:MI:SS.MSTZH:TZM'),
           a.severity,
           a.fraud_type,
           ncc_read_v2.e164(a.a_number),
           ncc_read_v2.e164(a.b_number),
           coalesce((SELECT string_agg(DISTINCT x.action, '+' ORDER BY x.action)
                     FROM acm.actions AS x
                     WHERE x.alert_id = a.alert_id AND x.taken_at < period_end), 'NONE'),
           ncc_read_v2.status_of(a.alert_id, a.status)
    FROM acm.fraud_alerts AS a
    WHERE a.detected_at >= period_start AND a.detected_at < period_end
    ORDER BY a.detected_at, a.alert_id
$$;

-- Alerts in [period_start, period_end) whose A- or B-number has no E.164 form.
CREATE OR REPLACE FUNCTION ncc_read_v2.unnormalized_numbers(period_start timestamptz,
                                                            period_end timestamptz)
RETURNS TABLE (alert_id text, field text, raw_value text)
LANGUAGE sql STABLE AS $$
    SELECT alert_id, field, raw_value
    FROM (SELECT a.alert_id, a.detected_at, 'a_number' AS field, a.a_number AS raw_value
          FROM acm.fraud_alerts AS a
          WHERE a.detected_at >= period_start AND a.detected_at < period_end
            AND ncc_read_v2.e164(a.a_number) IS NULL
          UNION ALL
          SELECT a.alert_id, a.detected_at, 'b_number', a.b_number
          FROM acm.fraud_alerts AS a
          WHERE a.detected_at >= period_start AND a.detected_at < period_end
            AND ncc_read_v2.e164(a.b_number) IS NULL) AS bad
    ORDER BY detected_at, alert_id, field
$$;

-- The most targeted B-numbers of [period_start, period_end): alerts per E.164 B-number,
-- ranked by competition ranking (1, 2, 2, 4): every number whose rank is within `how_many`
-- is listed, so numbers tied at the cut all stay; within a rank, ordered by number.
CREATE OR REPLACE FUNCTION ncc_read_v2.top_targets(period_start timestamptz,
                                                   period_end timestamptz, how_many integer)
RETURNS TABLE (rank bigint, b_number text, alert_count bigint)
LANGUAGE sql STABLE AS $$
    SELECT ranked.rank, ranked.number, ranked.alerts
    FROM (SELECT rank() OVER (ORDER BY count(*) DESC) AS rank, number, count(*) AS alerts
          FROM (SELECT ncc_read_v2.e164(b_number) AS number
                FROM acm.fraud_alerts
                WHERE detected_at >= period_start AND detected_at < period_end) AS targets
          WHERE number IS NOT NULL
          GROUP BY number) AS ranked
    WHERE ranked.rank <= how_many
    ORDER BY ranked.rank, ranked.number
$$;

-- CRITICAL alerts detected at or after `since`: the incident feed.
CREATE OR REPLACE FUNCTION ncc_read_v2.critical_alerts(since timestamptz)
RETURNS TABLE (alert_id text, detected_at timestamptz, fraud_type text,
               a_number text, b_number text, action_taken text)
LANGUAGE sql STABLE AS $$
    SELECT a.alert_id, a.detected_at, a.fraud_type,
           coalesce(ncc_read_v2.e164(a.a_number), a.a_number),
           coalesce(ncc_read_v2.e164(a.b_number), a.b_number),
           coalesce((SELECT string_agg(DISTINCT x.action, '+' ORDER BY x.action)
                     FROM acm.actions AS x WHERE x.alert_id = a.alert_id), 'NONE')
    FROM acm.fraud_alerts AS a
    WHERE a.severity = 'CRITICAL' AND a.detected_at >= since
    ORDER BY a.detected_at, a.alert_id
$$;
