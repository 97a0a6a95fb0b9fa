"""The job's one clock: the report database's.

Which periods have ended, how old an incident is, when a retry must stop, and every time the
audit trail records are decided on the database's clock, the one the exporter and the alert
rules read too. A node whose clock is a few minutes off would otherwise call a 58-minute-old
incident late, or generate a report for a day that has not ended. The job reads the database's
time once per connection and keeps the offset, so `now()` costs no round trip.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

log = logging.getLogger(__name__)

# Beyond this, the node's clock is worth an operator's look (NTP stopped), though the job is
# not misled by it: it keeps to the database's.
SKEW_WARNING = dt.timedelta(seconds=30)

_offset = dt.timedelta(0)


def _local_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def now() -> dt.datetime:
    """The database's time, as last measured (the node's, until a connection is made)."""
    return _local_now() + _offset


def follow_database(conn: Any) -> dt.timedelta:
    """Measure the database's clock against the node's and keep to it from now on; returns
    the difference (database minus node)."""
    global _offset
    before = _local_now()
    row = conn.execute("SELECT statement_timestamp()").fetchone()
    after = _local_now()
    database_now: dt.datetime = row[0]
    difference = database_now - (before + (after - before) / 2)
    _offset = difference
    if abs(difference) > SKEW_WARNING:
        log.warning("this node's clock is %.0f s %s the report database's; the job keeps to "
                    "the database's (check the node's NTP)", abs(difference.total_seconds()),
                    "behind" if difference > dt.timedelta(0) else "ahead of",
                    extra={"clock_skew_seconds": round(difference.total_seconds(), 3)})
    return difference
