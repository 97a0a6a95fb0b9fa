"""Benchmark: the daily package end to end on a production-sized day.

Loads 10 million call records and 100,000 fraud alerts for one WAT day into a throwaway
PostgreSQL on loopback, then times `ncc-report daily --dry-run` for that day in a child
process (generation, checksums, summary) and prints wall time and the child's peak RSS.
Goal (issue #4): under 20 s and under 150 MB on the 2-core CI machine.

    .venv/bin/python benchmarks/daily_package.py [--calls N] [--alerts N]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jobs.database import SOURCE_SCHEMA_FILE, schema_sql  # noqa: E402
from tests.jobs.servers import postgres_server  # noqa: E402

DAY = "2026-11-23"
DAY_START_UTC = "2026-11-22 23:00:00+00"


def load(conn: psycopg.Connection[tuple[object, ...]], calls: int, alerts: int) -> None:
    conn.execute(schema_sql(SOURCE_SCHEMA_FILE).encode())
    # Generated in the database: loading through Python would measure the loader, not the job.
    conn.execute(
        "INSERT INTO acm.call_records SELECT n,"
        " %s::timestamptz + (n * 86400.0 / %s) * interval '1 second',"
        " '0803' || lpad((n %% 10000000)::text, 7, '0'), '0809' || lpad((n %% 997)::text, 7, '0'),"
        " (5 + (n * 7919) %% 120)::int FROM generate_series(1::bigint, %s) AS n",
        (DAY_START_UTC, calls, calls))
    conn.execute(
        "INSERT INTO acm.fraud_alerts SELECT 'AL' || n,"
        " %s::timestamptz + (n * 86400.0 / %s) * interval '1 second', n,"
        " (ARRAY['CRITICAL','HIGH','MEDIUM','LOW'])[1 + n %% 4],"
        " (ARRAY['CLI_SPOOFING','SIM_BOX','WANGIRI'])[1 + n %% 3],"
        " CASE WHEN n %% 500 = 0 THEN 'PROMO'"
        "      ELSE '0803' || lpad((n %% 10000000)::text, 7, '0') END,"
        " '0809' || lpad((n %% 997)::text, 7, '0'),"
        " (ARRAY['OPEN','CONFIRMED','FALSE_POSITIVE','CLOSED'])[1 + n %% 4]"
        " FROM generate_series(1::bigint, %s) AS n", (DAY_START_UTC, alerts, alerts))
    conn.execute(
        "INSERT INTO acm.actions SELECT n, 'AL' || n,"
        " %s::timestamptz + (n * 86400.0 / %s) * interval '1 second' + interval '1 second',"
        " (ARRAY['DISCONNECT','BLOCK_PATTERN','MONITOR'])[1 + n %% 3]"
        " FROM generate_series(1::bigint, %s) AS n", (DAY_START_UTC, alerts, alerts))
    conn.execute(
        "INSERT INTO acm.uptime_samples"
        " SELECT %s::timestamptz + n * interval '1 minute', n %% 700 <> 0"
        " FROM generate_series(0, 1439) AS n", (DAY_START_UTC,))
    conn.execute("VACUUM ANALYZE")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=10_000_000)
    parser.add_argument("--alerts", type=int, default=100_000)
    args = parser.parse_args()
    with postgres_server() as server, tempfile.TemporaryDirectory() as scratch:
        started = time.monotonic()
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            load(conn, args.calls, args.alerts)
        print(f"loaded {args.calls:,} calls and {args.alerts:,} alerts in "
              f"{time.monotonic() - started:.1f} s")
        secrets = Path(scratch) / "secrets"
        secrets.mkdir()
        (secrets / "database-password").write_text("pg-test-superuser\n")
        (secrets / "database-password").chmod(0o400)  # the job refuses a file others can read
        env = {**os.environ, "NCC_LICENSE_NUMBER": "NCC-ACM-0042", "NCC_ENVIRONMENT": "sandbox",
               "NCC_FIRST_DATA_DATE": "2026-01-01",
               "NCC_DB_HOST": server.host, "NCC_DB_PORT": str(server.port),
               "NCC_DB_NAME": "postgres", "NCC_DB_USER": "postgres",
               "NCC_DB_SSLMODE": "disable", "NCC_SECRETS_DIR": str(secrets),
               "NCC_OUT_DIR": str(Path(scratch) / "out")}
        for run in ("first (applies the read contract)", "second"):
            started = time.monotonic()
            subprocess.run([sys.executable, "-m", "jobs.cli", "daily", "--date", DAY,
                            "--dry-run"], env=env, cwd=ROOT, check=True,
                           stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
            wall = time.monotonic() - started
            peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
            print(f"daily package, {run} run: {wall:.2f} s wall, peak RSS {peak:.0f} MB "
                  f"(goal < 20 s, < 150 MB)")
        package = Path(scratch) / "out" / "daily" / DAY
        for path in sorted(package.iterdir()):
            print(f"  {path.name}: {path.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
