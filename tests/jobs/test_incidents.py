"""The incident feed: every CRITICAL alert of the look-back window submitted once (each run
selects what is not yet accepted), each HTTP try in the audit trail, and its regulator status
queryable; plus the audit exporter the alert rules read."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest

from jobs import audit, cli
from jobs import clock as clock_module
from jobs.exporter import (
    INCIDENTS_LATE,
    INCIDENTS_UNSENT,
    LAST_ACCEPTED,
    UNCONFIRMED,
    AuditCollector,
)
from jobs.settings import load_settings
from tests.jobs.atrs_standin import AtrsStandin, Fault
from tests.jobs.conftest import LICENSE, Database
from tests.jobs.dataset import add_calls, add_critical_alert

pytestmark = pytest.mark.slow


def now_minus(minutes: int) -> dt.datetime:
    return dt.datetime.now(dt.UTC) - dt.timedelta(minutes=minutes)


def test_each_critical_alert_is_submitted_once(job_env: dict[str, str], database: Database,
                                               atrs: AtrsStandin,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    with database.connect() as conn:
        add_critical_alert(conn, "C1", now_minus(20))
        add_critical_alert(conn, "C2", now_minus(3))
        conn.execute("INSERT INTO acm.fraud_alerts VALUES ('H1', now(), NULL, 'HIGH', 'X',"
                     " '08031112222', '08033334444', 'OPEN')")
    assert cli.main(["incidents"]) == 0
    assert "incidents: 2 submitted, 0 already submitted, 0 failed" in capsys.readouterr().out
    assert [a.period for a in atrs.accepted] == ["C1", "C2"]
    assert atrs.accepted[0].body["aNumber"] == "+2348031112222"

    with database.connect() as conn:
        add_critical_alert(conn, "C3", now_minus(1))
    assert cli.main(["incidents"]) == 0
    # C1 and C2 are still in the look-back window, and accepted: neither is sent again.
    assert "incidents: 1 submitted, 2 already submitted" in capsys.readouterr().out
    assert [a.period for a in atrs.accepted] == ["C1", "C2", "C3"]

    # The regulator moves the case on; `status incident --refresh` records what it says.
    atrs.incident_status[atrs.accepted[0].reference] = "UNDER_INVESTIGATION"
    assert cli.main(["status", "incident", "C1", "--refresh"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["incident"]["status"] == "UNDER_INVESTIGATION"
    assert shown["incident"]["incident_id"] == atrs.accepted[0].reference


def test_a_failed_incident_is_sent_next_time_and_each_try_is_recorded(
        job_env: dict[str, str], database: Database, atrs: AtrsStandin) -> None:
    with database.connect() as conn:
        add_critical_alert(conn, "C1", now_minus(10))
        add_critical_alert(conn, "C2", now_minus(5))
    atrs.fail(Fault("/fraud/incidents", 503, times=4))  # every try of the first alert
    assert cli.main(["incidents"]) == 1
    assert [a.period for a in atrs.accepted] == ["C2"]
    with database.connect() as conn:
        tries = conn.execute(
            "SELECT s.period, s.outcome, t.try_number, t.http_status, t.duration_ms >= 0"
            " FROM ncc_audit.http_tries AS t JOIN ncc_audit.submissions AS s USING"
            " (submission_id) ORDER BY t.try_id").fetchall()
    # The contract records every submission attempt: one row per HTTP try, with its status.
    assert tries == [("C1", "failed", n, 503, True) for n in (1, 2, 3, 4)] + \
        [("C2", "accepted", 1, 201, True)]
    assert cli.main(["incidents"]) == 0
    assert sorted(a.period for a in atrs.accepted) == ["C1", "C2"]


def test_a_late_committed_alert_inside_its_hour_is_sent(
        job_env: dict[str, str], database: Database, atrs: AtrsStandin) -> None:
    with database.connect() as conn:
        add_critical_alert(conn, "C1", now_minus(5))
    assert cli.main(["incidents"]) == 0
    # Detected 40 minutes ago, committed only now (after C1 was sent): still in its hour.
    with database.connect() as conn:
        add_critical_alert(conn, "LATE", now_minus(40))
    assert cli.main(["incidents"]) == 0
    assert [a.period for a in atrs.accepted] == ["C1", "LATE"]


def test_a_first_run_says_loudly_what_lies_before_its_window(
        job_env: dict[str, str], database: Database, atrs: AtrsStandin,
        capsys: pytest.CaptureFixture[str]) -> None:
    with database.connect() as conn:
        add_critical_alert(conn, "ANCIENT", now_minus(60 * 30))  # 30 h: before the 24 h window
        add_critical_alert(conn, "RECENT", now_minus(2))
    assert cli.main(["incidents"]) == 0
    printed = capsys.readouterr()
    assert ("incidents: WARNING: 1 CRITICAL alerts older than the 24 h look-back window were "
            "never submitted") in printed.out
    assert '"level": "error"' in printed.err and "NCC_INCIDENT_LOOKBACK_HOURS" in printed.err
    assert [a.period for a in atrs.accepted] == ["RECENT"]


def test_late_incident_is_still_sent_and_reported_late(
        job_env: dict[str, str], database: Database, atrs: AtrsStandin,
        capsys: pytest.CaptureFixture[str]) -> None:
    with database.connect() as conn:
        add_critical_alert(conn, "OLD", now_minus(90))
    assert cli.main(["incidents"]) == 0
    assert "1 past the 1-hour deadline" in capsys.readouterr().out
    assert [a.period for a in atrs.accepted] == ["OLD"]


def test_exporter_reports_the_last_accepted_submission(job_env: dict[str, str],
                                                       database: Database) -> None:
    assert cli.main(["migrate"]) == 0
    collector = AuditCollector(load_settings())
    before = {m.name: m.samples for m in collector.collect()}
    assert [s.value for s in before["ncc_report_audit_up"]] == [1.0]
    assert before[LAST_ACCEPTED] == []  # never accepted: the alert rule's absent() fires
    with database.connect() as conn:
        add_calls(conn, "2026-11-23")
    assert cli.main(["daily", "--date", "2026-11-23"]) == 0
    samples = {m.name: m.samples for m in collector.collect()}[LAST_ACCEPTED]
    assert [s.labels for s in samples] == [{"report": "daily"}]
    assert abs(samples[0].value - dt.datetime.now(dt.UTC).timestamp()) < 60


def gauges(collector: AuditCollector) -> dict[str, list[tuple[dict[str, str], float]]]:
    return {m.name: [(s.labels, s.value) for s in m.samples] for m in collector.collect()}


def test_the_exporter_shows_incidents_unsent_past_their_hour_and_late_ones(
        job_env: dict[str, str], database: Database, atrs: AtrsStandin) -> None:
    assert cli.main(["migrate"]) == 0
    with database.connect() as conn:
        add_critical_alert(conn, "OLD", now_minus(90))
        add_critical_alert(conn, "FRESH", now_minus(5))
    collector = AuditCollector(load_settings())
    before = gauges(collector)
    # OLD is past its hour with nothing sent: NccIncidentUnsentPastDeadline fires.
    assert before[INCIDENTS_UNSENT] == [({}, 1.0)]
    assert before[INCIDENTS_LATE] == [({}, 0.0)]
    assert cli.main(["incidents"]) == 0
    after = gauges(collector)
    assert after[INCIDENTS_UNSENT] == [({}, 0.0)]
    assert after[INCIDENTS_LATE] == [({}, 1.0)]  # OLD went in, 90 minutes after detection
    assert after[UNCONFIRMED] == [({"report": r}, 0.0)
                                  for r in ("daily", "weekly", "monthly", "incident")]


def settle() -> None:
    """Let the stand-in finish the answer nobody waited for (3 s after the request)."""
    time.sleep(1.5)


def test_an_unanswered_incident_is_never_resent_until_a_person_resolves_it(
        job_env: dict[str, str], database: Database, atrs: AtrsStandin,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # A regulator that stores every POST and ignores Idempotency-Key; the job has not been
    # told otherwise, so an unanswered POST must not be sent again.
    monkeypatch.setenv("NCC_ATRS_IDEMPOTENCY_KEY_HONOURED", "false")
    atrs.honours_idempotency_key = False
    with database.connect() as conn:
        add_critical_alert(conn, "C1", now_minus(10))
    atrs.fail(Fault("/fraud/incidents", None, delay=3.0, after=True))
    assert cli.main(["incidents"]) == 1
    settle()
    assert len(atrs.accepted_for("incident", "C1")) == 1  # stored by the one POST
    for _ in range(2):
        assert cli.main(["incidents"]) == 1
        printed = capsys.readouterr()
        assert "1 awaiting `ncc-report resolve`" in printed.out
        assert "ncc-report resolve incident C1 --received INCIDENT_ID" in printed.err
    assert len(atrs.calls("POST", "/fraud/incidents")) == 1
    assert len(atrs.accepted_for("incident", "C1")) == 1
    # NccSubmissionUnconfirmed's metric counts it.
    waiting = dict((labels["report"], value)
                   for labels, value in gauges(AuditCollector(load_settings()))[UNCONFIRMED])
    assert waiting["incident"] == 1.0
    # A person asks the regulator and records its incident id.
    incident_id = atrs.accepted_for("incident", "C1")[0].reference
    assert cli.main(["resolve", "incident", "C1", "--received", incident_id]) == 0
    assert cli.main(["incidents"]) == 0
    assert "0 submitted, 1 already submitted" in capsys.readouterr().out
    assert len(atrs.calls("POST", "/fraud/incidents")) == 1
    assert cli.main(["status", "incident", "C1"]) == 0
    assert json.loads(capsys.readouterr().out)["incident"]["incident_id"] == incident_id
    waiting = dict((labels["report"], value)
                   for labels, value in gauges(AuditCollector(load_settings()))[UNCONFIRMED])
    assert waiting["incident"] == 0.0


def test_an_incident_the_regulator_never_received_is_resent_once_a_person_says_so(
        job_env: dict[str, str], database: Database, atrs: AtrsStandin,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NCC_ATRS_IDEMPOTENCY_KEY_HONOURED", "false")
    atrs.honours_idempotency_key = False
    with database.connect() as conn:
        add_critical_alert(conn, "C1", now_minus(10))
    atrs.fail(Fault("/fraud/incidents", 599, delay=3.0))  # the connection dies, nothing stored
    assert cli.main(["incidents"]) == 1
    settle()
    assert cli.main(["resolve", "incident", "C1", "--not-received"]) == 0
    assert cli.main(["incidents"]) == 0
    assert len(atrs.accepted_for("incident", "C1")) == 1


def test_an_incident_killed_during_its_post_is_not_resent_without_the_key_confirmed(
        job_env: dict[str, str], database: Database, atrs: AtrsStandin,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NCC_ATRS_IDEMPOTENCY_KEY_HONOURED", "false")
    with database.connect() as conn:
        add_critical_alert(conn, "C1", now_minus(10))
    assert cli.main(["migrate"]) == 0
    # What a run killed between recording `submitting` and the answer leaves behind.
    with database.connect() as conn:
        audit.start_attempt(conn, report="incident", period="C1", outcome="submitting",
                            idempotency_key=f"{LICENSE}:incident:C1", request_body={},
                            license_number=LICENSE, environment="sandbox")
    assert cli.main(["incidents"]) == 1
    assert atrs.calls("POST", "/fraud/incidents") == []
    with database.connect() as conn:
        assert conn.execute("SELECT outcome FROM ncc_audit.submissions").fetchall() == [
            ("unconfirmed",)]


@pytest.mark.parametrize("answer", [
    Fault("/fraud/incidents", 200, after=True, body={"status": "RECEIVED"}),
    Fault("/fraud/incidents", 201, after=True, raw=b"RECEIVED"),
], ids=["200 without incidentId", "201 not JSON"])
def test_a_2xx_without_an_incident_id_is_accepted_and_never_resent(
        job_env: dict[str, str], database: Database, atrs: AtrsStandin, answer: Fault,
        capsys: pytest.CaptureFixture[str]) -> None:
    with database.connect() as conn:
        add_critical_alert(conn, "C1", now_minus(10))
    atrs.fail(answer)
    assert cli.main(["incidents"]) == 0
    assert "1 submitted" in capsys.readouterr().out
    assert cli.main(["incidents"]) == 0
    assert "0 submitted, 1 already submitted" in capsys.readouterr().out
    assert len(atrs.calls("POST", "/fraud/incidents")) == 1
    with database.connect() as conn:
        outcome, reference, detail = conn.execute(
            "SELECT outcome, regulator_reference, detail FROM ncc_audit.submissions"
        ).fetchone() or ("", "", "")
        assert conn.execute("SELECT incident_id FROM ncc_audit.incidents").fetchall() == [
            (None,)]
    assert (outcome, reference) == ("accepted", None)
    assert "without a reference" in str(detail)
    assert cli.main(["status", "incident", "C1", "--refresh"]) == 0
    assert "without an incident id" in capsys.readouterr().err


def test_incident_times_carry_the_wat_offset_of_the_daily_files(
        job_env: dict[str, str], database: Database, atrs: AtrsStandin,
        monkeypatch: pytest.MonkeyPatch) -> None:
    detected = dt.datetime(2026, 12, 1, 22, 30, 0, 250000, tzinfo=dt.UTC)
    with database.connect() as conn:
        add_critical_alert(conn, "C1", detected)
    monkeypatch.setattr(clock_module, "now", lambda: detected + dt.timedelta(minutes=10))
    assert cli.main(["incidents"]) == 0
    assert atrs.accepted[0].body["detectedAt"] == "2026-12-01T23:30:00.250000+01:00"


@pytest.mark.parametrize(("age_minutes", "late"), [(58, 0), (62, 1)])
def test_lateness_is_decided_on_the_databases_clock(
        job_env: dict[str, str], database: Database, atrs: AtrsStandin,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        age_minutes: int, late: int) -> None:
    with database.connect() as conn:
        database_now = (conn.execute("SELECT now()").fetchone() or [None])[0]
        assert database_now is not None
        add_critical_alert(conn, "C1", database_now - dt.timedelta(minutes=age_minutes))
    # This node's clock runs five minutes ahead of the database's (NTP stopped).
    real = clock_module._local_now
    monkeypatch.setattr(clock_module, "_local_now",
                        lambda: real() + dt.timedelta(minutes=5))
    assert cli.main(["incidents"]) == 0
    printed = capsys.readouterr()
    assert f"1 submitted, 0 already submitted, 0 failed, {late} past the 1-hour deadline" \
        in printed.out
    assert "this node's clock is 300 s ahead of the report database's" in printed.err
