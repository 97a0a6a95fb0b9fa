"""Reporting periods on the regulator's calendar: WAT (Africa/Lagos) days, weeks and months.

A day is a WAT day: 2026-11-23 runs from 2026-11-22T23:00Z to 2026-11-23T23:00Z. Every bound
the jobs query with is computed here, as an aware datetime, so no query depends on the
database session's time zone.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Literal
from zoneinfo import ZoneInfo

WAT = ZoneInfo("Africa/Lagos")
Report = Literal["daily", "weekly", "monthly"]
REPORTS: tuple[Report, ...] = ("daily", "weekly", "monthly")


@dataclass(frozen=True, order=True)
class Period:
    """A report's covered span: WAT days first_day..last_day inclusive."""

    report: Report
    first_day: dt.date
    last_day: dt.date

    @property
    def label(self) -> str:
        """How the audit trail and the command line name the period."""
        if self.report == "daily":
            return self.first_day.isoformat()
        if self.report == "weekly":
            year, week, _ = self.first_day.isocalendar()
            return f"{year}-W{week:02d}"
        return f"{self.first_day.year}-{self.first_day.month:02d}"

    @property
    def file_stamp(self) -> str:
        """The date part of the regulator's file names."""
        if self.report == "monthly":
            return self.first_day.strftime("%Y%m")
        return self.first_day.strftime("%Y%m%d")

    @property
    def start(self) -> dt.datetime:
        return wat_midnight(self.first_day)

    @property
    def end(self) -> dt.datetime:
        return wat_midnight(self.last_day + dt.timedelta(days=1))

    def next(self) -> Period:
        return period_containing(self.report, self.last_day + dt.timedelta(days=1))

    def previous(self) -> Period:
        return period_containing(self.report, self.first_day - dt.timedelta(days=1))


def wat_midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(0), tzinfo=WAT)


def today_in_lagos(now: dt.datetime) -> dt.date:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(WAT).date()


def period_containing(report: Report, day: dt.date) -> Period:
    if report == "daily":
        return Period(report, day, day)
    if report == "weekly":
        monday = day - dt.timedelta(days=day.weekday())
        return Period(report, monday, monday + dt.timedelta(days=6))
    first = day.replace(day=1)
    following = (first + dt.timedelta(days=32)).replace(day=1)
    return Period(report, first, following - dt.timedelta(days=1))


# The regulator's calendar (ncc-compliance.md, "Calendar"), the one definition: each report is
# due on the morning after its period (daily), the Monday after (weekly) or the 5th of the next
# month (monthly), at this time after WAT midnight; an incident one hour after detection. The
# CronJobs' deadlines are checked against the same table (components/compliance.py).
DUE_AFTER_MIDNIGHT = {"daily": dt.timedelta(hours=6), "weekly": dt.timedelta(hours=12),
                      "monthly": dt.timedelta(hours=18)}
DUE_DAY_AFTER_PERIOD = {"daily": 0, "weekly": 0, "monthly": 4}
INCIDENT_DEADLINE = dt.timedelta(hours=1)


def due(period: Period) -> dt.datetime:
    """When the regulator must have the period's report: daily 06:00 the next morning, weekly
    the following Monday 12:00, monthly the 5th 18:00 (WAT)."""
    day = period.last_day + dt.timedelta(days=1 + DUE_DAY_AFTER_PERIOD[period.report])
    return wat_midnight(day) + DUE_AFTER_MIDNIGHT[period.report]


class PeriodNotEnded(ValueError):
    """A period asked for before its end: its figures would be partial, and a package sent
    for it would stand in for the true one (a re-run of an accepted period sends nothing)."""


def ensure_ended(period: Period, now: dt.datetime) -> None:
    """Refuse a period whose end (WAT) is after `now`, naming when it can first be reported."""
    if period.end > now:
        raise PeriodNotEnded(
            f"{period.report} {period.label} has not ended: it ends at "
            f"{period.end:%Y-%m-%d %H:%M} WAT and can first be reported then; nothing was "
            "generated or sent")


def before_first_data(period: Period, first_data_date: dt.date) -> bool:
    """Whether `period` ends before the licence's first day of data: nothing to report."""
    return period.last_day < first_data_date


def ensure_after_first_data(period: Period, first_data_date: dt.date) -> None:
    if before_first_data(period, first_data_date):
        raise ValueError(
            f"{period.report} {period.label} ends before {first_data_date}, this "
            "licence's first day of data (NCC_FIRST_DATA_DATE, stack setting "
            "compliance.firstDataDate): there is nothing to report; nothing was generated "
            "or sent")


def last_complete_period(report: Report, now: dt.datetime) -> Period:
    """The most recent period that has fully ended in Lagos at `now`."""
    return period_containing(report, today_in_lagos(now)).previous()


_DAY = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_WEEK = re.compile(r"^(\d{4})-W(\d{2})$")
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
SHAPES = {"daily": "YYYY-MM-DD", "weekly": "YYYY-Www or YYYY-MM-DD",
          "monthly": "YYYY-MM or YYYY-MM-DD"}


def parse_period(report: Report, text: str, option: str = "--period") -> Period:
    """`2026-11-23` (daily, or any day of a week or month), `2026-W47`, or `2026-11`.

    Only these shapes: Python's ISO parser also takes `20261120` and `2026-W47-5`, which an
    operator may have meant otherwise, and a report filed for the wrong day cannot be taken
    back. `option` is what the operator typed, so the error names it."""
    try:
        if report == "weekly" and (week := _WEEK.match(text)):
            monday = dt.date.fromisocalendar(int(week[1]), int(week[2]), 1)
            return period_containing(report, monday)
        if report == "monthly" and (month := _MONTH.match(text)):
            return period_containing(report, dt.date(int(month[1]), int(month[2]), 1))
        if day := _DAY.match(text):
            return period_containing(report, dt.date(int(day[1]), int(day[2]), int(day[3])))
        raise ValueError("not in that form")
    except ValueError as error:
        raise ValueError(f"{option} {text!r}: not a {report} period ({SHAPES[report]}): "
                         f"{error}") from None
