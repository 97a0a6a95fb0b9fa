"""The audit trail (schema `ncc_audit`): packages, submission attempts, incidents.

Rows are only inserted, and an attempt's outcome is written once when it ends. What a run finds
unfinished (its process died) is marked `interrupted` and resumed by a new attempt that points
back at it, so the history of a period reads as what happened, crash included.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from jobs.atrs import HttpTry
from jobs.database import READ_CONTRACT
from jobs.generate import Package

Connection = psycopg.Connection[tuple[Any, ...]]
UNFINISHED = ("uploading", "submitting")


@dataclass(frozen=True)
class Attempt:
    submission_id: int
    outcome: str
    package_id: int | None
    idempotency_key: str | None
    request_body: dict[str, Any] | None
    regulator_reference: str | None


def _attempt(row: dict[str, Any]) -> Attempt:
    return Attempt(row["submission_id"], row["outcome"], row["package_id"],
                   row["idempotency_key"], row["request_body"], row["regulator_reference"])


def accepted_attempt(conn: Connection, report: str, period: str, license_number: str,
                     environment: str) -> Attempt | None:
    with conn.cursor(row_factory=dict_row) as cursor:
        row = cursor.execute(
            "SELECT * FROM ncc_audit.submissions WHERE report = %s AND period = %s"
            " AND license_number = %s AND environment = %s AND outcome = 'accepted'",
            (report, period, license_number, environment)).fetchone()
    return _attempt(row) if row else None


def accepted_before(conn: Connection, report: str, period: str, license_number: str,
                    environment: str) -> bool:
    """Whether any earlier period of this report was ever accepted (labels sort by time)."""
    row = conn.execute(
        "SELECT 1 FROM ncc_audit.submissions WHERE report = %s AND outcome = 'accepted'"
        " AND license_number = %s AND environment = %s AND period < %s LIMIT 1",
        (report, license_number, environment, period)).fetchone()
    return row is not None


def unfinished_closing(unanswered: bool) -> tuple[str, str]:
    """How an attempt a killed run left open is closed: `interrupted` (its request is resent
    under the same key), or, where the regulator's honouring of the key is not confirmed
    (`unanswered`), `unconfirmed`: the POST may have reached the regulator, and a person asks
    before anything is resent."""
    if unanswered:
        return ("unconfirmed", "found unfinished by a later run: its POST may have reached the "
                "regulator, and it is not resent until a person resolves it")
    return "interrupted", "found unfinished by a later run"


def interrupt_unfinished_incidents(conn: Connection, license_number: str, environment: str,
                                   unanswered: bool = False) -> None:
    """Close the incident attempts a killed run left open (`unfinished_closing`)."""
    outcome, detail = unfinished_closing(unanswered)
    conn.execute(
        "UPDATE ncc_audit.submissions SET outcome = %s, finished_at = now(), detail = %s"
        " WHERE report = 'incident' AND license_number = %s AND environment = %s"
        " AND outcome IN ('uploading', 'submitting')",
        (outcome, detail, license_number, environment))


def latest_attempts(conn: Connection, report: str, period: str, license_number: str,
                    environment: str) -> list[Attempt]:
    """Attempts of a period, newest first."""
    with conn.cursor(row_factory=dict_row) as cursor:
        rows = cursor.execute(
            "SELECT * FROM ncc_audit.submissions WHERE report = %s AND period = %s"
            " AND license_number = %s AND environment = %s ORDER BY submission_id DESC",
            (report, period, license_number, environment)).fetchall()
    return [_attempt(row) for row in rows]


def record_package(conn: Connection, package: Package) -> int:
    """The package's row; a byte-identical package of the same period reuses its row."""
    period = package.period
    row = conn.execute(
        "SELECT package_id FROM ncc_audit.packages WHERE report = %s AND period = %s"
        " AND license_number = %s AND payload_sha256 = %s ORDER BY package_id LIMIT 1",
        (period.report, period.label, package.license_number, package.payload_sha256),
    ).fetchone()
    if row:
        return int(row[0])
    row = conn.execute(
        "INSERT INTO ncc_audit.packages (report, period, license_number, read_contract, files,"
        " payload_sha256) VALUES (%s, %s, %s, %s, %s, %s) RETURNING package_id",
        (period.report, period.label, package.license_number, READ_CONTRACT,
         Jsonb([item.as_json() for item in package.files]), package.payload_sha256),
    ).fetchone()
    assert row is not None
    return int(row[0])


