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
from jobs.periods import WAT, wat_midnight
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
        job_env: dict[str, str], database: Database, atrs: AtrsStandin,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], command: list[str], now: str, expected: str,
        dry_run: bool) -> None:
    set_clock(monkeypatch, now)  # the database's clock, which the job decides on
    assert cli.main(command + (["--dry-run"] if dry_run else [])) == 2
    printed = capsys.readouterr()
    assert expected in printed.err
    assert "nothing was generated or sent" in printed.err
    assert not (Path(job_env["NCC_OUT_DIR"])).exists()
    assert atrs.log == []
    # Refused on connecting, before the job's schemas or any row were written.
    with database.connect() as conn:
        assert conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'ncc%'"
                            ).fetchone() == (0,)
    no_traceback(printed)


def test_the_day_after_its_end_is_reported(
        job_env: dict[str, str], database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    # 00:00:01 WAT on the 24th: the 23rd has just ended.
    set_clock(monkeypatch, "2026-11-23T23:00:01+00:00")
    with database.connect() as conn:
        load_awkward_day(conn)
    assert cli.main(["daily", "--date", "2026-11-23", "--dry-run"]) == 0


BAD_ARGUMENTS = [
    (["daily", "--date", "2026-02-30"], {}, "--date '2026-02-30': not a daily period"),
    # Python's ISO parser takes these as 2026-11-20; an operator may have meant otherwise.
    (["daily", "--date", "20261120"], {}, "--date '20261120': not a daily period (YYYY-MM-DD)"),
    (["daily", "--date", "2026-W47-5"], {}, "--date '2026-W47-5': not a daily period"),
    (["weekly", "--date", "2026-11-2"], {}, "--date '2026-11-2': not a weekly period"),
    # Before the licence's first data: an all-zero report that could never be corrected.
    (["daily", "--date", "2019-01-01"], {},
     "daily 2019-01-01 ends before 2020-01-01, this licence's first day of data"),
    (["daily", "--date", "1970-01-01", "--dry-run"], {},
     "daily 1970-01-01 ends before 2020-01-01"),
    (["monthly", "--period", "2019-12"], {}, "monthly 2019-12 ends before 2020-01-01"),
    (["daily", "--date", "2026-11-23"], {"NCC_FIRST_DATA_DATE": None},
     "NCC_FIRST_DATA_DATE: Field required"),
    (["daily", "--date", "2026-11-23"], {"NCC_FIRST_DATA_DATE": "20200101"},
     "NCC_FIRST_DATA_DATE: '20200101' is not a day in the form YYYY-MM-DD"),
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
    # regulator with the real run. Its only trace is its own row in ncc_audit.runs, which
    # the run alerts read.
    with database.connect() as conn:
        after = table_contents(conn)
        dry_runs = after.pop("ncc_audit.runs")
        assert after == {k: v for k, v in before.items() if k != "ncc_audit.runs"}
        assert before["ncc_audit.runs"] == [] and len(dry_runs) == 1
        assert conn.execute("SELECT command, dry_run, exit_status FROM ncc_audit.runs"
                            ).fetchall() == [("daily", True, 0)]
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


def test_a_day_without_a_single_call_record_is_held_until_confirmed(
        job_env: dict[str, str], database: Database, atrs: AtrsStandin,
        capsys: pytest.CaptureFixture[str]) -> None:
    # An ingestion outage: the day's alerts arrived, its call records did not.
    with database.connect() as conn:
        conn.execute("INSERT INTO acm.fraud_alerts VALUES ('X1', '2026-11-23T10:00:00Z', NULL,"
                     " 'HIGH', 'WANGIRI', '08031112222', '08033334444', 'OPEN')")
    assert cli.main(["daily", "--date", "2026-11-23"]) == 1
    printed = capsys.readouterr()
    assert "daily 2026-11-23: no-data: no call records at all" in printed.out
    assert "--confirm-empty" in printed.out
    assert atrs.log == []  # the regulator was not even asked
    assert not (Path(job_env["NCC_OUT_DIR"]) / "daily" / "2026-11-23").exists()
    with database.connect() as conn:
        assert conn.execute("SELECT count(*) FROM ncc_audit.submissions").fetchone() == (0,)
    # The records come in: the next run files the true figures.
    with database.connect() as conn:
        conn.execute("INSERT INTO acm.call_records VALUES (1, '2026-11-23T10:00:00Z',"
                     " '08030000000', '08039999999', 12)")
    assert cli.main(["daily", "--date", "2026-11-23"]) == 0
    assert atrs.accepted_for("daily", "2026-11-23")[0].body["statistics"]["total_calls"] == 1


def test_a_truly_empty_day_is_filed_when_the_operator_confirms_it(
        job_env: dict[str, str], database: Database, atrs: AtrsStandin) -> None:
    assert cli.main(["daily", "--date", "2026-11-23", "--confirm-empty"]) == 0
    assert atrs.accepted_for("daily", "2026-11-23")[0].body["statistics"]["total_calls"] == 0


def test_a_scheduled_run_never_reaches_back_before_the_first_data(
        job_env: dict[str, str], database: Database, atrs: AtrsStandin,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("NCC_FIRST_DATA_DATE", "2026-11-24")
    set_clock(monkeypatch, "2026-11-24T04:30:00+00:00")  # 05:30 WAT: the 23rd is the latest
    assert cli.main(["daily"]) == 0
    assert "daily: 0 period(s) to run" in capsys.readouterr().err
    assert atrs.log == []


@pytest.mark.parametrize(("mode", "group", "expected"), [
    (0o444, None, "is readable by others (mode 0444)"),
    (0o402, None, "is accessible by others (mode 0402)"),
    (0o460, None, "is writable by its group"),
    (0o440, 54321, "is readable by group 54321, which this job does not belong to"),
])
def test_a_secret_file_others_could_read_is_refused(
        job_env: dict[str, str], secrets_dir: Path, capsys: pytest.CaptureFixture[str],
        mode: int, group: int | None, expected: str) -> None:
    secret = secrets_dir / "database-password"
    if group is not None:
        os.chown(secret, -1, group)
    secret.chmod(mode)
    assert cli.main(["daily", "--date", "2026-11-23", "--dry-run"]) == 2
    printed = capsys.readouterr()
    assert f"secret file {secret} {expected}" in printed.err
    no_traceback(printed)


def test_a_secret_in_a_directory_anyone_may_write_to_is_refused(
        job_env: dict[str, str], database: Database, secrets_dir: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    secrets_dir.chmod(0o777)
    assert cli.main(["daily", "--date", "2026-11-23", "--dry-run"]) == 2
    assert "which anyone may write to (mode 0777, no sticky bit)" in capsys.readouterr().err
    # A Kubernetes Secret volume's root: world-writable with the sticky bit, 0440 files of
    # the pod's group (this process's), behind the kubelet's symbolic links.
    data = secrets_dir / "..2026_12_03_10_00_00.000000001"
    data.mkdir()
    for secret in [p for p in secrets_dir.iterdir() if not p.name.startswith("..")]:
        target = data / secret.name
        secret.rename(target)
        target.chmod(0o440)
        os.chown(target, -1, os.getegid())
        secret.symlink_to(Path(data.name) / secret.name)
    secrets_dir.chmod(0o1777)
    with database.connect() as conn:
        load_awkward_day(conn)
    assert cli.main(["daily", "--date", "2026-11-23", "--dry-run"]) == 0


def test_a_day_the_database_says_has_not_ended_is_refused_whatever_this_node_thinks(
        job_env: dict[str, str], database: Database, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    with database.connect() as conn:
        database_now = (conn.execute("SELECT now()").fetchone() or [None])[0]
    assert isinstance(database_now, dt.datetime)
    today = database_now.astimezone(WAT).date()
    # This node's clock is a minute past the end of today (WAT): on its own clock the day has
    # ended, on the database's it has not.
    ahead = wat_midnight(today + dt.timedelta(days=1)) + dt.timedelta(minutes=1) - database_now
    real = clock._local_now
    monkeypatch.setattr(clock, "_local_now", lambda: real() + ahead)
    assert cli.main(["daily", "--date", today.isoformat(), "--dry-run"]) == 2
    printed = capsys.readouterr()
    assert f"daily {today} has not ended" in printed.err
    assert "ahead of the report database's; the job keeps to the database's" in printed.err


def test_the_exporter_alerts_while_yesterday_holds_no_call_record(
        job_env: dict[str, str], database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    from jobs.exporter import DAY_WITHOUT_DATA, AuditCollector
    from jobs.settings import load_settings

    assert cli.main(["migrate"]) == 0
    collector = AuditCollector(load_settings())

    def gauge() -> float:
        [family] = [m for m in collector.collect() if m.name == DAY_WITHOUT_DATA]
        return float(family.samples[0].value)

    assert gauge() == 1.0  # NccDayWithoutCallRecords fires
    with database.connect() as conn:
        conn.execute("INSERT INTO acm.call_records VALUES (1, (((now() AT TIME ZONE"
                     " 'Africa/Lagos')::date - 1) + time '12:00') AT TIME ZONE 'Africa/Lagos',"
                     " '08030000000', '08039999999', 12)")
    assert gauge() == 0.0
    # Before the licence's first data there is nothing to miss.
    with database.connect() as conn:
        conn.execute("DELETE FROM acm.call_records")
    monkeypatch.setenv("NCC_FIRST_DATA_DATE", "2099-01-01")
    collector = AuditCollector(load_settings())
    assert gauge() == 0.0
