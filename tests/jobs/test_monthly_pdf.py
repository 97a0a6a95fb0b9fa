"""The monthly PDF as a person reads it, checked through poppler (pdfinfo, pdftotext, pdftoppm):
two full pages, nothing drawn past the margins, and every one of the 12 statistics with its
value formatted for people (thousands separators, units, words for what was not measured)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest

from jobs.database import apply_schema
from jobs.generate import build_package
from jobs.periods import parse_period
from jobs.reports_pdf import STATISTICS
from tests.jobs.conftest import JOB_PASSWORD, JOB_USER, LICENSE, Database
from tests.jobs.dataset import load_awkward_day
from tests.jobs.test_reports import load_midnight_week

pytestmark = pytest.mark.slow
DPI = 50
MARGIN_PIXELS = round(1.5 / 2.54 * DPI)  # inside the 2 cm margins, with room for antialiasing


@pytest.fixture
def monthly(database: Database, tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    with database.connect() as conn:
        load_awkward_day(conn)
        load_midnight_week(conn)
        # A busy day, so that counts need thousands separators.
        conn.execute("INSERT INTO acm.call_records SELECT 100000 + n,"
                     " '2026-11-10T09:00:00Z'::timestamptz + n * interval '1 second',"
                     " '0803', '0803', 20 + n % 50 FROM generate_series(1, 12345) AS n")
    with psycopg.connect(database.server.dsn(database.name, JOB_USER, JOB_PASSWORD),
                         autocommit=True) as conn:
        apply_schema(conn)
        package = build_package(conn, parse_period("monthly", "2026-11"), LICENSE, tmp_path)
    pdf = next(package.path(f) for f in package.files if f.name.endswith(".pdf"))
    summary = json.loads(package.path(package.files[-1]).read_text())
    return pdf, summary["statistics"]


def poppler(*command: str) -> str:
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


def test_two_pages_and_every_statistic_formatted(monthly: tuple[Path, dict[str, Any]]) -> None:
    pdf, totals = monthly
    assert "Pages:           2" in poppler("pdfinfo", str(pdf))
    text = poppler("pdftotext", "-layout", str(pdf), "-")
    lines = text.splitlines()
    assert totals["total_calls"] > 12345
    for key, label, show in STATISTICS:
        expected = show(totals[key])
        assert any(label in line and line.rstrip().endswith(expected) for line in lines), \
            (label, expected)
    assert f"{totals['total_calls']:,}" in text  # e.g. 12,381: a separator, not 12381
    assert "not measured" in text  # uptime of days without samples, said in words
    # Charts say what they show and in which unit; a day without calls is a gap, not 0 ms.
    for title in ("Fraud alerts per day", "Day of November 2026", "Latency, ms (log scale)",
                  "a gap: no calls that day", "Critical", "Medium", "P99 (solid)"):
        assert title in text, title
    assert re.search(r"(?<![\d.,])0\.00 ms", text) is None


def pgm_pages(pdf: Path, directory: Path) -> list[tuple[int, int, bytes]]:
    poppler("pdftoppm", "-r", str(DPI), "-gray", str(pdf), str(directory / "page"))
    pages = []
    for path in sorted(directory.glob("page-*.pgm")):
        data = path.read_bytes()
        # Binary PGM: "P5\n<width> <height>\n<max>\n" then one byte per pixel.
        magic, size, maximum, pixels = data.split(b"\n", 3)
        assert magic == b"P5" and maximum == b"255"
        width, height = (int(part) for part in size.split())
        pages.append((width, height, pixels[:width * height]))
    return pages


def test_nothing_is_drawn_past_the_margins(monthly: tuple[Path, dict[str, Any]],
                                           tmp_path: Path) -> None:
    pdf, _ = monthly
    pages = pgm_pages(pdf, tmp_path)
    assert len(pages) == 2
    for number, (width, height, pixels) in enumerate(pages, start=1):
        def dark(x: int, y: int, pixels: bytes = pixels, width: int = width) -> bool:
            return pixels[y * width + x] < 200

        edge = MARGIN_PIXELS
        outside = [(x, y) for y in range(height) for x in range(width)
                   if (x < edge or x >= width - edge or y < edge or y >= height - edge)
                   and dark(x, y)]
        assert outside == [], f"page {number}: {len(outside)} dark pixels past the margin"
        # And neither page is near-empty: ink in the lower half of each.
        lower = sum(dark(x, y) for y in range(height // 2, height - edge)
                    for x in range(edge, width - edge))
        assert lower > 500, f"page {number}: its lower half is empty"