def start_attempt(conn: Connection, *, report: str, period: str, license_number: str,
                  environment: str, outcome: str, package_id: int | None = None,
                  idempotency_key: str | None = None,
                  request_body: dict[str, Any] | None = None,
                  resumes: int | None = None) -> int:
    row = conn.execute(
        "INSERT INTO ncc_audit.submissions (report, period, license_number, environment,"
        " outcome, package_id, idempotency_key, request_body, resumes)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING submission_id",
        (report, period, license_number, environment, outcome, package_id, idempotency_key,
         Jsonb(request_body) if request_body is not None else None, resumes),
    ).fetchone()
    assert row is not None
    return int(row[0])


def mark_submitting(conn: Connection, submission_id: int, idempotency_key: str,
                    request_body: dict[str, Any]) -> None:
    """Written before the request leaves: if the process dies now, the next run knows the
    regulator may hold this exact request, and resends it instead of a new one."""
    conn.execute(
        "UPDATE ncc_audit.submissions SET outcome = 'submitting', idempotency_key = %s,"
        " request_body = %s WHERE submission_id = %s AND outcome = 'uploading'",
        (idempotency_key, Jsonb(request_body), submission_id))


def record_try(conn: Connection, submission_id: int, attempt: HttpTry) -> None:
    """One HTTP try of an attempt, written as it ends (a later crash keeps it)."""
    conn.execute(
        "INSERT INTO ncc_audit.http_tries (submission_id, try_number, method, path, started_at,"
        " duration_ms, http_status, error) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        (submission_id, attempt.number, attempt.method, attempt.path, attempt.started_at,
         round(attempt.seconds * 1000, 1), attempt.http_status, attempt.error))


def http_tries(conn: Connection, submission_id: int) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cursor:
        return cursor.execute(
            "SELECT try_number, method, path, started_at, duration_ms, http_status, error"
            " FROM ncc_audit.http_tries WHERE submission_id = %s ORDER BY try_id",
            (submission_id,)).fetchall()


def resolve_unconfirmed(conn: Connection, unanswered: Attempt, *, report: str, period: str,
                        license_number: str, environment: str, reference: str | None) -> int:
    """A person's answer to an unconfirmed attempt, as a new attempt that resumes it: accepted
    with the regulator's reference, or failed (not received) carrying the same request and key,
    which the next run then resends."""
    outcome = "accepted" if reference else "failed"
    detail = ("the regulator confirmed it holds the submission (recorded by an operator)"
              if reference else "the regulator confirmed it does not hold the submission "
              "(recorded by an operator); the next run resends the same request")
    submission_id = start_attempt(
        conn, report=report, period=period, license_number=license_number,
        environment=environment, outcome="submitting", package_id=unanswered.package_id,
        idempotency_key=unanswered.idempotency_key, request_body=unanswered.request_body,
        resumes=unanswered.submission_id)
    finish_attempt(conn, submission_id, outcome, reference=reference, detail=detail)
    return submission_id


def unconfirmed_periods(conn: Connection, license_number: str,
                        environment: str) -> list[tuple[str, str]]:
    """(report, period) whose newest attempt is an unanswered POST nobody has resolved."""
    rows = conn.execute(
        "SELECT report, period FROM (SELECT DISTINCT ON (report, period) report, period,"
        " outcome FROM ncc_audit.submissions WHERE license_number = %s AND environment = %s"
        " ORDER BY report, period, submission_id DESC) AS newest WHERE outcome = 'unconfirmed'",
        (license_number, environment)).fetchall()
    return [(str(report), str(period)) for report, period in rows]


def finish_attempt(conn: Connection, submission_id: int, outcome: str, *,
                   http_status: int | None = None, reference: str | None = None,
                   detail: str | None = None, response_text: str | None = None) -> None:
    conn.execute(
        "UPDATE ncc_audit.submissions SET outcome = %s, finished_at = now(), http_status = %s,"
        " regulator_reference = %s, detail = %s, response_text = %s WHERE submission_id = %s"
        " AND outcome IN ('uploading', 'submitting')",
        (outcome, http_status, reference, detail, response_text, submission_id))


