"""Report packages: the files of one report and period, generated from the read contract.

Aggregates are computed by PostgreSQL (`ncc_read_v1`); per-alert files are streamed from
`COPY ... TO STDOUT` straight to disk, so memory does not grow with the day's traffic. A
package is written into a hidden staging directory and renamed into place when complete:
nothing half-written is ever picked up by the transport step. The same data always gives
the same bytes (no generation timestamps inside the files), so checksums identify content.
"""

from __future__ import annotations

import csv
import decimal
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from jobs.database import READ_CONTRACT
from jobs.numbers import record_numbers
from jobs.periods import Period
from jobs.reports_pdf import monthly_pdf

log = logging.getLogger(__name__)

TOP_TARGETS = 10
# Listed in the summary one by one up to this many; the count is always complete.
UNNORMALIZED_LISTED = 1000
_CHUNK = 1 << 20
Connection = psycopg.Connection[tuple[Any, ...]]


@dataclass(frozen=True)
class PackageFile:
    name: str
    sha256: str
    bytes: int
    rows: int | None  # data rows of a CSV (header excluded); None for JSON and PDF

    def as_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"name": self.name, "sha256": self.sha256, "bytes": self.bytes}
        if self.rows is not None:
            entry["rows"] = self.rows
        return entry


@dataclass(frozen=True)
class Package:
    period: Period
    license_number: str
    directory: Path
    # In upload order: the summary JSON, which names the others' checksums, comes last.
    files: tuple[PackageFile, ...]
    summary: dict[str, Any]

    @property
    def payload_sha256(self) -> str:
        """One checksum over every file: equal for byte-identical packages."""
        digest = hashlib.sha256()
        for item in self.files:
            digest.update(f"{item.name} {item.sha256}\n".encode())
        return digest.hexdigest()

    def path(self, item: PackageFile) -> Path:
        return self.directory / item.name


def file_names(period: Period, license_number: str) -> dict[str, str]:
    """The regulator's names for the files of a period's package, by role."""
    stamp, lic = period.file_stamp, license_number
    if period.report == "daily":
        return {"statistics": f"ACM_DAILY_{lic}_{stamp}.csv",
                "alerts": f"ACM_ALERTS_{lic}_{stamp}.csv",
                "targets": f"ACM_TARGETS_{lic}_{stamp}.csv",
                "summary": f"ACM_SUMMARY_{lic}_{stamp}.json"}
    kind = period.report.upper()
    names = {"statistics": f"ACM_{kind}_{lic}_{stamp}.csv",
             "targets": f"ACM_{kind}_TARGETS_{lic}_{stamp}.csv",
             "summary": f"ACM_{kind}_SUMMARY_{lic}_{stamp}.json"}
    if period.report == "monthly":
        names["report"] = f"ACM_{kind}_REPORT_{lic}_{stamp}.pdf"
    return names


