"""What a night operator meets: a period that has not ended is refused before any work, every
argument and setting is checked before a connection is opened, a database that is down or
silent is named with its host and port within the configured time, a dry run leaves the
database as it found it, a killed run's staging folder goes at the next run, and an
overlapping run says so in one line. Never a traceback."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from jobs import cli, clock
from tests.jobs.atrs_standin import AtrsStandin
from tests.jobs.conftest import LICENSE, Database
from tests.jobs.dataset import load_awkward_day

pytestmark = pytest.mark.slow


def set_clock(monkeypatch: pytest.MonkeyPatch, iso: str) -> None:
    moment = dt.datetime.fromisoformat(iso)
    monkeypatch.setattr(clock, "now", lambda: moment)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def no_traceback(printed: pytest.CaptureResult[str]) -> None:
    assert "Traceback" not in printed.out + printed.err


# (command, now in UTC, what the refusal names); 2026-11-25 WAT begins 2026-11-24T23:00Z.
UNFINISHED = [
    (["daily", "--date", "2026-11-25"], "2026-11-25T10:00:00+00:00",
     "daily 2026-11-25 has not ended: it ends at 2026-11-26 00:00 WAT"),
    (["daily", "--date", "2026-12-01"], "2026-11-25T10:00:00+00:00",
     "daily 2026-12-01 has not ended: it ends at 2026-12-02 00:00 WAT"),
    # 23:59 WAT on the 24th: the day is one minute short of its end.
    (["daily", "--date", "2026-11-24"], "2026-11-24T22:59:00+00:00",
     "daily 2026-11-24 has not ended: it ends at 2026-11-25 00:00 WAT"),
    (["weekly", "--period", "2026-W48"], "2026-11-25T10:00:00+00:00",
     "weekly 2026-W48 has not ended: it ends at 2026-11-30 00:00 WAT"),
    (["weekly", "--period", "2026-W50"], "2026-11-25T10:00:00+00:00",
     "weekly 2026-W50 has not ended"),
    (["monthly", "--period", "2026-11"], "2026-11-25T10:00:00+00:00",
     "monthly 2026-11 has not ended: it ends at 2026-12-01 00:00 WAT"),
]


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry run", "send"])
@pytest.mark.parametrize(("command", "now", "expected"), UNFINISHED,
                         ids=[" ".join(case[0]) for case in UNFINISHED])
def test_a_period_that_has_not_ended_is_refused_before_any_work(
        job_env: dict[str, str], atrs: AtrsStandin, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], command: list[str], now: str, expected: str,
        dry_run: bool) -> None:
    set_clock(monkeypatch, now)
    # No database either: the refusal comes before a connection is even tried.
    monkeypatch.setenv("NCC_DB_PORT", str(closed_port()))
    assert cli.main(command + (["--dry-run"] if dry_run else [])) == 2
    printed = capsys.readouterr()
    assert expected in printed.err
    assert "nothing was generated or sent" in printed.err
    assert not (Path(job_env["NCC_OUT_DIR"])).exists()
    assert atrs.log == []
    no_traceback(printed)


def test_the_day_after_its_end_is_reported(
        job_env: dict[str, str], database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    # 00:00:01 WAT on the 24th: the 23rd has just ended.
    set_clock(monkeypatch, "2026-11-23T23:00:01+00:00")
    with database.connect() as conn:
        load_awkward_day(conn)
    assert cli.main(["daily", "--date", "2026-11-23", "--dry-run"]) == 0


BAD_ARGUMENTS = [
    (["daily", "--date", "2026-02-30"], {}, "--period '2026-02-30': not a daily period"),
    (["weekly", "--period", "2026-W60"], {}, "--period '2026-W60': not a weekly period"),
    (["monthly", "--period", "2026-13"], {}, "not a monthly period"),
    (["daily", "--date", "2026-11-23"], {"NCC_SFTP_HOST": None},
     "NCC_SFTP_HOST: required to submit"),
    (["incidents"], {"NCC_ATRS_BASE_URL": None}, "NCC_ATRS_BASE_URL: required to submit"),
    (["daily", "--date", "2026-11-23", "--dry-run"],
     {"NCC_ATRS_BASE_URL": "http://atrs.ncc.example"},
     "NCC_ATRS_BASE_URL: 'http://atrs.ncc.example' is not an https:// address"),
    (["daily", "--date", "2026-11-23", "--dry-run"], {"NCC_LICENSE_NUMBER": "ncc 42"},
     "NCC_LICENSE_NUMBER: 'ncc 42' is not an NCC licence number"),
]


@pytest.mark.parametrize(("command", "environment", "expected"), BAD_ARGUMENTS,
                         ids=[case[2][:40] for case in BAD_ARGUMENTS])
def test_arguments_and_settings_are_checked_before_any_connection(
        job_env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], command: list[str],
        environment: dict[str, str | None], expected: str) -> None:
    monkeypatch.setenv("NCC_DB_PORT", str(closed_port()))  # a database that is down
    for name, value in environment.items():
        if value is None:
            monkeypatch.delenv(name)
        else:
            monkeypatch.setenv(name, value)
    assert cli.main(command) == 2
    printed = capsys.readouterr()
    assert expected in printed.err
    assert "String should match pattern" not in printed.err
    no_traceback(printed)


def json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_a_database_that_is_down_is_named_in_one_line(
        job_env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    port = closed_port()
    monkeypatch.setenv("NCC_DB_PORT", str(port))
    assert cli.main(["daily", "--date", "2026-11-23", "--dry-run"]) == 3
    printed = capsys.readouterr()
    sentence = [line for line in printed.err.splitlines() if line.startswith("ncc-report:")]
    assert len(sentence) == 1
    assert f"the report database at 127.0.0.1:{port} could not be reached" in sentence[0]
    errors = [entry for entry in json_lines(printed.err) if entry["level"] == "error"]
    assert len(errors) == 1 and errors[0]["db_port"] == port
    no_traceback(printed)


@pytest.fixture
def silent_database() -> Iterator[int]:
    """A port that accepts TCP connections and never says a word."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join()
    for connection in held:
        connection.close()
    server.close()