def record_incident(conn: Connection, *, alert_id: str, license_number: str, environment: str,
                    incident_id: str | None, detected_at: dt.datetime, status: str) -> None:
    conn.execute(
        "INSERT INTO ncc_audit.incidents (alert_id, license_number, environment, incident_id,"
        " detected_at, submitted_at, status, status_checked_at)"
        " VALUES (%s, %s, %s, %s, %s, now(), %s, now()) ON CONFLICT DO NOTHING",
        (alert_id, license_number, environment, incident_id, detected_at, status))


def incident(conn: Connection, alert_id: str, license_number: str,
             environment: str) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cursor:
        return cursor.execute(
            "SELECT * FROM ncc_audit.incidents WHERE alert_id = %s AND license_number = %s"
            " AND environment = %s", (alert_id, license_number, environment)).fetchone()


def update_incident_status(conn: Connection, alert_id: str, license_number: str,
                           environment: str, status: str) -> None:
    conn.execute(
        "UPDATE ncc_audit.incidents SET status = %s, status_checked_at = now()"
        " WHERE alert_id = %s AND license_number = %s AND environment = %s",
        (status, alert_id, license_number, environment))


@dataclass(frozen=True)
class IncidentDeadlines:
    unsent_past_deadline: int
    submitted_late_24h: int


def incident_deadlines(conn: Connection, license_number: str,
                       environment: str) -> IncidentDeadlines:
    """The incident contract's one-hour deadline, as the exporter reports it."""
    row = conn.execute(
        "SELECT (SELECT count(*) FROM acm.fraud_alerts AS a WHERE a.severity = 'CRITICAL'"
        "   AND a.detected_at < now() - interval '1 hour'"
        "   AND a.detected_at >= now() - interval '7 days'"
        "   AND NOT EXISTS (SELECT 1 FROM ncc_audit.submissions AS s WHERE s.report = 'incident'"
        "     AND s.period = a.alert_id AND s.outcome = 'accepted' AND s.license_number = %s"
        "     AND s.environment = %s)),"
        " (SELECT count(*) FROM ncc_audit.incidents AS i WHERE i.license_number = %s"
        "   AND i.environment = %s AND i.submitted_at >= now() - interval '24 hours'"
        "   AND i.submitted_at - i.detected_at > interval '1 hour')",
        (license_number, environment, license_number, environment)).fetchone()
    assert row is not None
    return IncidentDeadlines(int(row[0]), int(row[1]))


def any_incident_attempt(conn: Connection, license_number: str, environment: str) -> bool:
    return conn.execute(
        "SELECT EXISTS (SELECT 1 FROM ncc_audit.submissions WHERE report = 'incident'"
        " AND license_number = %s AND environment = %s)",
        (license_number, environment)).fetchone() == (True,)


def critical_alerts_before(conn: Connection, since: dt.datetime) -> int:
    row = conn.execute("SELECT count(*) FROM acm.fraud_alerts WHERE severity = 'CRITICAL'"
                       " AND detected_at < %s", (since,)).fetchone()
    return int(row[0]) if row else 0


def incident_watermark(conn: Connection, license_number: str,
                       environment: str) -> dt.datetime | None:
    row = conn.execute(
        "SELECT detected_at FROM ncc_audit.incident_watermark WHERE license_number = %s"
        " AND environment = %s", (license_number, environment)).fetchone()
    return row[0] if row else None


def advance_incident_watermark(conn: Connection, license_number: str, environment: str,
                               detected_at: dt.datetime) -> None:
    conn.execute(
        "INSERT INTO ncc_audit.incident_watermark (license_number, environment, detected_at)"
        " VALUES (%s, %s, %s) ON CONFLICT (license_number, environment) DO UPDATE"
        " SET detected_at = greatest(ncc_audit.incident_watermark.detected_at,"
        " excluded.detected_at), updated_at = now()",
        (license_number, environment, detected_at))


