"""Every report and incidents run records itself (real PostgreSQL, the ATRS stand-in), and the
exporter tells from the runs and the CronJobs' schedules that the newest run failed, was
killed, or that a scheduled run never started: the signals that page before the regulator's
deadline (NccReportRunFailed, NccReportRunNotStarted)."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from jobs import cli, runs
from jobs.exporter import RUN_FAILED, RUN_NOT_STARTED, AuditCollector
from jobs.settings import load_settings
from tests.jobs.atrs_standin import AtrsStandin
from tests.jobs.conftest import LICENSE, Database
from tests.jobs.dataset import add_calls

pytestmark = pytest.mark.slow
DAY = "2026-11-23"
DAILY = runs.RunSchedule(schedule="30 5 * * *", starting_deadline_seconds=600,
                         active_deadline_seconds=1200)
WAT = dt.timezone(dt.timedelta(hours=1))


def recorded(database: Database) -> list[tuple[str, bool, str | None, int | None, bool]]:
    with database.connect() as conn:
        return [(r[0], r[1], r[2], r[3], r[4]) for r in conn.execute(
            "SELECT command, dry_run, named_period, exit_status, finished_at IS NOT NULL"
            " FROM ncc_audit.runs ORDER BY run_id").fetchall()]


def gauges(collector: AuditCollector) -> dict[str, dict[str, float]]:
    return {family.name: {sample.labels.get("cron_job", ""): sample.value
                          for sample in family.samples}
            for family in collector.collect()}


def test_each_run_records_its_start_and_its_exit_status(
        job_env: dict[str, str], database: Database, atrs: AtrsStandin) -> None:
    with database.connect() as conn:
        add_calls(conn, DAY)
    assert cli.main(["daily", "--date", DAY]) == 0
    # A day without a call record is held: the run fails, and says so in its row.
    assert cli.main(["daily", "--date", "2026-11-24"]) == 1
    assert cli.main(["incidents"]) == 0
    assert recorded(database) == [("daily", False, DAY, 0, True),
                                  ("daily", False, "2026-11-24", 1, True),
                                  ("incidents", False, None, 0, True)]


def test_a_dry_run_records_its_run_and_nothing_else(
        job_env: dict[str, str], database: Database, atrs: AtrsStandin) -> None:
    with database.connect() as conn:
        add_calls(conn, DAY)
    assert cli.main(["migrate"]) == 0
    assert cli.main(["daily", "--date", DAY, "--dry-run"]) == 0
    assert recorded(database) == [("daily", True, DAY, 0, True)]
    with database.connect() as conn:
        assert conn.execute("SELECT count(*) FROM ncc_audit.packages").fetchone() == (0,)
    assert atrs.accepted == []


def test_a_dry_run_against_an_unmigrated_database_creates_nothing(
        job_env: dict[str, str], database: Database) -> None:
    with database.connect() as conn:
        add_calls(conn, DAY)
    assert cli.main(["daily", "--date", DAY, "--dry-run"]) == 0
    with database.connect() as conn:
        assert conn.execute("SELECT to_regclass('ncc_audit.runs')").fetchone() == (None,)


def test_operator_commands_are_not_runs(job_env: dict[str, str], database: Database) -> None:
    assert cli.main(["migrate"]) == 0
    assert cli.main(["status", "daily", "--date", DAY]) == 0
    assert recorded(database) == []


def test_the_exporter_pages_for_a_failed_run_until_a_later_one_succeeds(
        job_env: dict[str, str], database: Database, atrs: AtrsStandin,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NCC_SCHEDULES", json.dumps({"daily": DAILY.model_dump()}))
    assert cli.main(["daily", "--date", DAY]) == 1  # no call record: held
    assert gauges(AuditCollector(load_settings()))[RUN_FAILED] == {"ncc-report-daily": 1.0}
    with database.connect() as conn:
        add_calls(conn, DAY)
    assert cli.main(["daily", "--date", DAY]) == 0
    assert gauges(AuditCollector(load_settings()))[RUN_FAILED] == {"ncc-report-daily": 0.0}


def test_a_run_killed_before_it_could_end_counts_as_failed_after_its_deadline(
        job_env: dict[str, str], database: Database) -> None:
    assert cli.main(["migrate"]) == 0
    with database.connect() as conn:
        # What a run leaves when Kubernetes kills it at activeDeadlineSeconds: an open row.
        conn.execute("INSERT INTO ncc_audit.runs (command, license_number, environment,"
                     " dry_run, started_at) VALUES ('daily', %s, 'sandbox', false, %s)",
                     (LICENSE, dt.datetime.now(dt.UTC) - dt.timedelta(minutes=25)))
    settings = load_settings().model_copy(update={"schedules": {"daily": DAILY}})
    assert gauges(AuditCollector(settings))[RUN_FAILED] == {"ncc-report-daily": 1.0}
    # Still inside its deadline, it is a run in progress.
    open_row = runs.Run(dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5), None, None, None)
    assert not runs.failed(open_row, DAILY, dt.datetime.now(dt.UTC))


@pytest.mark.parametrize(("now", "started", "expected"), [
    # 05:41:01 WAT: the 05:30 run is 11 min 1 s late, past its 600 s and the minute's grace.
    ("2026-11-24T05:41:01", None, True),
    ("2026-11-24T05:40:59", None, False),
    # The run began at 05:30:20 (the controller's latency): it started.
    ("2026-11-24T05:50:00", "2026-11-24T05:30:20", False),
    # Yesterday's run is not today's.
    ("2026-11-24T05:50:00", "2026-11-23T05:30:05", True),
    # Before today's start, yesterday's was the one due, and it ran.
    ("2026-11-24T05:20:00", "2026-11-23T05:30:05", False),
])
def test_a_scheduled_run_that_did_not_start_is_told_from_one_yet_to_come(
        now: str, started: str | None, expected: bool) -> None:
    moment = dt.datetime.fromisoformat(now).replace(tzinfo=WAT)
    run = None if started is None else runs.Run(
        dt.datetime.fromisoformat(started).replace(tzinfo=WAT), None, 0, None)
    watched_since = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    assert runs.not_started(run, DAILY, moment, watched_since) is expected


def test_a_cron_job_is_watched_from_its_first_run_or_the_exporters_start() -> None:
    moment = dt.datetime(2026, 11, 24, 5, 45, tzinfo=WAT)
    # Deployed at 05:35, after the 05:30 start time: that one was never due.
    assert not runs.not_started(None, DAILY, moment, moment - dt.timedelta(minutes=10))
    assert runs.not_started(None, DAILY, moment, moment - dt.timedelta(days=1))


def test_the_schedule_is_read_in_lagos_time() -> None:
    # 04:45 UTC on the 24th is 05:45 WAT: today's 05:30 WAT start (04:30 UTC) was due.
    assert runs.last_scheduled(DAILY, dt.datetime(2026, 11, 24, 4, 45, tzinfo=dt.UTC)) == \
        dt.datetime(2026, 11, 24, 4, 30, tzinfo=dt.UTC)
    # Exactly at the start time, that start is the newest.
    assert runs.last_scheduled(DAILY, dt.datetime(2026, 11, 24, 4, 30, tzinfo=dt.UTC)) == \
        dt.datetime(2026, 11, 24, 4, 30, tzinfo=dt.UTC)


def test_the_exporter_pages_for_a_scheduled_run_that_never_started(
        job_env: dict[str, str], database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    # A daily start ten minutes ago (Lagos time), a minute to start in; the exporter has
    # watched since an hour ago, and no run ever came.
    due = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)).astimezone(WAT)
    ten_minutes_ago = {"schedule": f"{due.minute} {due.hour} * * *",
                       "starting_deadline_seconds": 60, "active_deadline_seconds": 120}
    monkeypatch.setenv("NCC_SCHEDULES", json.dumps({"incidents": ten_minutes_ago}))
    assert cli.main(["migrate"]) == 0
    an_hour_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    collector = AuditCollector(load_settings(), started=an_hour_ago)
    assert gauges(collector)[RUN_NOT_STARTED] == {"ncc-report-incidents": 1.0}
    # A new exporter on a new stack: nothing was due since it started.
    fresh = AuditCollector(load_settings(), started=dt.datetime.now(dt.UTC))
    assert gauges(fresh)[RUN_NOT_STARTED] == {"ncc-report-incidents": 0.0}


BACKUP = runs.RunSchedule(schedule="15 2 * * *", starting_deadline_seconds=600,
                          active_deadline_seconds=3600)


@pytest.mark.parametrize(("now", "last_success", "expected"), [
    # 03:30 WAT: tonight's 02:15 backup may still run until 03:26 (+ a minute): yesterday's
    # success is enough until then ...
    ("2026-11-24T03:20:00", "2026-11-23T02:15:30", False),
    # ... and not after it.
    ("2026-11-24T03:30:00", "2026-11-23T02:15:30", True),
    ("2026-11-24T03:30:00", "2026-11-24T02:15:30", False),
    # Never a success, watched since before yesterday's start: overdue.
    ("2026-11-24T03:30:00", None, True),
])
def test_a_backup_older_than_its_schedule_is_overdue(now: str, last_success: str | None,
                                                      expected: bool) -> None:
    moment = dt.datetime.fromisoformat(now).replace(tzinfo=WAT)
    success = None if last_success is None else \
        dt.datetime.fromisoformat(last_success).replace(tzinfo=WAT)
    assert runs.overdue(success, BACKUP, moment, dt.datetime(2026, 11, 1, tzinfo=dt.UTC)) \
        is expected
