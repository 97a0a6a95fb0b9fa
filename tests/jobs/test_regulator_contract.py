"""What an outside regulator stand-in showed, fixed: the API is asked before anything is
uploaded, every HTTP try is an audit row, a 429's reset is honoured up to the period's due time
(not the backoff cap), and a POST that got no answer is not resent where the regulator's
honouring of Idempotency-Key is not confirmed (both modes, against a regulator that ignores
the key)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from pathlib import Path

import pytest
import trustme

from jobs import cli, clock
from jobs.exporter import UNCONFIRMED, AuditCollector
from jobs.settings import load_settings
from tests.jobs.atrs_standin import AtrsStandin, Fault
from tests.jobs.conftest import Database
from tests.jobs.dataset import load_awkward_day

pytestmark = pytest.mark.slow
DAY = "2026-11-23"


def tries(database: Database) -> list[tuple[str, int, int | None, dt.datetime]]:
    with database.connect() as conn:
        return [(str(r[0]), int(r[1]), r[2], r[3]) for r in conn.execute(
            "SELECT path, try_number, http_status, started_at FROM ncc_audit.http_tries"
            " ORDER BY try_id").fetchall()]


def outcomes(database: Database) -> list[str]:
    with database.connect() as conn:
        return [str(r[0]) for r in conn.execute(
            "SELECT outcome FROM ncc_audit.submissions ORDER BY submission_id").fetchall()]


@pytest.fixture
def awkward_day(database: Database) -> Database:
    with database.connect() as conn:
        load_awkward_day(conn)
    return database


def test_an_api_that_is_down_leaves_nothing_on_the_regulators_server(
        job_env: dict[str, str], awkward_day: Database, atrs: AtrsStandin, remote_dir: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    atrs.fail(Fault("/health", 503, times=50))
    assert cli.main(["daily", "--date", DAY]) == 1
    assert f"daily {DAY}: failed" in capsys.readouterr().out
    assert list(remote_dir.iterdir()) == []
    assert atrs.calls("POST", "/compliance") == []
    assert outcomes(awkward_day) == []
    # Once the API answers, the day goes in one piece.
    atrs.faults.clear()
    assert cli.main(["daily", "--date", DAY]) == 0
    assert len(atrs.accepted_for("daily", DAY)) == 1


def test_a_wrong_ca_bundle_leaves_nothing_on_the_regulators_server(
        job_env: dict[str, str], awkward_day: Database, atrs: AtrsStandin, remote_dir: Path,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    monkeypatch.setenv("NCC_ATRS_CA_FILE", str(other))
    assert cli.main(["daily", "--date", DAY]) == 1
    assert list(remote_dir.iterdir()) == []
    assert atrs.log == []  # the TLS handshake failed: the server logged no request


def test_every_http_try_is_an_audit_row(job_env: dict[str, str], awkward_day: Database,
                                        atrs: AtrsStandin) -> None:
    atrs.fail(Fault("/compliance/reports/daily", 500, times=2))
    assert cli.main(["daily", "--date", DAY]) == 0
    assert [(path, number, status) for path, number, status, _ in tries(awkward_day)] == [
        ("/compliance/reports/daily", 1, 500), ("/compliance/reports/daily", 2, 500),
        ("/compliance/reports/daily", 3, 201)]


def just_after_the_day(monkeypatch: pytest.MonkeyPatch) -> None:
    # 00:30 WAT on the 24th: the 23rd's report is due at 06:00, five and a half hours away.
    moment = dt.datetime.fromisoformat("2026-11-23T23:30:00+00:00")
    started = time.monotonic()
    monkeypatch.setattr(clock, "now", lambda: moment + dt.timedelta(
        seconds=time.monotonic() - started))


def test_a_rate_limit_reset_beyond_the_backoff_cap_is_honoured(
        job_env: dict[str, str], awkward_day: Database, atrs: AtrsStandin,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    just_after_the_day(monkeypatch)
    monkeypatch.setenv("NCC_ATRS_BACKOFF_MAX_SECONDS", "1")
    atrs.fail(Fault("/compliance/reports/daily", 429, headers={"X-RateLimit-Reset": "3"}))
    assert cli.main(["daily", "--date", DAY]) == 0
    first, second = tries(awkward_day)
    assert (first[2], second[2]) == (429, 201)
    assert (second[3] - first[3]).total_seconds() >= 3.0  # not after the 1 s cap
    assert "beyond the backoff cap" in capsys.readouterr().err


def test_a_rate_limit_reset_after_the_due_time_is_not_waited_for(
        job_env: dict[str, str], awkward_day: Database, atrs: AtrsStandin,
        monkeypatch: pytest.MonkeyPatch) -> None:
    just_after_the_day(monkeypatch)
    seven_hours = str(7 * 3600)  # past 06:00 WAT
    atrs.fail(Fault("/compliance/reports/daily", 429, headers={"X-RateLimit-Reset": seven_hours}))
    assert cli.main(["daily", "--date", DAY]) == 1
    assert [status for _, _, status, _ in tries(awkward_day)] == [429]
    with awkward_day.connect() as conn:
        detail = conn.execute("SELECT detail FROM ncc_audit.submissions").fetchone()
    assert detail is not None and "ends after the deadline" in str(detail[0])


def settle() -> None:
    """Let the stand-in finish the answer nobody waited for (3 s after the request)."""
    time.sleep(1.5)


def an_unanswered_post(atrs: AtrsStandin) -> None:
    """The regulator stores the POST, and its answer comes after the job stopped waiting (2 s),
    from a regulator that ignores Idempotency-Key."""
    atrs.honours_idempotency_key = False
    atrs.fail(Fault("/compliance/reports/daily", None, delay=3.0, after=True))


def test_with_the_key_confirmed_an_unanswered_post_is_resent(
        job_env: dict[str, str], awkward_day: Database, atrs: AtrsStandin) -> None:
    # The default, for a regulator whose onboarding confirmed the key. Against one that
    # ignores it, this stores the period twice: what the other mode is for.
    an_unanswered_post(atrs)
    assert cli.main(["daily", "--date", DAY]) == 0
    assert len(atrs.accepted_for("daily", DAY)) == 2
    assert [status for _, _, status, _ in tries(awkward_day)] == [None, 201]


def test_without_the_key_confirmed_an_unanswered_post_waits_for_a_person(
        job_env: dict[str, str], awkward_day: Database, atrs: AtrsStandin,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("NCC_ATRS_IDEMPOTENCY_KEY_HONOURED", "false")
    an_unanswered_post(atrs)
    assert cli.main(["daily", "--date", DAY]) == 1
    settle()
    assert len(atrs.accepted_for("daily", DAY)) == 1  # stored once, by the one POST
    assert outcomes(awkward_day) == ["unconfirmed"]
    # Later runs send nothing and say what a person must do.
    assert cli.main(["daily", "--date", DAY]) == 1
    assert "ncc-report resolve daily 2026-11-23 --received REFERENCE" in capsys.readouterr().err
    assert len(atrs.calls("POST", "/compliance")) == 1
    # The alert rule's metric: one daily period waits for a person.
    waiting = {m.name: m.samples for m in AuditCollector(load_settings()).collect()}[UNCONFIRMED]
    assert [(s.labels["report"], s.value) for s in waiting] == [
        ("daily", 1.0), ("weekly", 0.0), ("monthly", 0.0), ("incident", 0.0)]
    reference = atrs.accepted_for("daily", DAY)[0].reference
    assert cli.main(["resolve", "daily", DAY, "--received", reference]) == 0
    assert cli.main(["daily", "--date", DAY]) == 0
    assert f"daily {DAY}: already-accepted (reference {reference})" in capsys.readouterr().out
    assert len(atrs.calls("POST", "/compliance")) == 1
    assert outcomes(awkward_day) == ["unconfirmed", "accepted"]


def test_a_post_the_regulator_never_received_is_resent_once_a_person_says_so(
        job_env: dict[str, str], awkward_day: Database, atrs: AtrsStandin,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NCC_ATRS_IDEMPOTENCY_KEY_HONOURED", "false")
    # The connection dies after the request left; this regulator never stored it.
    atrs.fail(Fault("/compliance/reports/daily", 599, delay=3.0))
    assert cli.main(["daily", "--date", DAY]) == 1
    settle()
    assert atrs.accepted_for("daily", DAY) == []
    assert cli.main(["resolve", "daily", DAY, "--not-received"]) == 0
    assert cli.main(["daily", "--date", DAY]) == 0
    assert len(atrs.accepted_for("daily", DAY)) == 1
    assert outcomes(awkward_day) == ["unconfirmed", "failed", "accepted"]


@pytest.mark.parametrize("honoured", ["true", "false"])
@pytest.mark.parametrize("answer", [
    Fault("/compliance/reports/daily", 200, after=True, body={"status": "RECEIVED"}),
    Fault("/compliance/reports/daily", 200, after=True, raw=b"<html>OK</html>"),
    Fault("/compliance/reports/daily", 201, after=True, raw=b""),
], ids=["200 without reference", "200 not JSON", "201 empty"])
def test_a_2xx_without_a_usable_body_is_accepted_without_reference_and_never_resent(
        job_env: dict[str, str], awkward_day: Database, atrs: AtrsStandin, answer: Fault,
        honoured: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("NCC_ATRS_IDEMPOTENCY_KEY_HONOURED", honoured)
    atrs.fail(dataclasses.replace(answer))  # a fresh count for each case
    assert cli.main(["daily", "--date", DAY]) == 0
    assert f"daily {DAY}: accepted (no reference given by the regulator)" in \
        capsys.readouterr().out
    assert cli.main(["daily", "--date", DAY]) == 0
    assert f"daily {DAY}: already-accepted" in capsys.readouterr().out
    assert len(atrs.calls("POST", "/compliance")) == 1
    assert len(atrs.accepted_for("daily", DAY)) == 1
    with awkward_day.connect() as conn:
        rows = conn.execute("SELECT outcome, regulator_reference, detail"
                            " FROM ncc_audit.submissions").fetchall()
    assert [(outcome, reference) for outcome, reference, _ in rows] == [("accepted", None)]
    assert "without a reference: the regulator holds it" in str(rows[0][2])


def test_a_401_after_a_fresh_token_fails_the_attempt_and_the_next_run_resends_it(
        job_env: dict[str, str], awkward_day: Database, atrs: AtrsStandin) -> None:
    # Refused twice: the token the job had, then the one it fetched for the replay.
    atrs.fail(Fault("/compliance/reports/daily", 401, times=2, body={"error": "invalid_token"}))
    assert cli.main(["daily", "--date", DAY]) == 1
    with awkward_day.connect() as conn:
        outcome, detail = conn.execute(
            "SELECT outcome, detail FROM ncc_audit.submissions").fetchone() or ("", "")
    assert outcome == "failed" and "freshly issued access token" in str(detail)
    assert atrs.calls("POST", "/oauth/token") == [200, 200]
    assert cli.main(["daily", "--date", DAY]) == 0
    assert outcomes(awkward_day) == ["failed", "accepted"]
    assert len(atrs.accepted_for("daily", DAY)) == 1


def test_an_overdue_period_waits_the_backoff_cap_for_a_distant_rate_limit_reset(
        job_env: dict[str, str], awkward_day: Database, atrs: AtrsStandin,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # 09:00 WAT on the 24th: the 23rd was due at 06:00. Nothing is gained by failing at once.
    moment = dt.datetime.fromisoformat("2026-11-24T08:00:00+00:00")
    started = time.monotonic()
    monkeypatch.setattr(clock, "now", lambda: moment + dt.timedelta(
        seconds=time.monotonic() - started))
    monkeypatch.setenv("NCC_ATRS_BACKOFF_MAX_SECONDS", "1")
    atrs.fail(Fault("/compliance/reports/daily", 429, headers={"X-RateLimit-Reset": "3600"}))
    assert cli.main(["daily", "--date", DAY]) == 0
    first, second = tries(awkward_day)
    assert (first[2], second[2]) == (429, 201)
    assert 1.0 <= (second[3] - first[3]).total_seconds() < 3.0
    assert "the deadline has passed, so waiting the backoff cap" in capsys.readouterr().err


def test_a_rejected_package_is_removed_from_the_regulators_server(
        job_env: dict[str, str], awkward_day: Database, atrs: AtrsStandin,
        remote_dir: Path) -> None:
    atrs.fail(Fault("/compliance/reports/daily", 422, body={"errors": ["statistics: bad"]}))
    assert cli.main(["daily", "--date", DAY]) == 1
    assert list(remote_dir.iterdir()) == []
    files = len(list((Path(job_env["NCC_OUT_DIR"]) / "daily" / DAY).iterdir()))
    with awkward_day.connect() as conn:
        detail = conn.execute("SELECT detail FROM ncc_audit.submissions").fetchone()
    assert detail is not None
    assert f"removed {files} of its {files} files from the SFTP server" in detail[0]
    assert cli.main(["daily", "--date", DAY]) == 0
    assert len(list(remote_dir.iterdir())) == files


def everything_recorded(database: Database) -> str:
    """Every row of the audit trail, as text: what 7 years of retention would keep."""
    with database.connect() as conn:
        tables = [str(r[0]) for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'ncc_audit'")]
        return "\n".join(str(conn.execute(f"SELECT * FROM ncc_audit.{table}").fetchall())
                         for table in tables)


@pytest.mark.parametrize("lifetime", [None, "3600", "soon"],
                         ids=["no expires_in", "expires_in as a string", "expires_in not a number"])
def test_a_token_answer_without_a_numeric_expires_in_works_and_is_never_recorded(
        job_env: dict[str, str], awkward_day: Database, atrs: AtrsStandin,
        lifetime: str | None, capsys: pytest.CaptureFixture[str]) -> None:
    atrs.token_lifetime = lifetime  # RFC 6749: expires_in is RECOMMENDED, not required
    assert cli.main(["daily", "--date", DAY]) == 0
    printed = capsys.readouterr()
    assert len(atrs.accepted_for("daily", DAY)) == 1
    recorded = everything_recorded(awkward_day)
    for token in atrs.issued_tokens:
        assert token not in printed.out + printed.err
        assert token not in recorded


@pytest.mark.parametrize("answer", [
    Fault("/oauth/token", 200, body={"token": "SECRET-TOKEN-c0ffee", "expires_in": 3600}),
    Fault("/oauth/token", 200, raw=b"access_token=SECRET-TOKEN-c0ffee&expires_in=3600"),
    Fault("/oauth/token", 400, body={"error": "invalid_client",
                                     "error_description": "SECRET-TOKEN-c0ffee"}),
], ids=["200 without access_token", "200 form-encoded", "400 with a description"])
def test_no_answer_of_the_token_endpoint_is_ever_logged_or_stored(
        job_env: dict[str, str], awkward_day: Database, atrs: AtrsStandin, answer: Fault,
        capsys: pytest.CaptureFixture[str]) -> None:
    atrs.fail(dataclasses.replace(answer, times=10))
    assert cli.main(["daily", "--date", DAY]) == 1
    printed = capsys.readouterr()
    assert "the token endpoint answered" in printed.out + printed.err
    assert "SECRET-TOKEN" not in printed.out + printed.err
    assert "SECRET-TOKEN" not in everything_recorded(awkward_day)
