"""Kill `ncc-report daily` at every step and run it again: exactly one accepted submission,
no partial file under a final name on the regulator's server, and an audit trail that tells
what happened."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from jobs import cli
from tests.jobs.atrs_standin import AtrsStandin, Fault
from tests.jobs.conftest import Database
from tests.jobs.crash_at import STEPS
from tests.jobs.dataset import load_awkward_day
from tests.jobs.servers import restart_postgres

pytestmark = pytest.mark.slow
DAY = "2026-11-23"
REPOSITORY = Path(__file__).resolve().parents[2]


def complete_or_absent(remote_dir: Path, out_dir: Path) -> list[str]:
    """Files under final names on the server that are not a whole file of the package."""
    package = out_dir / "daily" / DAY
    bad = []
    for path in remote_dir.iterdir():
        if path.name.startswith("."):
            continue  # a temporary name: not the regulator's to read
        local = package / path.name
        if not local.exists() or local.read_bytes() != path.read_bytes():
            bad.append(path.name)
    return bad


@pytest.mark.parametrize("step", list(STEPS))
def test_killed_run_resumes_to_exactly_one_submission(
        step: str, job_env: dict[str, str], database: Database, atrs: AtrsStandin,
        remote_dir: Path) -> None:
    with database.connect() as conn:
        load_awkward_day(conn)
    killed = subprocess.run([sys.executable, "-m", "tests.jobs.crash_at", step, "daily",
                             "--date", DAY], cwd=REPOSITORY, env=dict(os.environ),
                            capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    out_dir = Path(job_env["NCC_OUT_DIR"])
    assert complete_or_absent(remote_dir, out_dir) == []
    accepted_before = len(atrs.accepted)
    assert accepted_before == (1 if step in ("after-api", "recorded") else 0)

    assert cli.main(["daily", "--date", DAY]) == 0

    assert len(atrs.accepted_for("daily", DAY)) == 1
    assert len(atrs.accepted) == 1
    names = sorted(p.name for p in remote_dir.iterdir())
    assert not [name for name in names if name.startswith(".")], names  # partials cleaned
    assert complete_or_absent(remote_dir, out_dir) == []
    # What the regulator accepted is what its SFTP directory holds.
    for entry in atrs.accepted[0].body["files"]:
        assert hashlib.sha256((remote_dir / entry["name"]).read_bytes()).hexdigest() == \
            entry["sha256"]
    with database.connect() as conn:
        trail = conn.execute("SELECT outcome, regulator_reference, resumes IS NOT NULL"
                             " FROM ncc_audit.submissions ORDER BY submission_id").fetchall()
        packages = conn.execute("SELECT count(*) FROM ncc_audit.packages").fetchone()
    outcomes = [row[0] for row in trail]
    assert outcomes.count("accepted") == 1
    assert "uploading" not in outcomes and "submitting" not in outcomes  # nothing left open
    assert [row[1] for row in trail if row[0] == "accepted"] == [atrs.accepted[0].reference]
    assert packages == (1,)  # a regenerated identical package reuses its audit row
    expected = {
        "generating": ["accepted"],
        "uploading": ["interrupted", "accepted"],
        "uploaded": ["interrupted", "accepted"],
        "before-api": ["interrupted", "accepted"],
        "after-api": ["interrupted", "accepted"],
        "recorded": ["accepted"],
    }[step]
    assert outcomes == expected
    # Whatever was interrupted, the attempt after it says which one it resumes.
    if "interrupted" in outcomes:
        assert trail[-1][2], "the resumed attempt points at the interrupted one"
    else:
        assert not trail[-1][2]
    # A third run changes nothing.
    assert cli.main(["daily", "--date", DAY]) == 0
    assert len(atrs.accepted) == 1


def test_a_database_restart_during_the_submission_fails_loudly_and_the_next_run_catches_up(
        job_env: dict[str, str], database: Database, atrs: AtrsStandin, remote_dir: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The worst moment: the regulator has taken the submission and its answer is on the way
    when the report database restarts, so the job cannot record the acceptance."""
    with database.connect() as conn:
        load_awkward_day(conn)
        # Durable commits, as a production database has (the test server trades them for
        # speed): without them the crash also takes the job's last audit rows.
        conn.execute(f"ALTER DATABASE {database.name} SET synchronous_commit = on")
    monkeypatch.setenv("NCC_ATRS_TIMEOUT_SECONDS", "20")
    atrs.fail(Fault("/compliance/reports/daily", delay=5, after=True))
    exit_codes: list[int] = []
    first = threading.Thread(target=lambda: exit_codes.append(cli.main(["daily", "--date", DAY])))
    first.start()
    deadline = time.monotonic() + 60
    while not atrs.accepted_for("daily", DAY):
        assert time.monotonic() < deadline and first.is_alive(), "the job never submitted"
        time.sleep(0.05)
    restart_postgres(database.server)
    first.join(timeout=60)

    assert exit_codes == [cli.EXIT_DATABASE]
    printed = capsys.readouterr()
    complaint = [line for line in printed.err.splitlines() if line.startswith("ncc-report:")]
    assert len(complaint) == 1, printed.err
    assert (f"the report database at {database.server.host}:{database.server.port} failed "
            "during the run") in complaint[0]
    assert "Traceback" not in printed.err + printed.out
    reference = atrs.accepted_for("daily", DAY)[0].reference

    assert cli.main(["daily", "--date", DAY]) == cli.EXIT_OK
    assert f"daily {DAY}: accepted (reference {reference})" in capsys.readouterr().out
    assert len(atrs.accepted) == 1  # the resent request was answered as the original
    assert complete_or_absent(remote_dir, Path(job_env["NCC_OUT_DIR"])) == []
    with database.connect() as conn:
        trail = conn.execute("SELECT outcome, regulator_reference FROM ncc_audit.submissions"
                             " ORDER BY submission_id").fetchall()
    assert [row[0] for row in trail] == ["interrupted", "accepted"]
    assert trail[-1][1] == reference
