"""`ncc-report daily` end to end: real PostgreSQL, real sshd, the ATRS stand-in."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from pathlib import Path

import psycopg
import pytest

from jobs import cli
from jobs.database import apply_schema, connect
from jobs.settings import SFTP_KNOWN_HOSTS, load_settings
from jobs.submit import ReportRun, scheduled_periods
from tests.jobs.atrs_standin import AtrsStandin, Fault
from tests.jobs.conftest import LICENSE, Database
from tests.jobs.dataset import add_calls, load_awkward_day

pytestmark = pytest.mark.slow
DAY = "2026-11-23"


def submissions(database: Database) -> list[tuple[str, str, str | None]]:
    with database.connect() as conn:
        return [(r[0], r[1], r[2]) for r in conn.execute(
            "SELECT period, outcome, regulator_reference FROM ncc_audit.submissions"
            " ORDER BY submission_id").fetchall()]


def test_daily_run_uploads_atomically_submits_once_and_records(
        job_env: dict[str, str], database: Database, atrs: AtrsStandin, remote_dir: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    with database.connect() as conn:
        load_awkward_day(conn)
    assert cli.main(["daily", "--date", DAY]) == 0
    accepted = atrs.accepted_for("daily", DAY)
    assert len(accepted) == 1
    reference = accepted[0].reference
    assert capsys.readouterr().out.strip() == f"daily {DAY}: accepted (reference {reference})"
    # The regulator's directory holds exactly the package, byte for byte, no temporary files.
    local = Path(job_env["NCC_OUT_DIR"]) / "daily" / DAY
    assert sorted(p.name for p in remote_dir.iterdir()) == sorted(p.name for p in local.iterdir())
    for path in local.iterdir():
        assert (remote_dir / path.name).read_bytes() == path.read_bytes()
    # The stand-in checked the request's checksums against the files it found by SFTP.
    assert [f["name"] for f in accepted[0].body["files"]][-1] == \
        f"ACM_SUMMARY_{LICENSE}_20261123.json"
    assert submissions(database) == [(DAY, "accepted", accepted[0].reference)]
    with database.connect() as conn:
        package = conn.execute("SELECT files, read_contract FROM ncc_audit.packages").fetchall()
    assert len(package) == 1 and package[0][1] == "ncc_read_v3"
    assert [f["sha256"] for f in package[0][0]] == [f["sha256"] for f in accepted[0].body["files"]]

    # A second run of an accepted day sends nothing and records nothing new.
    assert cli.main(["daily", "--date", DAY]) == 0
    assert f"daily {DAY}: already-accepted" in capsys.readouterr().out
    assert len(atrs.accepted) == 1
    assert atrs.calls("POST", "/compliance") == [201]
    assert len(submissions(database)) == 1

    assert cli.main(["status", "daily", "--date", DAY]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["submissions"][0]["regulator_reference"] == accepted[0].reference
    assert status["packages"][0]["payload_sha256"]


def test_dry_run_generates_and_sends_nothing(job_env: dict[str, str], database: Database,
                                             atrs: AtrsStandin, remote_dir: Path) -> None:
    with database.connect() as conn:
        load_awkward_day(conn)
        before = conn.execute("SELECT count(*) FROM acm.call_records").fetchone()
    assert cli.main(["daily", "--date", DAY, "--dry-run"]) == 0
    assert (Path(job_env["NCC_OUT_DIR"]) / "daily" / DAY / f"ACM_DAILY_{LICENSE}_20261123.csv"
            ).is_file()
    assert list(remote_dir.iterdir()) == []
    assert atrs.log == []
    # Not even the job's schemas: a dry run leaves the database as it found it.
    with database.connect() as conn:
        assert conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'ncc%'"
                            ).fetchall() == []
        assert conn.execute("SELECT count(*) FROM acm.call_records").fetchone() == before


def test_rejected_payload_fails_loudly_and_a_rerun_records_a_new_attempt(
        job_env: dict[str, str], database: Database, atrs: AtrsStandin) -> None:
    with database.connect() as conn:
        load_awkward_day(conn)
    atrs.fail(Fault("/compliance/reports/daily", 422, body={"errors": ["statistics: bad"]}))
    assert cli.main(["daily", "--date", DAY]) == 1
    assert submissions(database) == [(DAY, "rejected", None)]
    assert atrs.calls("POST", "/compliance") == [422]  # a refusal is not retried
    assert cli.main(["daily", "--date", DAY]) == 0
    history = submissions(database)
    assert [outcome for _, outcome, _ in history] == ["rejected", "accepted"]
    assert len(atrs.accepted_for("daily", DAY)) == 1


def test_unpinned_host_key_is_refused(job_env: dict[str, str], database: Database,
                                      atrs: AtrsStandin, remote_dir: Path, secrets_dir: Path,
                                      tmp_path: Path) -> None:
    with database.connect() as conn:
        load_awkward_day(conn)
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    known = secrets_dir / SFTP_KNOWN_HOSTS
    known.chmod(0o600)
    port = job_env["NCC_SFTP_PORT"]
    known.write_text(f"[127.0.0.1]:{port} " + " ".join(
        (other.with_suffix(".pub")).read_text().split()[:2]) + "\n")
    assert cli.main(["daily", "--date", DAY]) == 1
    assert list(remote_dir.iterdir()) == []
    assert atrs.accepted == []
    with database.connect() as conn:
        outcome, detail = conn.execute(
            "SELECT outcome, detail FROM ncc_audit.submissions").fetchone() or ("", "")
    assert outcome == "failed" and "does not match the pinned key" in detail


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("NCC_LICENSE_NUMBER", None, "NCC_LICENSE_NUMBER: Field required"),
    ("NCC_ENVIRONMENT", "staging", "NCC_ENVIRONMENT: Input should be 'sandbox' or 'production'"),
    ("NCC_ATRS_BASE_URL", "http://atrs.example",
     "NCC_ATRS_BASE_URL: 'http://atrs.example' is not an https:// address"),
    ("NCC_DB_PORT", "fifty", "NCC_DB_PORT: Input should be a valid integer"),
    ("NCC_SFTP_DIRECTORY", "incoming", "NCC_SFTP_DIRECTORY: must be an absolute path"),
])
def test_bad_settings_are_named_before_any_work(
        job_env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], atrs: AtrsStandin, variable: str,
        value: str | None, message: str) -> None:
    if value is None:
        monkeypatch.delenv(variable)
    else:
        monkeypatch.setenv(variable, value)
    assert cli.main(["daily", "--date", DAY]) == 2
    assert message in capsys.readouterr().err
    assert atrs.log == []


def test_missing_secret_file_is_named(job_env: dict[str, str], secrets_dir: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    (secrets_dir / "atrs-client-secret").unlink()
    assert cli.main(["daily", "--date", DAY]) == 2
    assert f"secret file {secrets_dir}/atrs-client-secret is missing" in capsys.readouterr().err


def test_malformed_period_is_named(job_env: dict[str, str],
                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["weekly", "--period", "2026-47"]) == 2
    assert "--period '2026-47': not a weekly period" in capsys.readouterr().err


def test_scheduled_run_catches_up_missed_days(job_env: dict[str, str], database: Database,
                                             atrs: AtrsStandin) -> None:
    with database.connect() as conn:
        add_calls(conn, "2026-11-20", "2026-11-21", "2026-11-22", "2026-11-23")
    assert cli.main(["daily", "--date", "2026-11-20"]) == 0
    settings = load_settings()
    lagos_0530 = dt.datetime(2026, 11, 24, 4, 30, tzinfo=dt.UTC)
    with connect(settings) as conn:
        apply_schema(conn)
        run = ReportRun(conn, settings, None)
        periods = scheduled_periods(run, "daily", lagos_0530)
    # 11-21 and 11-22 were missed (cluster down): the 11-24 run sends them before 11-23.
    assert [p.label for p in periods] == ["2026-11-21", "2026-11-22", "2026-11-23"]


def test_first_ever_run_does_not_invent_a_backlog(job_env: dict[str, str],
                                                  database: Database) -> None:
    settings = load_settings()
    with connect(settings) as conn:
        apply_schema(conn)
        periods = scheduled_periods(ReportRun(conn, settings, None), "daily",
                                    dt.datetime(2026, 11, 24, 4, 30, tzinfo=dt.UTC))
    assert [p.label for p in periods] == ["2026-11-23"]


def test_audit_rows_cannot_be_deleted_or_accepted_twice(job_env: dict[str, str],
                                                        database: Database) -> None:
    with database.connect() as conn:
        load_awkward_day(conn)
    assert cli.main(["daily", "--date", DAY]) == 0
    with database.connect() as conn:
        with pytest.raises(psycopg.errors.RaiseException, match="retained until"):
            conn.execute("DELETE FROM ncc_audit.submissions")
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("INSERT INTO ncc_audit.submissions (report, period, license_number,"
                         " environment, outcome) SELECT report, period, license_number,"
                         " environment, 'accepted' FROM ncc_audit.submissions")
