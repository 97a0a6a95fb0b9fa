"""Prometheus exporter of the audit trail: when each report was last accepted, which CRITICAL
incidents are past their hour unsent or went in late, which submissions wait for a person, and
whether each CronJob's newest run failed or its scheduled run never started.

The alert rules (templates/alert-rules.yml.j2) fire when
`ncc_report_last_accepted_timestamp_seconds` grows older than a period plus its slack, or
is absent, when an incident is unsent past its deadline or was sent late, when a submission
is unconfirmed, and when a run failed or did not start (jobs/runs.py), minutes after its
start and so before the regulator's deadline. Values are read from the database, on its clock,
on every scrape.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hmac
import logging
import signal
import threading
from collections.abc import Iterator
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.core import REGISTRY, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from jobs import audit, runs
from jobs.database import apply_schema, connect
from jobs.generate import call_records_exist
from jobs.periods import REPORTS, before_first_data, last_complete_period
from jobs.settings import JobSettings, exporter_password

log = logging.getLogger(__name__)
LAST_ACCEPTED = "ncc_report_last_accepted_timestamp_seconds"
INCIDENTS_UNSENT = "ncc_incidents_unsent_past_deadline"
INCIDENTS_LATE = "ncc_incidents_submitted_late_24h"
UNCONFIRMED = "ncc_submissions_unconfirmed"
DAY_WITHOUT_DATA = "ncc_report_last_day_without_call_records"
RUN_FAILED = "ncc_report_last_run_failed"
RUN_NOT_STARTED = "ncc_report_scheduled_run_not_started"
EVIDENCE_UNARCHIVED = "ncc_evidence_unarchived"
BACKUP_LAST_SUCCESS = "ncc_backup_last_success_timestamp_seconds"
BACKUP_OVERDUE = "ncc_backup_overdue"
# An accepted submission not archived this long after its acceptance: its run had its chance.
ARCHIVE_GRACE = dt.timedelta(minutes=10)


class AuditCollector(Collector):
    def __init__(self, settings: JobSettings, started: dt.datetime | None = None) -> None:
        self._settings = settings
        # When the exporter started: on a new stack no CronJob was due before it (see
        # runs.not_started). Without it, a CronJob is watched from its first recorded run.
        self._started = started

    def collect(self) -> Iterator[Metric]:
        last = GaugeMetricFamily(LAST_ACCEPTED, "Unix time of the last submission the "
                                 "regulator accepted, per report", labels=["report"])
        up = GaugeMetricFamily("ncc_report_audit_up", "1 when the audit trail could be read")
        without_data = GaugeMetricFamily(
            DAY_WITHOUT_DATA, "1 when the last complete WAT day holds no call record and is not "
            "accepted: the daily job holds it (an ingestion outage is not filed as zero)")
        unsent = GaugeMetricFamily(
            INCIDENTS_UNSENT, "CRITICAL alerts of the last 7 days detected over an hour ago that "
            "the regulator has not accepted as incidents")
        late = GaugeMetricFamily(INCIDENTS_LATE, "Incidents accepted in the last 24 hours more "
                                 "than an hour after their alert's detection")
        unconfirmed = GaugeMetricFamily(
            UNCONFIRMED, "Periods (and incidents) whose submission got no answer and wait for a "
            "person to ask the regulator (ncc-report resolve)", labels=["report"])
        run_failed = GaugeMetricFamily(
            RUN_FAILED, "1 when the newest run of the CronJob's command ended without doing "
            "its work (exit status 1 or 3) or was killed (still open past its "
            "activeDeadlineSeconds)", labels=["cron_job"])
        run_not_started = GaugeMetricFamily(
            RUN_NOT_STARTED, "1 when the CronJob's newest start time passed more than its "
            "startingDeadlineSeconds ago and no run began since", labels=["cron_job"])
        unarchived = GaugeMetricFamily(
            EVIDENCE_UNARCHIVED, "Submissions the regulator accepted over 10 minutes ago that "
            "the evidence archive does not hold yet")
        backup_success = GaugeMetricFamily(
            BACKUP_LAST_SUCCESS, "Unix time the newest database backup that succeeded began")
        backup_overdue = GaugeMetricFamily(
            BACKUP_OVERDUE, "1 when no database backup succeeded since the newest scheduled "
            "one that must have ended by now")
        try:
            with connect(self._settings) as conn:
                who = {"license_number": self._settings.license_number,
                       "environment": self._settings.environment}
                accepted = audit.last_accepted(conn, **who)
                incidents = audit.incident_deadlines(conn, **who)
                waiting = audit.unconfirmed_periods(conn, **who)
                empty_day = _last_day_without_data(conn, self._settings)
                run_states = _run_states(conn, self._settings, self._started)
                unarchived_count = audit.unarchived_count(conn, **who,
                                                          older_than=ARCHIVE_GRACE)
                backups = _backup_state(conn, self._settings, self._started)
        except Exception as error:  # a scrape must answer; `up` carries the failure
            log.error("audit trail unreadable: %s", error)
            up.add_metric([], 0.0)
            yield up
            return
        for report in (*REPORTS, "incident"):
            if report in accepted:
                last.add_metric([report], accepted[report].timestamp())
        unsent.add_metric([], float(incidents.unsent_past_deadline))
        late.add_metric([], float(incidents.submitted_late_24h))
        for report in (*REPORTS, "incident"):
            unconfirmed.add_metric([report], float(sum(r == report for r, _ in waiting)))
        without_data.add_metric([], 1.0 if empty_day else 0.0)
        for command, (failed, missing) in run_states.items():
            run_failed.add_metric([f"ncc-report-{command}"], 1.0 if failed else 0.0)
            run_not_started.add_metric([f"ncc-report-{command}"], 1.0 if missing else 0.0)
        unarchived.add_metric([], float(unarchived_count))
        last_backup, overdue = backups
        if last_backup is not None:
            backup_success.add_metric([], last_backup.timestamp())
        if overdue is not None:
            backup_overdue.add_metric([], 1.0 if overdue else 0.0)
        up.add_metric([], 1.0)
        yield last
        yield without_data
        yield run_failed
        yield run_not_started
        yield unarchived
        yield backup_success
        yield backup_overdue
        yield unsent
        yield late
        yield unconfirmed
        yield up


def _run_states(conn: Any, settings: JobSettings, started: dt.datetime | None
                ) -> dict[str, tuple[bool, bool]]:
    """(newest run failed, scheduled run not started) for each CronJob the exporter was given
    a schedule of, on the database's clock."""
    now = conn.execute("SELECT statement_timestamp()").fetchone()[0]
    states: dict[str, tuple[bool, bool]] = {}
    for command, schedule in settings.schedules.items():
        # Backups are real in every stack; the reports' runs are of the stack's kind.
        dry_run = settings.dry_run and command != "backup"
        newest = runs.newest(conn, command, license_number=settings.license_number,
                             environment=settings.environment, dry_run=dry_run)
        first = runs.first_started(conn, command, license_number=settings.license_number,
                                   environment=settings.environment, dry_run=dry_run)
        known = [when for when in (first, started) if when is not None]
        states[command] = (runs.failed(newest, schedule, now),
                           bool(known) and runs.not_started(newest, schedule, now, min(known)))
    return states