def period_history(conn: Connection, report: str, period: str,
                   license_number: str) -> dict[str, list[dict[str, Any]]]:
    """Everything the trail holds about a period (or an incident's alert id)."""
    with conn.cursor(row_factory=dict_row) as cursor:
        packages = cursor.execute(
            "SELECT package_id, generated_at, read_contract, files, payload_sha256"
            " FROM ncc_audit.packages WHERE report = %s AND period = %s AND license_number = %s"
            " ORDER BY package_id", (report, period, license_number)).fetchall()
        attempts: list[dict[str, Any]] = cursor.execute(
            "SELECT submission_id, environment, package_id, started_at, finished_at, outcome,"
            " http_status, regulator_reference, detail, resumes, idempotency_key"
            " FROM ncc_audit.submissions WHERE report = %s AND period = %s"
            " AND license_number = %s ORDER BY submission_id",
            (report, period, license_number)).fetchall()
    for attempt in attempts:
        attempt["http_tries"] = http_tries(conn, attempt["submission_id"])
    return {"packages": packages, "submissions": attempts}


def submission_record(conn: Connection, submission_id: int) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cursor:
        row: dict[str, Any] | None = cursor.execute(
            "SELECT submission_id, report, period, license_number, environment, package_id,"
            " started_at, finished_at, outcome, idempotency_key, request_body, http_status,"
            " regulator_reference, detail, resumes, response_text"
            " FROM ncc_audit.submissions WHERE submission_id = %s", (submission_id,)).fetchone()
    return row


def package_record(conn: Connection, package_id: int) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cursor:
        row: dict[str, Any] | None = cursor.execute(
            "SELECT package_id, report, period, license_number, generated_at, read_contract,"
            " files, payload_sha256 FROM ncc_audit.packages WHERE package_id = %s",
            (package_id,)).fetchone()
    return row


def unarchived_accepted(conn: Connection, license_number: str, environment: str) -> list[int]:
    """Accepted submissions (reports and incidents) the evidence archive does not hold yet,
    oldest first."""
    rows = conn.execute(
        "SELECT s.submission_id FROM ncc_audit.submissions s"
        " LEFT JOIN ncc_audit.archives a USING (submission_id)"
        " WHERE s.outcome = 'accepted' AND s.license_number = %s AND s.environment = %s"
        " AND a.submission_id IS NULL ORDER BY s.submission_id",
        (license_number, environment)).fetchall()
    return [int(row[0]) for row in rows]


def unarchived_count(conn: Connection, license_number: str, environment: str,
                     older_than: dt.timedelta) -> int:
    """Accepted submissions without an archive that were accepted more than `older_than` ago
    (the run that accepted them has had its chance)."""
    row = conn.execute(
        "SELECT count(*) FROM ncc_audit.submissions s"
        " LEFT JOIN ncc_audit.archives a USING (submission_id)"
        " WHERE s.outcome = 'accepted' AND s.license_number = %s AND s.environment = %s"
        " AND a.submission_id IS NULL AND s.finished_at < now() - %s",
        (license_number, environment, older_than)).fetchone()
    return int(row[0]) if row else 0


def record_archive(conn: Connection, submission_id: int, *, bucket: str, key_prefix: str,
                   objects: list[dict[str, Any]], manifest_sha256: str,
                   retain_until: dt.datetime) -> None:
    conn.execute(
        "INSERT INTO ncc_audit.archives (submission_id, bucket, key_prefix, objects,"
        " manifest_sha256, retain_until) VALUES (%s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (submission_id) DO NOTHING",
        (submission_id, bucket, key_prefix, Jsonb(objects), manifest_sha256, retain_until))


def last_accepted(conn: Connection, license_number: str,
                  environment: str) -> dict[str, dt.datetime]:
    rows = conn.execute(
        "SELECT report, max(finished_at) FROM ncc_audit.submissions WHERE outcome = 'accepted'"
        " AND license_number = %s AND environment = %s GROUP BY report",
        (license_number, environment)).fetchall()
    return {str(report): finished for report, finished in rows}


def dumps(value: Any) -> str:
    return json.dumps(value, default=str, indent=2, ensure_ascii=False)
