"""The incident feed: every CRITICAL alert submitted once, tracked by a watermark, and its
regulator status queryable; plus the audit exporter the alert rules read."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from jobs import cli
from jobs.exporter import LAST_ACCEPTED, AuditCollector
from jobs.settings import load_settings
from tests.jobs.atrs_standin import AtrsStandin, Fault
from tests.jobs.conftest import Database
from tests.jobs.dataset import add_critical_alert

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
    # C2 is inside the overlap window behind the watermark, C1 is not looked at again.
    assert "incidents: 1 submitted, 1 already submitted" in capsys.readouterr().out
    assert [a.period for a in atrs.accepted] == ["C1", "C2", "C3"]

    # The regulator moves the case on; `status incident --refresh` records what it says.
    atrs.incident_status[atrs.accepted[0].reference] = "UNDER_INVESTIGATION"
    assert cli.main(["status", "incident", "C1", "--refresh"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["incident"]["status"] == "UNDER_INVESTIGATION"
    assert shown["incident"]["incident_id"] == atrs.accepted[0].reference


def test_failed_incident_holds_the_watermark_and_is_sent_next_time(
        job_env: dict[str, str], database: Database, atrs: AtrsStandin) -> None:
    with database.connect() as conn:
        add_critical_alert(conn, "C1", now_minus(10))
        add_critical_alert(conn, "C2", now_minus(5))
    atrs.fail(Fault("/fraud/incidents", 503, times=4))  # every try of the first alert
    assert cli.main(["incidents"]) == 1
    assert [a.period for a in atrs.accepted] == ["C2"]
    with database.connect() as conn:
        watermark = conn.execute("SELECT detected_at FROM ncc_audit.incident_watermark"
                                 ).fetchone()
        c1 = conn.execute("SELECT detected_at FROM acm.fraud_alerts WHERE alert_id = 'C1'"
                          ).fetchone()
    assert watermark == c1
    assert cli.main(["incidents"]) == 0
    assert sorted(a.period for a in atrs.accepted) == ["C1", "C2"]


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
    assert cli.main(["daily", "--date", "2026-11-23"]) == 0
    samples = {m.name: m.samples for m in collector.collect()}[LAST_ACCEPTED]
    assert [s.labels for s in samples] == [{"report": "daily"}]
    assert abs(samples[0].value - dt.datetime.now(dt.UTC).timestamp()) < 60
