"""The runs of the report and incidents commands (`ncc_audit.runs`), and what they say about
the CronJobs: whether the newest run failed, and whether the scheduled run started.

Each command run records itself when it has connected and ends its row with its exit status,
on the database's clock (jobs/clock.py). The exporter reads the rows so that a run that failed,
was killed (its row never ended) or never started pages before the regulator's deadline, not
only once the last accepted submission has grown old. A run that cannot reach the database
cannot record itself: it reads as one that never started, which is what it is to the regulator.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, field_validator

from jobs.periods import WAT

Connection = Any
COMMANDS = ("daily", "weekly", "monthly", "incidents", "backup")
# Exit statuses that mean the run did not do its work (ncc-report --help): 1 failed, rejected,
# held or waiting for `resolve`; 3 the database failed during the run. 0 is done, 2 an
# operator's mistake that did nothing (refused before any work; a scheduled run names no
# period, so it never ends 2 once connected).
FAILED_STATUSES = (1, 3)
# Slack for the CronJob controller's start latency, and for its clock against the database's.
GRACE = dt.timedelta(seconds=60)


class RunSchedule(BaseModel):
    """One CronJob's schedule and deadlines, as the stack config gives them to the CronJob."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schedule: str
    starting_deadline_seconds: int = Field(ge=1)
    active_deadline_seconds: int = Field(ge=1)

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        if not croniter.is_valid(value):
            raise ValueError(f"{value!r} is not a cron schedule of five fields")
        return value


@dataclass(frozen=True)
class Run:
    started_at: dt.datetime
    finished_at: dt.datetime | None
    exit_status: int | None
    detail: str | None


def start(conn: Connection, command: str, *, license_number: str, environment: str,
          dry_run: bool, named_period: str | None) -> int | None:
    """Record that a run began; None where the table is not there (a dry run against a
    database the jobs never migrated: a dry run creates nothing)."""
    row = conn.execute("SELECT to_regclass('ncc_audit.runs')").fetchone()
    if row is None or row[0] is None:
        return None
    found = conn.execute(
        "INSERT INTO ncc_audit.runs (command, license_number, environment, dry_run, named_period)"
        " VALUES (%s, %s, %s, %s, %s) RETURNING run_id",
        (command, license_number, environment, dry_run, named_period)).fetchone()
    return int(found[0])


def finish(conn: Connection, run_id: int, exit_status: int, detail: str | None) -> None:
    conn.execute("UPDATE ncc_audit.runs SET finished_at = now(), exit_status = %s, detail = %s"
                 " WHERE run_id = %s AND finished_at IS NULL", (exit_status, detail, run_id))


def newest(conn: Connection, command: str, *, license_number: str, environment: str,
           dry_run: bool) -> Run | None:
    row = conn.execute(
        "SELECT started_at, finished_at, exit_status, detail FROM ncc_audit.runs"
        " WHERE command = %s AND license_number = %s AND environment = %s AND dry_run = %s"
        " ORDER BY started_at DESC, run_id DESC LIMIT 1",
        (command, license_number, environment, dry_run)).fetchone()
    return Run(*row) if row else None


def first_started(conn: Connection, command: str, *, license_number: str, environment: str,
                  dry_run: bool) -> dt.datetime | None:
    row = conn.execute(
        "SELECT min(started_at) FROM ncc_audit.runs WHERE command = %s AND license_number = %s"
        " AND environment = %s AND dry_run = %s",
        (command, license_number, environment, dry_run)).fetchone()
    return row[0] if row else None


def failed(run: Run | None, schedule: RunSchedule, now: dt.datetime) -> bool:
    """The newest run ended without doing its work, or was killed: its row is still open
    past the longest it may run (activeDeadlineSeconds)."""
    if run is None:
        return False
    if run.finished_at is None:
        return now - run.started_at > dt.timedelta(
            seconds=schedule.active_deadline_seconds) + GRACE
    return run.exit_status in FAILED_STATUSES


def last_scheduled(schedule: RunSchedule, now: dt.datetime) -> dt.datetime:
    """The newest time at or before `now` the CronJob was due to start (Lagos time)."""
    local = now.astimezone(WAT)
    due: dt.datetime = croniter(schedule.schedule, local + dt.timedelta(microseconds=1)
                                ).get_prev(dt.datetime)
    return due


def not_started(run: Run | None, schedule: RunSchedule, now: dt.datetime,
                watched_since: dt.datetime) -> bool:
    """The CronJob's newest start time has passed by more than its startingDeadlineSeconds
    and no run began since: Kubernetes did not start one, or it could not reach the
    database. A start time before `watched_since` (the first run recorded, or the exporter's
    own start on a new stack) is not counted: a CronJob created after it was never due."""
    due = last_scheduled(schedule, now)
    if due < watched_since:
        return False
    if now - due <= dt.timedelta(seconds=schedule.starting_deadline_seconds) + GRACE:
        return False
    return run is None or run.started_at < due - GRACE


def newest_success(conn: Connection, command: str, *, license_number: str, environment: str,
                   dry_run: bool) -> dt.datetime | None:
    """When the newest run of `command` that did its work (exit status 0) began."""
    row = conn.execute(
        "SELECT max(started_at) FROM ncc_audit.runs WHERE command = %s AND license_number = %s"
        " AND environment = %s AND dry_run = %s AND exit_status = 0",
        (command, license_number, environment, dry_run)).fetchone()
    return row[0] if row else None


def overdue(last_success: dt.datetime | None, schedule: RunSchedule, now: dt.datetime,
            watched_since: dt.datetime) -> bool:
    """No run has done its work since the newest start time whose run must have ended by now
    (its starting and active deadlines passed): for the backups, "older than its schedule"."""
    window = dt.timedelta(seconds=schedule.starting_deadline_seconds
                          + schedule.active_deadline_seconds) + GRACE
    due = last_scheduled(schedule, now)
    if now < due + window:
        due = last_scheduled(schedule, due - dt.timedelta(microseconds=1))
    if due < watched_since:
        return False
    return last_success is None or last_success < due - GRACE