def _backup_state(conn: Any, settings: JobSettings, started: dt.datetime | None
                  ) -> tuple[dt.datetime | None, bool | None]:
    """(when the newest successful backup began, whether a backup is overdue); the second is
    None where the exporter was given no backup schedule."""
    last = runs.newest_success(conn, "backup", license_number=settings.license_number,
                               environment=settings.environment, dry_run=False)
    schedule = settings.schedules.get("backup")
    if schedule is None:
        return last, None
    now = conn.execute("SELECT statement_timestamp()").fetchone()[0]
    first = runs.first_started(conn, "backup", license_number=settings.license_number,
                               environment=settings.environment, dry_run=False)
    known = [when for when in (first, started) if when is not None]
    return last, bool(known) and runs.overdue(last, schedule, now, min(known))


def _last_day_without_data(conn: Any, settings: JobSettings) -> bool:
    row = conn.execute("SELECT statement_timestamp()").fetchone()
    day = last_complete_period("daily", row[0])
    if before_first_data(day, settings.first_data_date):
        return False
    if audit.accepted_attempt(conn, "daily", day.label, settings.license_number,
                              settings.environment):
        return False
    return not call_records_exist(conn, day)


EXPORTER_USER = "acm-control"


def authorized(header: str | None, password: str) -> bool:
    """Whether an Authorization header carries the exporter's account."""
    if not header or not header.startswith("Basic "):
        return False
    try:
        given = base64.b64decode(header.removeprefix("Basic "), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return False
    name, _, offered = given.partition(":")
    return hmac.compare_digest(name, EXPORTER_USER) & hmac.compare_digest(offered, password)


def with_account(app: Any, settings: JobSettings) -> Any:
    """`app`, answering 401 to a request without the exporter's account. The password file is
    read on every request, so a rotated one is taken without a restart."""
    def guarded(environ: dict[str, Any], start_response: Any) -> Any:
        if not authorized(environ.get("HTTP_AUTHORIZATION"), exporter_password(settings)):
            start_response("401 Unauthorized", [
                ("WWW-Authenticate", 'Basic realm="ncc-compliance-exporter"'),
                ("Content-Length", "0")])
            return [b""]
        return app(environ, start_response)
    return guarded


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # scraped every few seconds: no access log


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


def serve(settings: JobSettings, port: int, address: str = "0.0.0.0") -> None:
    exporter_password(settings)  # refused before anything starts when it is missing or open
    with connect(settings) as conn:
        apply_schema(conn)  # so that "never accepted" reads as absent, not as an error
        row = conn.execute("SELECT statement_timestamp()").fetchone()
    started = row[0] if row and isinstance(row[0], dt.datetime) else None
    registry: Any = REGISTRY
    registry.register(AuditCollector(settings, started))
    server = make_server(address, port, with_account(make_wsgi_app(registry), settings),
                         _ThreadingServer, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    log.info("serving audit metrics on %s:%d/metrics (basic auth)", address, port)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    server.shutdown()
    thread.join(timeout=5)
