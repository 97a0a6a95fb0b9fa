"""Package generation against real PostgreSQL: the daily files byte for byte on an awkward
day, empty days, E.164 normalization, checksums, reproducibility, weekly and monthly."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import psycopg
import pytest

from jobs.database import apply_schema
from jobs.generate import build_package
from jobs.periods import parse_period
from tests.jobs.conftest import JOB_PASSWORD, JOB_USER, LICENSE, Database
from tests.jobs.dataset import load_awkward_day

pytestmark = pytest.mark.slow

STATISTICS_HEADER = (
    "total_calls,alerts_total,alerts_critical,alerts_high,alerts_medium,alerts_low,"
    "calls_disconnected,patterns_blocked,detection_latency_p99_ms,detection_latency_avg_ms,"
    "uptime_percent,false_positive_rate_percent\n")


@pytest.fixture
def job_conn(database: Database) -> Any:
    with psycopg.connect(database.server.dsn(database.name, JOB_USER, JOB_PASSWORD),
                         autocommit=True) as conn:
        apply_schema(conn)
        yield conn


def daily(job_conn: Any, day: str, out: Path) -> Any:
    return build_package(job_conn, parse_period("daily", day), LICENSE, out)


def test_awkward_day_gives_exactly_the_specified_files(database: Database, job_conn: Any,
                                                       tmp_path: Path) -> None:
    with database.connect() as conn:
        load_awkward_day(conn)
    package = daily(job_conn, "2026-11-23", tmp_path)
    files = {item.name: package.path(item).read_text(encoding="utf-8") for item in package.files}
    assert list(files) == [f"ACM_DAILY_{LICENSE}_20261123.csv",
                           f"ACM_ALERTS_{LICENSE}_20261123.csv",
                           f"ACM_TARGETS_{LICENSE}_20261123.csv",
                           f"ACM_SUMMARY_{LICENSE}_20261123.json"]
    # 4 calls in the WAT day (10, 20, 30, 40 ms: P99 interpolates to 39.70), 3 alerts of which
    # one false positive, one DISCONNECT and one BLOCK_PATTERN that day, 3 of 4 samples up.
    assert files[f"ACM_DAILY_{LICENSE}_20261123.csv"] == (
        STATISTICS_HEADER + "4,3,1,1,0,1,1,1,39.70,25.00,75.000,33.333\n")
    assert files[f"ACM_ALERTS_{LICENSE}_20261123.csv"] == (
        "alert_id,detected_at,severity,fraud_type,a_number,b_number,action_taken,status\n"
        "A2,2026-11-23T00:00:00.000+01:00,HIGH,WANGIRI,+447911123456,+2348037654321,"
        "MONITOR,OPEN\n"
        "A3,2026-11-23T13:30:00.250+01:00,CRITICAL,CLI_SPOOFING,+2348031234567,+2348037654321,"
        "BLOCK_PATTERN+DISCONNECT,CONFIRMED\n"
        'A4,2026-11-23T23:59:59.999+01:00,LOW,"SIM_BOX ""gateway"", rural",,+2348037654321,'
        "NONE,FALSE_POSITIVE\n")
    assert files[f"ACM_TARGETS_{LICENSE}_20261123.csv"] == (
        "rank,b_number,alert_count\n1,+2348037654321,3\n")
    summary = json.loads(files[f"ACM_SUMMARY_{LICENSE}_20261123.json"])
    assert summary["periodStart"] == "2026-11-23T00:00:00+01:00"
    assert summary["periodEnd"] == "2026-11-24T00:00:00+01:00"
    assert summary["statistics"]["detection_latency_p99_ms"] == 39.7
    assert summary["statistics"]["total_calls"] == 4
    assert summary["unnormalizedNumbers"] == {
        "count": 1, "rows": [{"alertId": "A4", "field": "a_number", "value": "MTN-PROMO"}]}


def test_summary_carries_the_sha256_of_each_csv(database: Database, job_conn: Any,
                                                tmp_path: Path) -> None:
    with database.connect() as conn:
        load_awkward_day(conn)
    package = daily(job_conn, "2026-11-23", tmp_path)
    summary_file = package.files[-1]
    summary = json.loads(package.path(summary_file).read_bytes())
    listed = {entry["name"]: entry for entry in summary["files"]}
    csvs = [item for item in package.files if item.name.endswith(".csv")]
    assert sorted(listed) == sorted(item.name for item in csvs)
    for item in csvs:
        data = package.path(item).read_bytes()
        assert listed[item.name]["sha256"] == hashlib.sha256(data).hexdigest()
        assert listed[item.name]["bytes"] == len(data)
    assert listed[f"ACM_ALERTS_{LICENSE}_20261123.csv"]["rows"] == 3


def test_zero_alert_day_still_has_header_rows(job_conn: Any, tmp_path: Path) -> None:
    package = daily(job_conn, "2026-11-25", tmp_path)
    texts = [package.path(item).read_text() for item in package.files[:3]]
    # No calls and no uptime samples: latency and uptime unknown (empty), never invented.
    assert texts[0] == STATISTICS_HEADER + "0,0,0,0,0,0,0,0,,,,0.000\n"
    assert texts[1] == ("alert_id,detected_at,severity,fraud_type,a_number,b_number,"
                        "action_taken,status\n")
    assert texts[2] == "rank,b_number,alert_count\n"


def test_same_data_same_bytes_and_staging_never_left(database: Database, job_conn: Any,
                                                     tmp_path: Path) -> None:
    with database.connect() as conn:
        load_awkward_day(conn)
    first = daily(job_conn, "2026-11-23", tmp_path)
    second = daily(job_conn, "2026-11-23", tmp_path)
    assert first.payload_sha256 == second.payload_sha256
    assert sorted(p.name for p in (tmp_path / "daily").iterdir()) == ["2026-11-23"]


@pytest.mark.parametrize(("raw", "expected"), [
    ("+2348031234567", "+2348031234567"),
    ("08031234567", "+2348031234567"),
    ("2348031234567", "+2348031234567"),
    ("8031234567", "+2348031234567"),  # the bare national significant number
    ("+234 (0)803-123-4567", "+2348031234567"),
    ("+23408031234567", "+2348031234567"),
    ("002348031234567", "+2348031234567"),
    ("23408031000001", "+2348031000001"),  # 234 + the trunk 0
    ("0023408031000001", "+2348031000001"),
    ("+14155550100", "+14155550100"),
    ("+447911123456", "+447911123456"),
    ("00447700900123", None),  # a range the UK keeps for fiction: no valid number
    ("+23412701234", None),  # too short for Nigeria's plan in libphonenumber's metadata
    ("MTN-PROMO", None),
    ("3344", None),
    ("0803123456", None),  # one digit short
    ("+2348031234567890", None),
    ("", None),
])
def test_numbers_are_read_by_libphonenumber(raw: str, expected: str | None) -> None:
    from jobs.numbers import e164

    assert e164(raw) == expected


def test_a_numbers_first_reading_stays(database: Database, job_conn: Any,
                                       tmp_path: Path) -> None:
    with database.connect() as conn:
        load_awkward_day(conn)
    first = daily(job_conn, "2026-11-23", tmp_path)
    readings = job_conn.execute("SELECT raw, e164, read_by FROM ncc_read_v2.numbers"
                                " ORDER BY raw").fetchall()
    assert ("0803 765 4321", "+2348037654321") in [row[:2] for row in readings]
    assert all(row[2].startswith("phonenumbers ") for row in readings)
    # A later library release reading a number differently changes no past package.
    job_conn.execute("UPDATE ncc_read_v2.numbers SET read_by = 'phonenumbers 99'")
    again = daily(job_conn, "2026-11-23", tmp_path)
    assert again.payload_sha256 == first.payload_sha256
    assert job_conn.execute("SELECT count(*) FROM ncc_read_v2.numbers").fetchone()[0] == \
        len(readings)


def insert_targets(conn: Any, counts: dict[str, int]) -> None:
    """Alerts of 2026-11-23 (WAT) on each B-number, as many as its count."""
    start = dt.datetime(2026, 11, 23, 10, tzinfo=dt.UTC)
    rows = [(f"T{number}-{n}", start, number) for number, count in counts.items()
            for n in range(count)]
    with conn.cursor() as cursor:
        cursor.executemany("INSERT INTO acm.fraud_alerts VALUES (%s, %s, NULL, 'LOW', 'X',"
                           " '08031234567', %s, 'OPEN')", rows)


def targets_file(job_conn: Any, tmp_path: Path) -> list[str]:
    package = daily(job_conn, "2026-11-23", tmp_path)
    return package.path(package.files[2]).read_text().splitlines()


def test_top_targets_use_competition_ranking(database: Database, job_conn: Any,
                                             tmp_path: Path) -> None:
    # 12 targets with counts 12..1, and another number tied with the first at 12.
    counts = {f"0803000{target:04d}": 12 - target for target in range(12)}
    counts["08030009999"] = 12
    with database.connect() as conn:
        insert_targets(conn, counts)
    lines = targets_file(job_conn, tmp_path)
    assert lines[0] == "rank,b_number,alert_count"
    assert lines[1:4] == ["1,+2348030000000,12", "1,+2348030009999,12", "3,+2348030000001,11"]
    assert lines[-1] == "10,+2348030000008,4"
    assert len(lines) == 11


def test_numbers_tied_at_the_cut_all_stay_with_their_shared_rank(
        database: Database, job_conn: Any, tmp_path: Path) -> None:
    # Ranks 1..7 with counts 20..14, then five numbers tied at 10 (ranks 8..12 by row number,
    # where two of them used to vanish silently).
    counts = {f"0803100{n:04d}": 20 - n for n in range(7)}
    counts |= {f"0803200{n:04d}": 10 for n in range(5)}
    counts["08033000000"] = 1
    with database.connect() as conn:
        insert_targets(conn, counts)
    lines = targets_file(job_conn, tmp_path)
    tied = [line for line in lines[1:] if line.startswith("8,")]
    assert tied == [f"8,+234803200{n:04d},10" for n in range(5)]
    assert len(lines) == 1 + 7 + 5
    assert "+2348033000000" not in "\n".join(lines)


def statistics_row(package: Any) -> dict[str, str]:
    header, row = package.path(package.files[0]).read_text().splitlines()
    return dict(zip(header.split(","), row.split(","), strict=True))


def test_a_package_is_reproducible_as_of_its_period(database: Database, job_conn: Any,
                                                    tmp_path: Path) -> None:
    with database.connect() as conn:
        load_awkward_day(conn)
    first = daily(job_conn, "2026-11-23", tmp_path)
    with database.connect() as conn:
        # Recorded two days later: an action on a past day's alert.
        conn.execute("INSERT INTO acm.actions VALUES (90, 'A2', '2026-11-25T09:00:00Z',"
                     " 'BLOCK_PATTERN')")
    again = daily(job_conn, "2026-11-23", tmp_path)
    assert again.payload_sha256 == first.payload_sha256


def test_calls_disconnected_count_distinct_calls_and_agree_with_the_alerts_file(
        database: Database, job_conn: Any, tmp_path: Path) -> None:
    with database.connect() as conn:
        load_awkward_day(conn)
        # A duplicate DISCONNECT row for A3 (the same call), and an alert disconnected 30 s
        # after WAT midnight.
        conn.execute("INSERT INTO acm.actions VALUES (91, 'A3', '2026-11-23T12:30:02Z',"
                     " 'DISCONNECT')")
        conn.execute("INSERT INTO acm.fraud_alerts VALUES ('A6', '2026-11-23T22:59:50Z', NULL,"
                     " 'HIGH', 'SIM_BOX', '08030000004', '08030000005', 'OPEN')")
        conn.execute("INSERT INTO acm.actions VALUES (92, 'A6', '2026-11-23T23:00:20Z',"
                     " 'DISCONNECT')")
    day = daily(job_conn, "2026-11-23", tmp_path)
    alerts = day.path(day.files[1]).read_text().splitlines()[1:]
    shown = sum("DISCONNECT" in line.split(",")[-2] for line in alerts)
    assert statistics_row(day)["calls_disconnected"] == str(shown) == "1"
    assert next(line for line in alerts if line.startswith("A6,")).endswith(",NONE,OPEN")
    next_day = daily(job_conn, "2026-11-24", tmp_path)
    assert statistics_row(next_day)["calls_disconnected"] == "0"


def test_weekly_package_has_a_row_per_wat_day(database: Database, job_conn: Any,
                                              tmp_path: Path) -> None:
    with database.connect() as conn:
        load_awkward_day(conn)
    period = parse_period("weekly", "2026-W48")  # Monday 2026-11-23 .. Sunday 11-29
    package = build_package(job_conn, period, LICENSE, tmp_path)
    names = [item.name for item in package.files]
    assert names == [f"ACM_WEEKLY_{LICENSE}_20261123.csv",
                     f"ACM_WEEKLY_TARGETS_{LICENSE}_20261123.csv",
                     f"ACM_WEEKLY_SUMMARY_{LICENSE}_20261123.json"]
    rows = package.path(package.files[0]).read_text().splitlines()
    assert rows[0].startswith("report_date,total_calls,")
    assert [row.split(",")[0] for row in rows[1:]] == [f"2026-11-{d}" for d in range(23, 30)]
    assert rows[1].startswith("2026-11-23,4,3,1,1,0,1,")
    summary = json.loads(package.path(package.files[-1]).read_text())
    assert summary["period"] == "2026-W48"
    assert summary["statistics"]["alerts_total"] == 4  # A5 (Tuesday 00:00 WAT) is in the week


def test_monthly_package_includes_a_reproducible_pdf(database: Database, job_conn: Any,
                                                     tmp_path: Path) -> None:
    with database.connect() as conn:
        load_awkward_day(conn)
    period = parse_period("monthly", "2026-11")
    first = build_package(job_conn, period, LICENSE, tmp_path / "a")
    second = build_package(job_conn, period, LICENSE, tmp_path / "b")
    names = [item.name for item in first.files]
    assert names[-2:] == [f"ACM_MONTHLY_REPORT_{LICENSE}_202611.pdf",
                          f"ACM_MONTHLY_SUMMARY_{LICENSE}_202611.json"]
    pdf = first.path(first.files[-2]).read_bytes()
    assert pdf.startswith(b"%PDF-") and len(pdf) > 2000
    assert first.files[-2].sha256 == second.files[-2].sha256
    rows = first.path(first.files[0]).read_text().splitlines()
    assert len(rows) == 1 + 30


def test_a_status_edited_later_changes_no_past_package(database: Database, job_conn: Any,
                                                       tmp_path: Path) -> None:
    with database.connect() as conn:
        load_awkward_day(conn)
    first = daily(job_conn, "2026-11-23", tmp_path)
    assert statistics_row(first)["false_positive_rate_percent"] == "33.333"
    with database.connect() as conn:
        # Days later an analyst clears A2 as a false positive.
        conn.execute("UPDATE acm.fraud_alerts SET status = 'FALSE_POSITIVE' WHERE alert_id = 'A2'")
    again = daily(job_conn, "2026-11-23", tmp_path)
    assert again.payload_sha256 == first.payload_sha256
    # A period read for the first time after the edit sees it.
    with database.connect() as conn:
        conn.execute("INSERT INTO acm.fraud_alerts VALUES ('B1', '2026-11-24T10:00:00Z', NULL,"
                     " 'LOW', 'X', '08031234567', '08037654321', 'FALSE_POSITIVE')")
    next_day = daily(job_conn, "2026-11-24", tmp_path)
    # (That day also holds A5, OPEN, of the awkward data set.)
    assert statistics_row(next_day)["false_positive_rate_percent"] == "50.000"


ADDITIVE = ("total_calls", "alerts_total", "alerts_critical", "alerts_high", "alerts_medium",
            "alerts_low", "calls_disconnected", "patterns_blocked")


def load_midnight_week(conn: Any) -> None:
    """Every day of W48 (and the last of November) has actions on both sides of its midnight:
    an alert just before midnight acted on just after it, one just after midnight acted on at
    once, a block just before midnight, and one call alerted on two days."""
    severities = ("CRITICAL", "HIGH", "MEDIUM", "LOW")
    action_id, call_id, yesterdays_call = 1000, 5000, 9999
    for offset in range(8):  # 2026-11-23 .. 2026-11-30 (WAT)
        day = dt.date(2026, 11, 23) + dt.timedelta(days=offset)
        midnight = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0),
                                       tzinfo=dt.timezone(dt.timedelta(hours=1)))
        start = midnight - dt.timedelta(days=1)
        alerts = [  # id, detected, call, actions (seconds after detection, action)
            (f"M{offset}-late", midnight - dt.timedelta(seconds=10), call_id,
             [(30, "DISCONNECT")]),  # acted on 20 s after midnight: counts on no day
            (f"M{offset}-early", start + dt.timedelta(seconds=10), call_id + 1,
             [(20, "DISCONNECT"), (21, "DISCONNECT")]),  # a duplicate row counts once
            (f"M{offset}-block", midnight - dt.timedelta(seconds=40), None,
             [(5, "BLOCK_PATTERN")]),
            # On Thursday, Wednesday's early call is alerted on and disconnected again.
            (f"M{offset}-again", start + dt.timedelta(hours=12),
             yesterdays_call if offset == 3 else call_id + 2, [(1, "DISCONNECT")]),
        ]
        yesterdays_call = call_id + 1
        for index, (alert_id, detected, call, actions) in enumerate(alerts):
            conn.execute("INSERT INTO acm.fraud_alerts VALUES (%s, %s, %s, %s, 'SIM_BOX',"
                         " '08030000001', '08037654321', 'OPEN')",
                         (alert_id, detected, call, severities[(offset + index) % 4]))
            for delay, action in actions:
                action_id += 1
                conn.execute("INSERT INTO acm.actions VALUES (%s, %s, %s, %s)",
                             (action_id, alert_id, detected + dt.timedelta(seconds=delay),
                              action))
        for minute in (1, 600, 1439):
            call_id += 10
            conn.execute("INSERT INTO acm.call_records VALUES (%s, %s, '0803', '0803', 25)",
                         (call_id, start + dt.timedelta(minutes=minute)))
        call_id += 10


@pytest.mark.parametrize(("report", "label", "days"), [
    ("weekly", "2026-W48", [f"2026-11-{d}" for d in range(23, 30)]),
    ("monthly", "2026-11", [f"2026-11-{d:02d}" for d in range(1, 31)]),
])
def test_a_longer_period_is_the_sum_of_its_days(database: Database, job_conn: Any,
                                                tmp_path: Path, report: str, label: str,
                                                days: list[str]) -> None:
    with database.connect() as conn:
        load_midnight_week(conn)
    package = build_package(job_conn, parse_period(report, label), LICENSE,  # type: ignore[arg-type]
                            tmp_path / report)
    totals = json.loads(package.path(package.files[-1]).read_text())["statistics"]
    day_rows = list(csv.DictReader(package.path(package.files[0]).open()))
    assert [row["report_date"] for row in day_rows] == days
    daily_packages = [statistics_row(daily(job_conn, day, tmp_path / "daily")) for day in days]
    for statistic in ADDITIVE:
        from_rows = sum(int(row[statistic]) for row in day_rows)
        from_dailies = sum(int(row[statistic]) for row in daily_packages)
        assert totals[statistic] == from_rows == from_dailies, statistic
    # The data has what the rule is about: per day, two disconnected calls and one block.
    assert totals["calls_disconnected"] == 2 * min(len(days), 8 if report == "monthly" else 7)
    assert totals["patterns_blocked"] == min(len(days), 8 if report == "monthly" else 7)
