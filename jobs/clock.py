"""The job's one clock. Every "now" the job acts on (which periods have ended, how old an alert
is, an incident's deadline) is read here, so a test sets it in one place."""

from __future__ import annotations

import datetime as dt


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
