"""Fixtures of the compliance job tests: real PostgreSQL, real sshd (SFTP), the ATRS stand-in,
and the job's environment (NCC_* variables and a secrets directory, as the CronJob mounts them).
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import trustme

from jobs import clock
from jobs.database import SOURCE_SCHEMA_FILE, schema_sql
from jobs.settings import (
    ATRS_CLIENT_ID,
    ATRS_CLIENT_SECRET,
    DATABASE_PASSWORD,
    EVIDENCE_ACCESS_KEY_ID,
    EVIDENCE_SECRET_ACCESS_KEY,
    SFTP_KNOWN_HOSTS,
    SFTP_PRIVATE_KEY,
)
from tests.jobs.atrs_standin import AtrsStandin
from tests.jobs.servers import (
    ObjectStore,
    Postgres,
    SftpServer,
    object_store_server,
    postgres_server,
    sftp_server,
)

LICENSE = "NCC-ACM-0042"
JOB_USER, JOB_PASSWORD = "ncc_compliance", "job-db-password"
TEMPLATE = "acm_template"
# Before every day the tests load, after the days an operator mistypes (2019, 1970).
FIRST_DATA_DATE = "2020-01-01"
_numbers = itertools.count()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    with postgres_server() as server:
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE ROLE {JOB_USER} LOGIN PASSWORD '{JOB_PASSWORD}'")
            conn.execute(f"CREATE DATABASE {TEMPLATE} OWNER {JOB_USER}")
        with psycopg.connect(server.dsn(TEMPLATE), autocommit=True) as conn:
            conn.execute(schema_sql(SOURCE_SCHEMA_FILE).encode())
            # The job reads the engine's tables; it owns only its own schemas.
            conn.execute(f"GRANT USAGE ON SCHEMA acm TO {JOB_USER}")
            conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA acm TO {JOB_USER}")
        yield server


@dataclass(frozen=True)
class Database:
    server: Postgres
    name: str

    def connect(self) -> psycopg.Connection[tuple[object, ...]]:
        """As the superuser: what the ACM engine (and a test) writes."""
        return psycopg.connect(self.server.dsn(self.name), autocommit=True)


@pytest.fixture
def database(postgres: Postgres) -> Iterator[Database]:
    name = f"acm_test_{os.getpid()}_{next(_numbers)}"
    with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE} OWNER {JOB_USER}")
    yield Database(postgres, name)
    with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture(scope="session")
def sftp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SftpServer]:
    with sftp_server(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@pytest.fixture
def remote_dir(sftp: SftpServer) -> Iterator[Path]:
    for entry in sftp.root.iterdir():
        entry.unlink()
    yield sftp.root


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def atrs(ca: trustme.CA, tmp_path: Path, remote_dir: Path) -> Iterator[AtrsStandin]:
    with AtrsStandin(ca, tmp_path, license_number=LICENSE, sftp_root=remote_dir) as standin:
        yield standin


@pytest.fixture
def secrets_dir(tmp_path: Path, sftp: SftpServer, atrs: AtrsStandin) -> Path:
    directory = tmp_path / "secrets"
    directory.mkdir()
    for name, value in ((DATABASE_PASSWORD, JOB_PASSWORD), (ATRS_CLIENT_ID, atrs.client_id),
                        (ATRS_CLIENT_SECRET, atrs.client_secret),
                        (SFTP_PRIVATE_KEY, sftp.client_key),
                        (SFTP_KNOWN_HOSTS, sftp.known_hosts)):
        path = directory / name
        path.write_text(value if value.endswith("\n") else value + "\n")
        path.chmod(0o400)
    return directory


@pytest.fixture
def job_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, database: Database,
            sftp: SftpServer, atrs: AtrsStandin, secrets_dir: Path) -> dict[str, str]:
    """The CronJob's environment, pointed at the real servers of this test."""
    for key in list(os.environ):
        if key.startswith("NCC_"):
            monkeypatch.delenv(key)
    values = {
        "NCC_LICENSE_NUMBER": LICENSE, "NCC_ENVIRONMENT": "sandbox",
        "NCC_FIRST_DATA_DATE": FIRST_DATA_DATE,
        "NCC_DB_HOST": database.server.host, "NCC_DB_PORT": str(database.server.port),
        "NCC_DB_NAME": database.name, "NCC_DB_USER": JOB_USER, "NCC_DB_SSLMODE": "disable",
        "NCC_SFTP_HOST": sftp.host, "NCC_SFTP_PORT": str(sftp.port), "NCC_SFTP_USER": sftp.user,
        "NCC_SFTP_DIRECTORY": str(sftp.root), "NCC_ATRS_BASE_URL": atrs.base_url,
        "NCC_ATRS_CA_FILE": str(atrs.ca_file), "NCC_ATRS_TIMEOUT_SECONDS": "2",
        "NCC_ATRS_ATTEMPTS": "4", "NCC_ATRS_BACKOFF_SECONDS": "0.05",
        "NCC_ATRS_BACKOFF_MAX_SECONDS": "2", "NCC_SECRETS_DIR": str(secrets_dir),
        "NCC_OUT_DIR": str(tmp_path / "out"),
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return values


@pytest.fixture(autouse=True)
def database_clock_reset(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with the job's clock unmeasured, as a new process does."""
    monkeypatch.setattr(clock, "_offset", dt.timedelta(0), raising=False)


@pytest.fixture(scope="session")
def object_store(tmp_path_factory: pytest.TempPathFactory, ca: trustme.CA) -> Iterator[ObjectStore]:
    """The real object store (VersityGW) on loopback, its TLS certificate from the test CA."""
    directory = tmp_path_factory.mktemp("object-store")
    issued = ca.issue_cert("localhost")
    issued.private_key_pem.write_to_path(directory / "tls.key")
    issued.cert_chain_pems[0].write_to_path(directory / "tls.crt")
    ca.cert_pem.write_to_path(directory / "ca.pem")
    with object_store_server(directory / "store", directory / "tls.crt", directory / "tls.key",
                             directory / "ca.pem") as store:
        yield store


@pytest.fixture
def evidence_env(job_env: dict[str, str], object_store: ObjectStore, secrets_dir: Path,
                 monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The job's environment with the evidence store: a bucket of this test's own, which the
    job makes with Object Lock (as the local stack lets it)."""
    for name, value in ((EVIDENCE_ACCESS_KEY_ID, object_store.access_key),
                        (EVIDENCE_SECRET_ACCESS_KEY, object_store.secret_key)):
        path = secrets_dir / name
        path.write_text(value + "\n")
        path.chmod(0o400)
    values = {"NCC_EVIDENCE_ENDPOINT": object_store.endpoint,
              "NCC_EVIDENCE_BUCKET": f"evidence-{os.getpid()}-{next(_numbers)}",
              "NCC_EVIDENCE_CA_FILE": str(object_store.ca_file),
              "NCC_EVIDENCE_CREATE_BUCKET": "true"}
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return {**job_env, **values}