def build_package(conn: Connection, period: Period, license_number: str,
                  out_dir: Path) -> Package:
    names = file_names(period, license_number)
    final = out_dir / period.report / period.label
    remove_dead_runs_leftovers(out_dir / period.report)
    staging = out_dir / period.report / f".{period.label}.staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        log.info("generating %s package for %s", period.report, period.label,
                 extra={"report": period.report, "period": period.label})
        record_numbers(conn, period.start, period.end)
        # One snapshot for all files, so the summary agrees with the CSVs it checksums. A dry
        # run is inside one repeatable-read transaction already (rolled back at its end).
        in_transaction = conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE
        with conn.transaction():
            if not in_transaction:
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            files, summary = _write_files(conn, period, license_number, names, staging)
        _replace_directory(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    package = Package(period, license_number, final, tuple(files), summary)
    log.info("generated %s package for %s: %s", period.report, period.label,
             ", ".join(f"{f.name} ({f.bytes} bytes)" for f in files),
             extra={"report": period.report, "period": period.label,
                    "payload_sha256": package.payload_sha256})
    return package


_LEFTOVER = re.compile(r"^\.(?P<label>.+)\.(?:staging|retired)-(?P<pid>\d+)$")


def remove_dead_runs_leftovers(report_dir: Path) -> list[Path]:
    """Staging and retired folders of runs that are gone (killed mid-generation): a folder
    is a leftover when no process has its PID, or when the PID is this process's own (a pod's
    job process is often the same PID as the dead one's), since this run has made none yet."""
    removed: list[Path] = []
    if not report_dir.is_dir():
        return removed
    for entry in report_dir.iterdir():
        match = _LEFTOVER.match(entry.name)
        if not match or not entry.is_dir():
            continue
        pid = int(match["pid"])
        if pid != os.getpid() and _alive(pid):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
        log.info("removed %s, left by a run that is gone", entry.name,
                 extra={"leftover": str(entry)})
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _write_files(conn: Connection, period: Period, license_number: str,
                 names: dict[str, str], directory: Path,
                 ) -> tuple[list[PackageFile], dict[str, Any]]:
    bounds = (period.start, period.end)
    files: list[PackageFile] = []
    totals = _one_row(conn, "SELECT * FROM {}.statistics(%s, %s)", bounds)
    if period.report == "daily":
        files.append(_write_rows(directory / names["statistics"], [totals]))
        files.append(_copy_csv(conn, directory / names["alerts"],
                               "SELECT * FROM {}.alerts(%s, %s)", bounds))
    else:
        files.append(_copy_csv(conn, directory / names["statistics"],
                               "SELECT * FROM {}.daily_statistics(%s, %s)",
                               (period.first_day, period.last_day)))
    files.append(_copy_csv(conn, directory / names["targets"],
                           "SELECT * FROM {}.top_targets(%s, %s, %s)", (*bounds, TOP_TARGETS)))
    if period.report == "monthly":
        days = _all_rows(conn, "SELECT * FROM {}.daily_statistics(%s, %s)",
                         (period.first_day, period.last_day))
        pdf_path = directory / names["report"]
        monthly_pdf(pdf_path, period, license_number, days, totals)
        files.append(_describe(pdf_path, rows=None))
    unnormalized = _all_rows(conn, "SELECT * FROM {}.unnormalized_numbers(%s, %s)", bounds)
    if unnormalized:
        log.warning("%d numbers of %s %s have no E.164 form; their fields are left empty and "
                    "listed in the summary", len(unnormalized), period.report, period.label,
                    extra={"report": period.report, "period": period.label})
    summary = {
        "reportType": period.report,
        "licenseNumber": license_number,
        "period": period.label,
        "periodStart": period.start.isoformat(),
        "periodEnd": period.end.isoformat(),
        "timeZone": "Africa/Lagos",
        "readContract": READ_CONTRACT,
        "statistics": {key: _json_number(value) for key, value in totals.items()},
        "unnormalizedNumbers": {
            "count": len(unnormalized),
            "rows": [{"alertId": row["alert_id"], "field": row["field"],
                      "value": row["raw_value"]} for row in unnormalized[:UNNORMALIZED_LISTED]],
        },
        "files": [item.as_json() for item in files],
    }
    summary_path = directory / names["summary"]
    summary_path.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n",
                            encoding="utf-8")
    files.append(_describe(summary_path, rows=None))
    return files, summary


def _query(template: str) -> sql.Composed:
    return sql.SQL(template).format(sql.Identifier(READ_CONTRACT))


def _one_row(conn: Connection, template: str, params: Sequence[Any]) -> dict[str, Any]:
    rows = _all_rows(conn, template, params)
    if len(rows) != 1:
        raise RuntimeError(f"{template}: expected one row, got {len(rows)}")
    return rows[0]


def _all_rows(conn: Connection, template: str, params: Sequence[Any]) -> list[dict[str, Any]]:
    with conn.cursor() as cursor:
        cursor.execute(_query(template), params)
        columns = [column.name for column in cursor.description or ()]
        return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


def _copy_csv(conn: Connection, path: Path, template: str, params: Sequence[Any]) -> PackageFile:
    """Stream a query's rows as CSV (PostgreSQL's own quoting, header always) to `path`."""
    statement = sql.SQL("COPY ({}) TO STDOUT WITH (FORMAT csv, HEADER true)").format(
        _query(template))
    digest, size = hashlib.sha256(), 0
    with conn.cursor() as cursor, path.open("wb") as out:
        with cursor.copy(statement, params) as copy:
            for chunk in copy:
                data = bytes(chunk)
                digest.update(data)
                size += len(data)
                out.write(data)
        rows = cursor.rowcount
    return PackageFile(path.name, digest.hexdigest(), size, rows)


def _write_rows(path: Path, rows: list[dict[str, Any]]) -> PackageFile:
    """A small CSV written the way COPY writes one: same quoting, `\\n` line ends."""
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(rows[0].keys())
        for row in rows:
            writer.writerow("" if value is None else str(value) for value in row.values())
    return _describe(path, rows=len(rows))


def _describe(path: Path, rows: int | None) -> PackageFile:
    digest = hashlib.sha256()
    with path.open("rb") as data:
        while chunk := data.read(_CHUNK):
            digest.update(chunk)
    return PackageFile(path.name, digest.hexdigest(), path.stat().st_size, rows)


def _json_number(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        # Counts come without decimals, rounded figures with them.
        return int(value) if int(value.as_tuple().exponent) >= 0 else float(value)
    return value


def _replace_directory(staging: Path, final: Path) -> None:
    """Swap the finished package in. The old one (an earlier run's) is removed only after
    the new one is complete."""
    if final.exists():
        retired = final.with_name(f".{final.name}.retired-{os.getpid()}")
        final.rename(retired)
        staging.rename(final)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        staging.rename(final)


def call_records_exist(conn: Connection, period: Period) -> bool:
    """Whether the platform recorded any call in the period (the read contract's answer)."""
    row = conn.execute(sql.SQL("SELECT {}.call_records_exist(%s, %s)").format(
        sql.Identifier(READ_CONTRACT)), (period.start, period.end)).fetchone()
    return bool(row and row[0])
