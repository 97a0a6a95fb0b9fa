"""Benchmark: the database backup and its restore on the benchmark day of daily_package.py.

Loads the same production-sized day (10 million call records, 100,000 fraud alerts) into a
throwaway PostgreSQL on loopback, then, in one run:

- what an operator would otherwise do: `pg_dump -Fc` to a local file and `pg_restore` of it
  into an empty database (no encryption, no upload, no retention);
- ours: `ncc-report backup` (pg_dump -Fc, age encryption, upload under Object Lock to the real
  object store, VersityGW on loopback with TLS) and `ncc-report restore` into an empty
  database (download, decrypt, pg_restore in one transaction, close the backup's run);

and prints each step's wall time, the backup's size, and whether the restored call records
match the source row for row (count and an order-independent checksum).

    .venv/bin/python benchmarks/database_backup.py [--calls N] [--alerts N]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import trustme

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from daily_package import load  # noqa: E402

from jobs.settings import EVIDENCE_ACCESS_KEY_ID, EVIDENCE_SECRET_ACCESS_KEY  # noqa: E402
from tests.jobs.servers import (  # noqa: E402
    Postgres,
    _as_postgres,
    _pg_bin,
    object_store_server,
    postgres_server,
)

CALLS_FINGERPRINT = ("SELECT count(*), sum(hashtext(call_id::text || a_number || b_number"
                     " || started_at::text)) FROM acm.call_records")


def fingerprint(server: Postgres, database: str) -> tuple[object, ...]:
    with psycopg.connect(server.dsn(database), autocommit=True) as conn:
        row = conn.execute(CALLS_FINGERPRINT).fetchone()
    assert row is not None
    return tuple(row)


def create_database(server: Postgres, name: str) -> None:
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")


def timed(command: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    started = time.monotonic()
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True,
                          check=False)
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[:3])} failed ({done.returncode}):\n"
                         f"{done.stdout}{done.stderr}")
    return wall, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=10_000_000)
    parser.add_argument("--alerts", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch_name, postgres_server() as server:
        scratch = Path(scratch_name)
        os.chmod(scratch, 0o755)  # the postgres user reaches its folder below
        ca = trustme.CA()
        issued = ca.issue_cert("localhost")
        issued.private_key_pem.write_to_path(scratch / "tls.key")
        issued.cert_chain_pems[0].write_to_path(scratch / "tls.crt")
        ca.cert_pem.write_to_path(scratch / "ca.pem")
        started = time.monotonic()
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            load(conn, args.calls, args.alerts)
            size = conn.execute("SELECT pg_database_size('postgres')").fetchone()
        assert size is not None
        source = fingerprint(server, "postgres")
        print(f"loaded {args.calls:,} calls and {args.alerts:,} alerts in "
              f"{time.monotonic() - started:.1f} s; database {size[0] / 2**20:,.0f} MiB")

        # What an operator would otherwise run by hand.
        superuser = {**os.environ, "PGPASSWORD": "pg-test-superuser"}
        # pg_dump runs as the postgres user: a folder of its own to write in.
        dumps = scratch / "dumps"
        dumps.mkdir()
        shutil.chown(dumps, "postgres")
        dump = dumps / "plain.dump"
        dump_wall, _ = timed(_as_postgres([_pg_bin("pg_dump"), "-Fc", "-h", server.host,
                                           "-p", str(server.port), "-U", "postgres",
                                           "-f", str(dump), "postgres"]), superuser)
        create_database(server, "plain_restore")
        restore_wall, _ = timed(_as_postgres([_pg_bin("pg_restore"), "-h", server.host,
                                              "-p", str(server.port), "-U", "postgres",
                                              "-d", "plain_restore", str(dump)]), superuser)
        plain_same = fingerprint(server, "plain_restore") == source
        print(f"pg_dump -Fc to a file:      {dump_wall:6.1f} s, "
              f"{dump.stat().st_size / 2**20:7.1f} MiB; pg_restore {restore_wall:6.1f} s; "
              f"rows identical: {plain_same}")

        secrets = scratch / "secrets"
        secrets.mkdir()
        identity = scratch / "backup-identity.txt"
        subprocess.run(["age-keygen", "-o", str(identity)], check=True, capture_output=True)
        recipient = subprocess.run(["age-keygen", "-y", str(identity)], check=True,
                                   capture_output=True, text=True).stdout.strip()
        with object_store_server(scratch / "store", scratch / "tls.crt", scratch / "tls.key",
                                 scratch / "ca.pem") as store:
            for name, value in (("database-password", "pg-test-superuser"),
                                (EVIDENCE_ACCESS_KEY_ID, store.access_key),
                                (EVIDENCE_SECRET_ACCESS_KEY, store.secret_key)):
                (secrets / name).write_text(value + "\n")
                (secrets / name).chmod(0o400)
            env = {**os.environ, "NCC_LICENSE_NUMBER": "NCC-ACM-0042",
                   "NCC_ENVIRONMENT": "sandbox", "NCC_FIRST_DATA_DATE": "2026-01-01",
                   "NCC_DB_HOST": server.host, "NCC_DB_PORT": str(server.port),
                   "NCC_DB_NAME": "postgres", "NCC_DB_USER": "postgres",
                   "NCC_DB_SSLMODE": "disable", "NCC_SECRETS_DIR": str(secrets),
                   "NCC_OUT_DIR": str(scratch / "out"), "NCC_DRY_RUN": "true",
                   "NCC_EVIDENCE_ENDPOINT": store.endpoint, "NCC_EVIDENCE_BUCKET": "evidence",
                   "NCC_EVIDENCE_CA_FILE": str(store.ca_file),
                   "NCC_EVIDENCE_CREATE_BUCKET": "true", "NCC_BACKUP_RECIPIENT": recipient}
            backup_wall, printed = timed([sys.executable, "-m", "jobs.cli", "backup"], env)
            found = re.search(r"backup (\S+): (\d+) bytes", printed)
            if found is None:
                raise SystemExit(f"ncc-report backup printed no key: {printed}")
            key, stored = found.group(1), int(found.group(2))
            create_database(server, "restored")
            ours_wall, _ = timed([sys.executable, "-m", "jobs.cli", "restore", "--backup", key,
                                  "--identity-file", str(identity)],
                                 {**env, "NCC_DB_NAME": "restored"})
        ours_same = fingerprint(server, "restored") == source
        print(f"ncc-report backup (age, S3): {backup_wall:6.1f} s, {stored / 2**20:7.1f} MiB; "
              f"restore    {ours_wall:6.1f} s; rows identical: {ours_same}")
        print(f"cost of encryption, upload and locking: backup "
              f"{backup_wall / dump_wall:.2f}x, restore {ours_wall / restore_wall:.2f}x "
              "the plain pg_dump/pg_restore")
        if not (plain_same and ours_same):
            raise SystemExit("a restored database differs from its source")


if __name__ == "__main__":
    main()
