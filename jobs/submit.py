"""One report period end to end: generate, upload, submit, record; and the incident feed.

The order of a report submission, and what a re-run does after a crash at each point:

1. already accepted for this period?            -> nothing to do (exit 0)
2. an attempt that reached step 5 without a definitive answer?
                                                 -> resend exactly its request, same key
3. generate the package (staging dir, renamed)  -> crash: regenerated, nothing was sent
4. record package + attempt `uploading`; upload each file atomically, summary last
                                                 -> crash: attempt marked interrupted,
                                                    stale temporary files removed, restart
5. mark `submitting` with key and request body; POST
                                                 -> crash: step 2 resends; the regulator
                                                    answers the replay with the original
6. record accepted (reference) / rejected / failed

Runs of the same period are serialized by a database advisory lock.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

import psycopg
from psycopg import sql

from jobs import audit, clock
from jobs.archive import EvidenceArchive
from jobs.atrs import AtrsClient, AtrsError, Receipt, Rejected, RetryPolicy, Unanswered
from jobs.database import READ_CONTRACT, LockBusy, run_lock
from jobs.generate import Package, build_package, call_records_exist
from jobs.numbers import record_numbers
from jobs.periods import (
    INCIDENT_DEADLINE,
    WAT,
    Period,
    before_first_data,
    due,
    last_complete_period,
)
from jobs.settings import (
    ATRS_CLIENT_ID,
    ATRS_CLIENT_SECRET,
    SFTP_KNOWN_HOSTS,
    SFTP_PRIVATE_KEY,
    JobSettings,
    read_secret,
)
from jobs.sftp import (
    SftpTarget,
    remove_files,
    remove_stale_partials,
    sftp_session,
    upload_atomically,
)

log = logging.getLogger(__name__)
Connection = psycopg.Connection[tuple[Any, ...]]
Status = Literal["accepted", "already-accepted", "generated", "busy", "rejected", "failed",
                 "no-data"]


@dataclass(frozen=True)
class Outcome:
    label: str
    status: Status
    reference: str | None = None
    detail: str | None = None

    @property
    def ok(self) -> bool:
        # busy: another run holds the period (a manual run beside the CronJob's) and does it.
        return self.status in ("accepted", "already-accepted", "generated", "busy")


@dataclass
class Transport:
    sftp: SftpTarget
    atrs: AtrsClient
    # Where what the regulator accepts is archived write-once (None: no evidence store set,
    # which production refuses before anything is sent).
    archive: EvidenceArchive | None = None

    @classmethod
    @contextmanager
    def from_settings(cls, settings: JobSettings) -> Iterator[Transport]:
        settings.require_transport()
        assert settings.sftp_host is not None and settings.atrs_base_url is not None
        target = SftpTarget(settings.sftp_host, settings.sftp_port, settings.sftp_user,
                            settings.sftp_directory, read_secret(settings, SFTP_PRIVATE_KEY),
                            read_secret(settings, SFTP_KNOWN_HOSTS))
        client = AtrsClient(
            settings.atrs_base_url, read_secret(settings, ATRS_CLIENT_ID),
            read_secret(settings, ATRS_CLIENT_SECRET), ca_file=settings.atrs_ca_file,
            timeout=settings.atrs_timeout_seconds,
            retry=RetryPolicy(settings.atrs_attempts, settings.atrs_backoff_seconds,
                              settings.atrs_backoff_max_seconds),
            now=lambda: clock.now().timestamp())
        archive = EvidenceArchive.from_settings(settings)
        with client:
            yield cls(target, client, archive)


@dataclass
class ReportRun:
    conn: Connection
    settings: JobSettings
    transport: Transport | None  # None: dry run, generate only
    # The operator's word that a period without a single call record is truly empty.
    confirm_empty: bool = False
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def _who(self) -> dict[str, str]:
        return {"license_number": self.settings.license_number,
                "environment": self.settings.environment}

    def pending_periods(self, latest: Period) -> list[Period]:
        """`latest` and the unaccepted periods before it, back to the last accepted one
        (at most `catch_up_periods`): a missed run is caught up by the next."""
        if before_first_data(latest, self.settings.first_data_date):
            return []
        periods = [latest]
        candidate = latest.previous()
        while len(periods) < self.settings.catch_up_periods \
                and not before_first_data(candidate, self.settings.first_data_date):
            if audit.accepted_attempt(self.conn, candidate.report, candidate.label,
                                      **self._who):
                break
            if not audit.latest_attempts(self.conn, candidate.report, candidate.label,
                                         **self._who) and not audit.accepted_before(
                self.conn, candidate.report, candidate.label, **self._who):
                break  # before this installation's first report: nothing to catch up
            periods.append(candidate)
            candidate = candidate.previous()
        return sorted(periods)

    def run(self, period: Period) -> Outcome:
        label = f"{period.report} {period.label}"
        try:
            with run_lock(self.conn, f"ncc-report:{self.settings.license_number}:"
                                     f"{period.report}:{period.label}"):
                outcome = self._run_locked(period)
        except LockBusy as error:
            log.warning("%s: %s", label, error,
                        extra={"report": period.report, "period": period.label})
            outcome = Outcome(period.label, "busy", detail=str(error))
        except Exception as error:  # every failure is recorded and reported, none escapes
            if isinstance(error, psycopg.OperationalError) and self.conn.broken:
                # The database went away (a restart): nothing can be recorded, and every
                # period after this one would fail the same way. The run ends as a database
                # failure (exit 3); the next run resumes from what the audit trail holds.
                raise
            log.error("%s failed: %s", label, error,
                      extra={"report": period.report, "period": period.label})
            outcome = Outcome(period.label, "failed", detail=str(error))
        self.outcomes.append(outcome)
        return outcome

    def _run_locked(self, period: Period) -> Outcome:
        report, who = period.report, self._who
        accepted = audit.accepted_attempt(self.conn, report, period.label, **who)
        if accepted and self.transport is None:
            # A dry run of an accepted period shows its package again (to compare with what was
            # sent, e.g. after a restore); nothing is sent either way.
            build_package(self.conn, period, self.settings.license_number, self.settings.out_dir)
            return Outcome(period.label, "generated", accepted.regulator_reference,
                           detail="dry run of a period the regulator accepted: nothing sent")
        if accepted:
            log.info("%s %s was accepted before (reference %s): nothing to send", report,
                     period.label, accepted.regulator_reference,
                     extra={"report": report, "period": period.label})
            return Outcome(period.label, "already-accepted", accepted.regulator_reference)
        attempts = audit.latest_attempts(self.conn, report, period.label, **who)
        if not attempts and not self.confirm_empty and not call_records_exist(self.conn, period):
            detail = (f"no call records at all in {report} {period.label} "
                      f"({period.start:%Y-%m-%d %H:%M} to {period.end:%Y-%m-%d %H:%M} WAT): an "
                      "ingestion outage, not a day to file as zero; nothing was generated or "
                      "sent. Once the records are loaded the next run files it; if the day was "
                      f"truly empty, run `ncc-report {report} --period {period.label} "
                      "--confirm-empty`")
            log.error("%s %s held: %s", report, period.label, detail,
                      extra={"report": report, "period": period.label})
            return Outcome(period.label, "no-data", detail=detail)
        if self.transport is None:
            build_package(self.conn, period, self.settings.license_number, self.settings.out_dir)
            return Outcome(period.label, "generated", detail="dry run: nothing sent")
        if attempts and attempts[0].outcome == "submitting" \
                and not self.settings.atrs_idempotency_key_honoured:
            # Killed during its POST: the regulator may hold it, and may not deduplicate.
            outcome, detail = audit.unfinished_closing(unanswered=True)
            audit.finish_attempt(self.conn, attempts[0].submission_id, outcome, detail=detail)
            attempts = audit.latest_attempts(self.conn, report, period.label, **who)
        if attempts and attempts[0].outcome == "unconfirmed":
            detail = (f"attempt {attempts[0].submission_id} got no answer and is not resent "
                      "(NCC_ATRS_IDEMPOTENCY_KEY_HONOURED is false): ask the regulator whether "
                      f"it holds {report} {period.label}, then record the answer with "
                      f"`ncc-report resolve {report} {period.label} --received REFERENCE` or "
                      "`--not-received`")
            log.error("%s %s awaits confirmation: %s", report, period.label, detail,
                      extra={"report": report, "period": period.label})
            return Outcome(period.label, "failed", detail=detail)
        resumable = None
        # The newest attempt a killed run left open: the attempt this run makes resumes it.
        interrupted: int | None = None
        for attempt in attempts:
            if attempt.outcome in audit.UNFINISHED:
                audit.finish_attempt(self.conn, attempt.submission_id, "interrupted",
                                     detail="found unfinished by a later run")
                interrupted = interrupted or attempt.submission_id
            if resumable is None and attempt.request_body is not None:
                resumable = attempt
        if resumable is not None and resumable.outcome in ("submitting", "failed"):
            # That request may have reached the regulator; its files are on the server.
            # Sending it again under the same key cannot create a second submission.
            log.warning("resending the request of attempt %d (%s), whose outcome is unknown",
                        resumable.submission_id, resumable.outcome,
                        extra={"report": report, "period": period.label})
            assert resumable.idempotency_key is not None and resumable.request_body is not None
            submission_id = audit.start_attempt(
                self.conn, report=report, period=period.label, outcome="submitting",
                package_id=resumable.package_id, idempotency_key=resumable.idempotency_key,
                request_body=resumable.request_body, resumes=resumable.submission_id,
                license_number=who["license_number"], environment=who["environment"])
            return self._submit(period, submission_id, resumable.request_body,
                                resumable.idempotency_key)

        package = build_package(self.conn, period, self.settings.license_number,
                                self.settings.out_dir)
        # The regulator's API first (TLS, credentials and service): a package uploaded while
        # the API cannot take its submission sits on the regulator's server unannounced.
        try:
            self.transport.atrs.health()
        except AtrsError as error:
            raise AtrsError(f"the regulator's API is not usable ({error}); nothing was "
                            "uploaded") from None
        package_id = audit.record_package(self.conn, package)
        submission_id = audit.start_attempt(
            self.conn, report=report, period=period.label, outcome="uploading",
            package_id=package_id, resumes=interrupted, license_number=who["license_number"],
            environment=who["environment"])
        try:
            self._upload(package, tag=str(submission_id))
        except BaseException as error:
            audit.finish_attempt(self.conn, submission_id, "failed", detail=f"upload: {error}")
            raise
        body = report_request(package, self.settings.environment)
        key = f"{package.license_number}:{report}:{period.label}:{package.payload_sha256[:32]}"
        audit.mark_submitting(self.conn, submission_id, key, body)
        return self._submit(period, submission_id, body, key)

    def _upload(self, package: Package, tag: str) -> None:
        assert self.transport is not None
        target = self.transport.sftp
        names = [item.name for item in package.files]
        with sftp_session(target) as sftp:
            remove_stale_partials(sftp, target.directory, names)
            for item in package.files:
                upload_atomically(sftp, package.path(item), target.directory, tag)

    def _submit(self, period: Period, submission_id: int, body: dict[str, Any],
                key: str) -> Outcome:
        assert self.transport is not None
        extra = {"report": period.report, "period": period.label}
        try:
            receipt: Receipt = self.transport.atrs.submit_report(
                period.report, body, key, deadline=due(period).timestamp(),
                on_try=partial(audit.record_try, self.conn, submission_id),
                resend_unanswered=self.settings.atrs_idempotency_key_honoured)
        except Unanswered as error:
            audit.finish_attempt(self.conn, submission_id, "unconfirmed", detail=str(error))
            log.error("%s %s: %s; whether the regulator holds it is unknown and it is not "
                      "resent: ask the regulator, then `ncc-report resolve`", period.report,
                      period.label, error, extra=extra)
            return Outcome(period.label, "failed", detail=str(error))
        except Rejected as error:
            removed = self._withdraw(body)
            audit.finish_attempt(self.conn, submission_id, "rejected", http_status=error.status,
                                 detail=f"{error.body[:4000]} [{removed}]")
            log.error("ATRS rejected %s %s: %s (%s)", period.report, period.label,
                      error.body[:500], removed, extra=extra)
            return Outcome(period.label, "rejected", detail=error.body)
        except BaseException as error:
            audit.finish_attempt(self.conn, submission_id, "failed", detail=str(error))
            raise
        audit.finish_attempt(self.conn, submission_id, "accepted", http_status=receipt.http_status,
                             reference=receipt.reference, detail=_receipt_detail(receipt),
                             response_text=receipt.text)
        log.info("ATRS accepted %s %s: reference %s%s", period.report, period.label,
                 receipt.reference or "(none given)", " (replayed)" if receipt.duplicate else "",
                 extra=extra)
        return Outcome(period.label, "accepted", receipt.reference)

    def _withdraw(self, body: dict[str, Any]) -> str:
        """Remove a rejected package's files from the regulator's server: files no accepted
        submission names would otherwise sit there under the period's official names, and
        the next attempt uploads its own. A failure to remove is reported, not raised: the
        rejection is what the audit trail must record."""
        assert self.transport is not None
        target = self.transport.sftp
        names = [str(item["name"]) for item in body.get("files", [])]
        try:
            with sftp_session(target) as sftp:
                gone = remove_files(sftp, target.directory, names)
        except Exception as error:  # the rejection is recorded whatever SFTP does
            return f"its files could not be removed from the SFTP server: {error}"
        return f"removed {gone} of its {len(names)} files from the SFTP server"


def _receipt_detail(receipt: Receipt) -> str | None:
    notes = []
    if receipt.duplicate:
        notes.append("regulator already held it")
    if receipt.reference is None:
        notes.append(f"HTTP {receipt.http_status} without a reference: the regulator holds it; "
                     "ask it for the reference if one is needed")
    return "; ".join(notes) or None


def report_request(package: Package, environment: str) -> dict[str, Any]:
    period = package.period
    return {
        "licenseNumber": package.license_number,
        "reportType": period.report,
        "period": period.label,
        "periodStart": period.start.isoformat(),
        "periodEnd": period.end.isoformat(),
        "environment": environment,
        "files": [item.as_json() for item in package.files],
        "statistics": package.summary["statistics"],
    }


def scheduled_periods(run: ReportRun, report: Literal["daily", "weekly", "monthly"],
                      now: dt.datetime) -> list[Period]:
    return run.pending_periods(last_complete_period(report, now))


@dataclass(frozen=True)
class IncidentOutcome:
    submitted: int
    already: int
    failed: int
    late: int
    # Sent once without an answer (NCC_ATRS_IDEMPOTENCY_KEY_HONOURED=false): not resent until
    # a person records what the regulator says (`ncc-report resolve incident ALERT_ID`).
    awaiting: int = 0


def submit_incidents(conn: Connection, settings: JobSettings, atrs: AtrsClient,
                     now: dt.datetime) -> IncidentOutcome:
    """Submit every CRITICAL alert not yet accepted, oldest first, once each."""
    who = {"license_number": settings.license_number, "environment": settings.environment}
    with run_lock(conn, f"ncc-report:{settings.license_number}:incidents"):
        audit.interrupt_unfinished_incidents(
            conn, unanswered=not settings.atrs_idempotency_key_honoured, **who)
        # The whole look-back window, every run: an alert committed late (detected 40 minutes
        # ago, in the database only now) is still inside its hour and is sent.
        since = now - dt.timedelta(hours=settings.incident_lookback_hours)
        record_numbers(conn, since, now + dt.timedelta(days=1))
        if not audit.any_incident_attempt(conn, **who):
            older = audit.critical_alerts_before(conn, since)
            if older:
                log.error("%d CRITICAL alerts were detected before this first incident run's "
                          "look-back window (%d h, NCC_INCIDENT_LOOKBACK_HOURS) and will not "
                          "be sent by it; submit them by hand or widen the window", older,
                          settings.incident_lookback_hours, extra={"alerts": older})
                print(f"incidents: WARNING: {older} CRITICAL alerts older than the "
                      f"{settings.incident_lookback_hours} h look-back window were never "
                      "submitted")
        alerts = conn.execute(
            sql.SQL("SELECT * FROM {}.critical_alerts(%s)").format(sql.Identifier(READ_CONTRACT)),
            (since,)).fetchall()
        submitted = already = failed = late = awaiting = 0
        for alert_id, detected_at, fraud_type, a_number, b_number, action in alerts:
            if audit.accepted_attempt(conn, "incident", alert_id, **who):
                already += 1
                continue
            newest = audit.latest_attempts(conn, "incident", alert_id, **who)[:1]
            if newest and newest[0].outcome == "unconfirmed":
                log.error("incident for alert %s got no answer and is not resent "
                          "(NCC_ATRS_IDEMPOTENCY_KEY_HONOURED is false): ask the regulator, "
                          "then `ncc-report resolve incident %s --received INCIDENT_ID` or "
                          "`--not-received`", alert_id, alert_id, extra={"alert_id": alert_id})
                awaiting += 1
                continue
            age = now - detected_at
            # WAT, the offset of every time the daily files carry.
            payload = {"licenseNumber": settings.license_number, "alertId": alert_id,
                       "detectedAt": detected_at.astimezone(WAT).isoformat(),
                       "severity": "CRITICAL",
                       "fraudType": fraud_type, "aNumber": a_number, "bNumber": b_number,
                       "actionTaken": action}
            key = f"{settings.license_number}:incident:{alert_id}"
            submission_id = audit.start_attempt(
                conn, report="incident", period=alert_id, outcome="submitting",
                idempotency_key=key, request_body=payload,
                license_number=settings.license_number, environment=settings.environment)
            try:
                receipt = atrs.submit_incident(
                    payload, key, deadline=(detected_at + INCIDENT_DEADLINE).timestamp(),
                    on_try=partial(audit.record_try, conn, submission_id),
                    resend_unanswered=settings.atrs_idempotency_key_honoured)
            except AtrsError as error:
                outcome = ("rejected" if isinstance(error, Rejected)
                           else "unconfirmed" if isinstance(error, Unanswered) else "failed")
                audit.finish_attempt(conn, submission_id, outcome, detail=str(error)[:4000])
                log.error("incident for alert %s not accepted: %s", alert_id, error,
                          extra={"alert_id": alert_id})
                failed += 1
                continue
            audit.finish_attempt(conn, submission_id, "accepted", http_status=receipt.http_status,
                                 reference=receipt.reference, detail=_receipt_detail(receipt),
                                 response_text=receipt.text)
            audit.record_incident(conn, alert_id=alert_id, incident_id=receipt.reference,
                                  detected_at=detected_at,
                                  status=str(receipt.body.get("status", "RECEIVED")), **who)
            submitted += 1
            if age > INCIDENT_DEADLINE:
                late += 1
                log.error("incident for alert %s submitted %s after detection: past the "
                          "1-hour deadline", alert_id, age, extra={"alert_id": alert_id})
            else:
                log.info("incident for alert %s accepted: %s", alert_id,
                         receipt.reference or "(no incident id given)",
                         extra={"alert_id": alert_id})
        return IncidentOutcome(submitted, already, failed, late, awaiting)
