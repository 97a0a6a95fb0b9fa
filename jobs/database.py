"""The report database: connection, the jobs' own schema files, and per-period run locks."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources

import psycopg

from jobs.settings import DATABASE_PASSWORD, JobSettings, read_secret

log = logging.getLogger(__name__)

READ_CONTRACT = "ncc_read_v3"
# Where the contract's readings (E.164 forms, first statuses) are kept: v2's tables, shared by
# v3, so that a number or a status is read once whichever version reads it.
READINGS = "ncc_read_v2"
# Applied in this order by every run; each is idempotent and skipped when unchanged. Older
# versions stay: what a package was generated with remains there to be read.
SCHEMA_FILES = ("ncc_read_v1.sql", "ncc_read_v2.sql", "ncc_read_v3.sql", "ncc_audit_v1.sql",
                "ncc_audit_v2.sql", "ncc_audit_v3.sql", "ncc_audit_v4.sql",
                "ncc_audit_v5.sql")
# The ACM platform's own tables as the jobs expect them: loaded by tests and benchmarks only.
SOURCE_SCHEMA_FILE = "acm_source_v1.sql"
_MIGRATION_LOCK = 0x4E43_4341  # "NCCA": serializes schema application across jobs


class LockBusy(Exception):
    """Another run holds the period (a manual run overlapping the CronJob)."""


class DatabaseUnavailable(Exception):
    """The report database could not be reached, or went away during the run; names where."""

    def __init__(self, host: str, port: int, what: str) -> None:
        super().__init__(f"the report database at {host}:{port} {what}")
        self.host = host
        self.port = port


def schema_sql(name: str) -> str:
    return resources.files("jobs").joinpath("sql", name).read_text(encoding="utf-8")


@contextmanager
def connect(settings: JobSettings) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A connection for the run. A database that refuses, is down, or accepts and never
    answers fails within `db_connect_timeout_seconds` as `DatabaseUnavailable` naming host and
    port; so does a connection lost during the run (a restart), after which nothing more is
    attempted: the next run resumes from the audit trail."""
    password = read_secret(settings, DATABASE_PASSWORD)
    host, port, limit = settings.db_host, settings.db_port, settings.db_connect_timeout_seconds
    try:
        conn = psycopg.connect(
            host=host, port=port, dbname=settings.db_name, user=settings.db_user,
            password=password, sslmode=settings.db_sslmode, application_name="ncc-report",
            connect_timeout=limit, autocommit=True)
    except psycopg.OperationalError as error:
        reason = _first_line(error)
        if "timeout expired" in reason:
            what = (f"did not answer within {limit} s (NCC_DB_CONNECT_TIMEOUT_SECONDS); "
                    "nothing was generated or sent")
        else:
            what = f"could not be reached ({reason}); nothing was generated or sent"
        raise DatabaseUnavailable(host, port, what) from None
    try:
        with conn:
            yield conn
    except psycopg.OperationalError as error:
        raise DatabaseUnavailable(
            host, port, f"failed during the run ({_first_line(error)}); nothing further was "
            "done, and the next run resumes from the audit trail without sending a period "
            "twice") from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def apply_schema(conn: psycopg.Connection[tuple[object, ...]],
                 names: tuple[str, ...] = SCHEMA_FILES) -> None:
    """Bring the read contract and the audit tables to this version of the code.

    The incidents job starts every five minutes and may overlap the daily one, so files are
    applied under a transaction-scoped advisory lock and only when their checksum changed.
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS public.ncc_schema_files ("
                     " name text PRIMARY KEY, sha256 text NOT NULL,"
                     " applied_at timestamptz NOT NULL DEFAULT now())")
        for name in names:
            text = schema_sql(name)
            digest = hashlib.sha256(text.encode()).hexdigest()
            row = conn.execute("SELECT sha256 FROM public.ncc_schema_files WHERE name = %s",
                               (name,)).fetchone()
            if row and row[0] == digest:
                continue
            log.info("applying schema file %s", name, extra={"schema_file": name})
            conn.execute(text.encode())
            conn.execute("INSERT INTO public.ncc_schema_files (name, sha256) VALUES (%s, %s)"
                         " ON CONFLICT (name) DO UPDATE SET sha256 = excluded.sha256,"
                         " applied_at = now()", (name, digest))


@contextmanager
def run_lock(conn: psycopg.Connection[tuple[object, ...]], key: str) -> Iterator[None]:
    """Hold `key` for the life of this run. A session-level advisory lock: if the process
    dies, the database drops the session and the lock with it, so a re-run is never blocked
    by a crashed one."""
    row = conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (key,)).fetchone()
    if not row or not row[0]:
        raise LockBusy(f"another ncc-report run holds {key}; not starting a second one")
    try:
        yield
    finally:
        if not conn.closed:
            conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (key,))
