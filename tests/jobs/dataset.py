"""Data the tests load into the ACM tables: a hand-checked awkward day, and bulk days."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg

UTC = dt.UTC


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).astimezone(UTC)


# 2026-11-23 in Lagos runs from 2026-11-22T23:00Z to 2026-11-23T23:00Z.
AWKWARD_ALERTS = [
    # id, detected_at (UTC), severity, fraud type, A-number, B-number, status
    ("A1", "2026-11-22T22:59:59.999Z", "CRITICAL", "CLI_SPOOFING", "08030000001",
     "08037654321", "CONFIRMED"),  # 23:59:59.999 WAT the day before: not in the report
    ("A2", "2026-11-22T23:00:00.000Z", "HIGH", "WANGIRI", "00447911123456",
     "0803 765 4321", "OPEN"),  # 00:00 WAT: the first instant of the day
    ("A3", "2026-11-23T12:30:00.250Z", "CRITICAL", "CLI_SPOOFING", "08031234567",
     "+234 803 765 4321", "CONFIRMED"),
    ("A4", "2026-11-23T22:59:59.999Z", "LOW", 'SIM_BOX "gateway", rural', "MTN-PROMO",
     "2348037654321", "FALSE_POSITIVE"),  # the last instant, an alphanumeric A-number
    ("A5", "2026-11-23T23:00:00.000Z", "CRITICAL", "SIM_BOX", "08030000002",
     "08030000003", "OPEN"),  # 00:00 WAT the day after: not in the report
]
AWKWARD_ACTIONS = [
    (1, "A1", "2026-11-22T22:59:59.999Z", "DISCONNECT"),
    (2, "A2", "2026-11-22T23:00:05Z", "MONITOR"),
    (3, "A3", "2026-11-23T12:30:01Z", "DISCONNECT"),
    (4, "A3", "2026-11-23T12:31:00Z", "BLOCK_PATTERN"),
]
AWKWARD_CALLS = [
    (1, "2026-11-22T22:59:59Z", 500),  # the day before
    (2, "2026-11-22T23:00:00Z", 10),
    (3, "2026-11-23T06:00:00Z", 20),
    (4, "2026-11-23T12:30:00Z", 30),
    (5, "2026-11-23T22:59:59.999Z", 40),
    (6, "2026-11-23T23:00:00Z", 900),  # the day after
]
AWKWARD_UPTIME = [
    ("2026-11-22T22:59:00Z", False),  # the day before
    ("2026-11-22T23:00:00Z", True),
    ("2026-11-23T08:00:00Z", True),
    ("2026-11-23T08:01:00Z", False),
    ("2026-11-23T22:59:00Z", True),
]


def load_awkward_day(conn: psycopg.Connection[Any]) -> None:
    with conn.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO acm.call_records VALUES (%s, %s, %s, %s, %s)",
            [(cid, at(t), "08030000000", "08039999999", latency)
             for cid, t, latency in AWKWARD_CALLS])
        cursor.executemany(
            "INSERT INTO acm.fraud_alerts VALUES (%s, %s, NULL, %s, %s, %s, %s, %s)",
            [(aid, at(t), sev, kind, a, b, status)
             for aid, t, sev, kind, a, b, status in AWKWARD_ALERTS])
        cursor.executemany("INSERT INTO acm.actions VALUES (%s, %s, %s, %s)",
                           [(n, aid, at(t), action) for n, aid, t, action in AWKWARD_ACTIONS])
        cursor.executemany("INSERT INTO acm.uptime_samples VALUES (%s, %s)",
                           [(at(t), up) for t, up in AWKWARD_UPTIME])


def add_critical_alert(conn: psycopg.Connection[Any], alert_id: str,
                       detected_at: dt.datetime) -> None:
    conn.execute("INSERT INTO acm.fraud_alerts VALUES (%s, %s, NULL, 'CRITICAL', 'SIM_BOX',"
                 " '08031112222', '08033334444', 'OPEN')", (alert_id, detected_at))


def add_calls(conn: psycopg.Connection[Any], *days: str) -> None:
    """One call at noon WAT on each of these days: a day the platform carried traffic."""
    row = conn.execute("SELECT coalesce(max(call_id), 0) FROM acm.call_records").fetchone()
    first = int(row[0]) + 1 if row else 1
    conn.cursor().executemany(
        "INSERT INTO acm.call_records VALUES (%s, %s, '08030000000', '08039999999', 25)",
        [(first + n, at(f"{day}T12:00:00+01:00")) for n, day in enumerate(days)])