def test_a_database_that_never_answers_fails_within_the_configured_time(
        job_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, silent_database: int,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("NCC_DB_PORT", str(silent_database))
    monkeypatch.setenv("NCC_DB_CONNECT_TIMEOUT_SECONDS", "2")
    started = time.monotonic()
    assert cli.main(["daily", "--date", "2026-11-23", "--dry-run"]) == 3
    elapsed = time.monotonic() - started
    printed = capsys.readouterr()
    assert elapsed < 6, elapsed
    assert (f"the report database at 127.0.0.1:{silent_database} did not answer within 2 s "
            "(NCC_DB_CONNECT_TIMEOUT_SECONDS)") in printed.err
    no_traceback(printed)


JOB_TABLES = """SELECT table_schema || '.' || table_name FROM information_schema.tables
                WHERE table_schema LIKE 'ncc%' ORDER BY 1"""


def table_contents(conn: psycopg.Connection[tuple[object, ...]]) -> dict[str, list[str]]:
    contents = {}
    for (table,) in conn.execute(JOB_TABLES).fetchall():
        schema, name = str(table).split(".")
        rows = conn.execute(f'SELECT t::text FROM "{schema}"."{name}" AS t').fetchall()
        contents[str(table)] = sorted(str(row[0]) for row in rows)
    return contents


def test_a_dry_run_leaves_the_read_tables_as_it_found_them(
        job_env: dict[str, str], database: Database) -> None:
    with database.connect() as conn:
        load_awkward_day(conn)
    assert cli.main(["migrate"]) == 0
    with database.connect() as conn:
        before = table_contents(conn)
    assert before["ncc_read_v2.alert_statuses"] == [] and before["ncc_read_v2.numbers"] == []
    assert cli.main(["daily", "--date", "2026-11-23", "--dry-run"]) == 0
    # The dry run did read the day (its alerts file has the E.164 numbers it read) ...
    alerts = Path(job_env["NCC_OUT_DIR"]) / "daily" / "2026-11-23" / \
        f"ACM_ALERTS_{LICENSE}_20261123.csv"
    assert "+2348037654321" in alerts.read_text()
    # ... and kept none of it: an analyst's clearance made after it still reaches the
    # regulator with the real run.
    with database.connect() as conn:
        assert table_contents(conn) == before
        conn.execute("UPDATE acm.fraud_alerts SET status = 'FALSE_POSITIVE' "
                     "WHERE alert_id = 'A3'")
    assert cli.main(["daily", "--date", "2026-11-23", "--dry-run"]) == 0
    assert "A3,2026-11-23T13:30:00.250+01:00,CRITICAL,CLI_SPOOFING" in alerts.read_text()
    assert ",FALSE_POSITIVE\n" in alerts.read_text().split("A3,")[1].split("\n")[0] + "\n"


def test_a_killed_runs_staging_folder_goes_at_the_next_run(
        job_env: dict[str, str], database: Database) -> None:
    daily = Path(job_env["NCC_OUT_DIR"]) / "daily"
    # A run killed mid-generation: its PID names no process now (pid_max is below 2**22).
    dead = daily / ".2026-11-22.staging-4194305"
    dead.mkdir(parents=True)
    (dead / "ACM_DAILY_partial.csv").write_text("half a file")
    retired = daily / ".2026-11-20.retired-4194306"
    retired.mkdir()
    # A folder of a run that is alive (this test's parent) stays.
    alive = daily / f".2026-11-21.staging-{os.getppid()}"
    alive.mkdir()
    with database.connect() as conn:
        load_awkward_day(conn)
    assert cli.main(["daily", "--date", "2026-11-23", "--dry-run"]) == 0
    assert not dead.exists() and not retired.exists()
    assert alive.exists()
    assert sorted(p.name for p in daily.iterdir()) == sorted(
        ["2026-11-23", alive.name])


def test_an_overlapping_incidents_run_says_so_in_one_line(
        job_env: dict[str, str], database: Database, atrs: AtrsStandin,
        capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["migrate"]) == 0
    capsys.readouterr()
    key = f"ncc-report:{LICENSE}:incidents"
    with database.connect() as holder:
        assert holder.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (key,)).fetchone()
        assert cli.main(["incidents"]) == 0
    printed = capsys.readouterr()
    assert printed.out.strip() == (f"ncc-report: another ncc-report run holds {key}; not "
                                   "starting a second one; this run did nothing")
    assert atrs.calls("POST", "/fraud") == []
    no_traceback(printed)
