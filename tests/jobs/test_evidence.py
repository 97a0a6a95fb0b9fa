"""The evidence archive and the database backups against real servers: PostgreSQL, sshd, the
ATRS stand-in and the object store the local stack runs (VersityGW, TLS verified, S3 Object
Lock in compliance mode), with Debian's pg_dump, pg_restore and age."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, SSLError

from jobs import audit, cli, runs
from jobs.atrs import request_bytes
from jobs.settings import DATABASE_PASSWORD, load_settings
from tests.jobs.atrs_standin import AtrsStandin
from tests.jobs.conftest import JOB_PASSWORD, JOB_USER, LICENSE, TEMPLATE, Database
from tests.jobs.dataset import add_calls, add_critical_alert, load_awkward_day
from tests.jobs.servers import SUPERUSER_PASSWORD, ObjectStore

pytestmark = pytest.mark.slow
DAY = "2026-11-23"
AUDIT_TABLES = ("packages", "submissions", "http_tries", "incidents", "archives")


def s3(store: ObjectStore) -> Any:
    return boto3.client("s3", endpoint_url=store.endpoint, region_name="us-east-1",
                        aws_access_key_id=store.access_key,
                        aws_secret_access_key=store.secret_key, verify=str(store.ca_file),
                        config=Config(s3={"addressing_style": "path"}))


def archived(database: Database) -> list[dict[str, Any]]:
    with database.connect() as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cursor:
        return cursor.execute("SELECT * FROM ncc_audit.archives ORDER BY submission_id"
                              ).fetchall()


def test_an_accepted_package_is_archived_byte_for_byte_and_cannot_be_deleted(
        evidence_env: dict[str, str], database: Database, atrs: AtrsStandin,
        remote_dir: Path, object_store: ObjectStore,
        capsys: pytest.CaptureFixture[str]) -> None:
    with database.connect() as conn:
        load_awkward_day(conn)
    assert cli.main(["daily", "--date", DAY]) == 0
    assert "evidence: 1 archived" in capsys.readouterr().out
    [accepted] = atrs.accepted
    [row] = archived(database)
    bucket, prefix = evidence_env["NCC_EVIDENCE_BUCKET"], row["key_prefix"]
    assert prefix == f"{LICENSE}/daily/{DAY}/submission-{row['submission_id']}/"
    client = s3(object_store)
    # The files the regulator's server got, byte for byte, with the checksums it was told.
    for entry in accepted.body["files"]:
        stored = client.get_object(Bucket=bucket, Key=f"{prefix}files/{entry['name']}")
        data = stored["Body"].read()
        assert data == (remote_dir / entry["name"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
    # The request as posted, the answer as it came, the attempt's audit rows, the manifest.
    assert client.get_object(Bucket=bucket, Key=f"{prefix}request.json")["Body"].read() == \
        request_bytes(accepted.body)
    answer = client.get_object(Bucket=bucket, Key=f"{prefix}response.txt")["Body"].read()
    assert json.loads(answer)["reference"] == accepted.reference
    rows = json.loads(client.get_object(Bucket=bucket, Key=f"{prefix}audit.json")["Body"].read())
    assert rows["submission"]["outcome"] == "accepted" and rows["httpTries"]
    manifest = client.get_object(Bucket=bucket, Key=f"{prefix}manifest.json")["Body"].read()
    assert hashlib.sha256(manifest).hexdigest() == row["manifest_sha256"]
    listed = {item["key"]: item["sha256"] for item in json.loads(manifest)["objects"]}
    assert {entry["key"]: entry["sha256"] for entry in row["objects"][:-1]} == listed
    # Write-once for seven years from the acceptance: no delete, no overwrite.
    retention = client.get_object_retention(Bucket=bucket, Key=f"{prefix}manifest.json")
    assert retention["Retention"]["Mode"] == "COMPLIANCE"
    with database.connect() as conn:
        accepted_at = conn.execute("SELECT finished_at FROM ncc_audit.submissions WHERE"
                                   " outcome = 'accepted'").fetchone()[0]  # type: ignore[index]
    assert retention["Retention"]["RetainUntilDate"] == row["retain_until"]
    assert dt.timedelta(0) <= row["retain_until"] - (accepted_at + dt.timedelta(days=2557)) \
        < dt.timedelta(seconds=1)
    version = client.head_object(Bucket=bucket, Key=f"{prefix}manifest.json")["VersionId"]
    with pytest.raises(ClientError) as refused:
        client.delete_object(Bucket=bucket, Key=f"{prefix}manifest.json", VersionId=version)
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    # An overwrite is refused (412, or the connection closed before the body is read) ...
    with pytest.raises((ClientError, SSLError)):
        client.put_object(Bucket=bucket, Key=f"{prefix}manifest.json", Body=b"{}",
                          IfNoneMatch="*")
    # ... and the archived bytes are the only version there is.
    assert client.get_object(Bucket=bucket, Key=f"{prefix}manifest.json")["Body"].read() == \
        manifest
    versions = client.list_object_versions(Bucket=bucket, Prefix=f"{prefix}manifest.json")
    assert [v["VersionId"] for v in versions["Versions"]] == [version]
    # The archive row outlives any early delete, like the rest of the trail.
    with database.connect() as conn, pytest.raises(psycopg.errors.RaiseException):
        conn.execute("DELETE FROM ncc_audit.archives")


def test_an_archive_that_could_not_be_written_is_written_by_the_next_run(
        evidence_env: dict[str, str], database: Database, atrs: AtrsStandin,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    with database.connect() as conn:
        add_calls(conn, DAY)
    # The store down while the regulator accepts: the acceptance stands, exit 0.
    monkeypatch.setenv("NCC_EVIDENCE_ENDPOINT", "https://localhost:9")
    assert cli.main(["daily", "--date", DAY]) == 0
    printed = capsys.readouterr().out
    assert f"daily {DAY}: accepted" in printed
    assert "evidence: 0 archived, 1 not archived yet (the next run tries again)" in printed
    with database.connect() as conn:
        assert audit.unarchived_count(conn, LICENSE, "sandbox", dt.timedelta(0)) == 1
    # The next run (a new pod: the package files are gone) generates the package again,
    # checks it against the uploaded checksums, and archives it; nothing is sent again.
    settings = load_settings()
    for path in sorted(settings.out_dir.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    monkeypatch.setenv("NCC_EVIDENCE_ENDPOINT", evidence_env["NCC_EVIDENCE_ENDPOINT"])
    assert cli.main(["daily", "--date", DAY]) == 0
    assert "evidence: 1 archived" in capsys.readouterr().out
    assert len(atrs.accepted) == 1
    with database.connect() as conn:
        assert audit.unarchived_count(conn, LICENSE, "sandbox", dt.timedelta(0)) == 0


def test_an_accepted_incident_is_archived(evidence_env: dict[str, str], database: Database,
                                          atrs: AtrsStandin, object_store: ObjectStore) -> None:
    with database.connect() as conn:
        add_critical_alert(conn, "ALERT-EVIDENCE-1",
                           dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5))
    assert cli.main(["incidents"]) == 0
    [row] = archived(database)
    assert row["key_prefix"].startswith(f"{LICENSE}/incident/ALERT-EVIDENCE-1/")
    names = sorted(entry["key"].removeprefix(row["key_prefix"]) for entry in row["objects"])
    assert names == ["audit.json", "manifest.json", "request.json", "response.txt"]


def test_production_refuses_a_bucket_that_does_not_lock(
        evidence_env: dict[str, str], database: Database, atrs: AtrsStandin,
        object_store: ObjectStore, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    with database.connect() as conn:
        add_calls(conn, DAY)
    s3(object_store).create_bucket(Bucket="evidence-without-lock")
    monkeypatch.setenv("NCC_EVIDENCE_BUCKET", "evidence-without-lock")
    monkeypatch.setenv("NCC_EVIDENCE_CREATE_BUCKET", "false")
    monkeypatch.setenv("NCC_ENVIRONMENT", "production")
    assert cli.main(["daily", "--date", DAY]) == 2
    printed = capsys.readouterr().err
    assert ("the evidence bucket evidence-without-lock has no S3 Object Lock, so what is "
            "archived there could be deleted or overwritten: the job does not run in production "
            "against it") in printed
    assert "Traceback" not in printed
    assert atrs.log == []  # refused before anything went to the regulator


def snapshot(database: Database) -> dict[str, list[str]]:
    with database.connect() as conn:
        return {table: [str(row[0]) for row in conn.execute(
                    f"SELECT t::text FROM ncc_audit.{table} AS t ORDER BY 1").fetchall()]
                for table in AUDIT_TABLES}


def test_a_backup_restores_the_audit_trail_row_for_row_and_the_package_byte_for_byte(
        evidence_env: dict[str, str], database: Database, atrs: AtrsStandin,
        object_store: ObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    identity = tmp_path / "backup-identity.txt"
    subprocess.run(["age-keygen", "-o", str(identity)], check=True, capture_output=True)
    recipient = subprocess.run(["age-keygen", "-y", str(identity)], check=True,
                               capture_output=True, text=True).stdout.strip()
    monkeypatch.setenv("NCC_BACKUP_RECIPIENT", recipient)
    with database.connect() as conn:
        load_awkward_day(conn)
    assert cli.main(["daily", "--date", DAY]) == 0
    # A report run in flight while the backup is taken (a CronJob at the same moment).
    with database.connect() as conn:
        in_flight = runs.start(conn, "incidents", license_number=load_settings().license_number,
                               environment="sandbox", dry_run=False, named_period=None)
    before = snapshot(database)
    capsys.readouterr()
    assert cli.main(["backup"]) == 0
    key = capsys.readouterr().out.split()[1].rstrip(":")
    bucket = evidence_env["NCC_EVIDENCE_BUCKET"]
    sealed = s3(object_store).get_object(Bucket=bucket, Key=key)["Body"].read()
    assert sealed.startswith(b"age-encryption.org/v1") and b"ncc_audit" not in sealed

    # The database lost: a new one, as a new cluster's would be (the engine's tables, empty).
    with psycopg.connect(database.server.dsn(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {database.name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {database.name} TEMPLATE {TEMPLATE} OWNER {JOB_USER}")
    # A restore replaces every schema, the engine's too: it runs as the database's owner (in
    # the platform the `acm` account the job uses; here the test server's superuser).
    monkeypatch.setenv("NCC_DB_USER", "postgres")
    password = Path(evidence_env["NCC_SECRETS_DIR"]) / DATABASE_PASSWORD
    password.chmod(0o600)
    password.write_text(SUPERUSER_PASSWORD + "\n")
    password.chmod(0o400)
    assert cli.main(["restore", "--backup", key, "--identity-file", str(identity)]) == 0
    assert snapshot(database) == before
    # The backup's own run, caught running by its dump, is closed by the restore, and so is
    # the report run it caught in flight, as interrupted.
    with database.connect() as conn:
        assert conn.execute("SELECT count(*) FROM ncc_audit.runs WHERE finished_at IS NULL"
                            ).fetchone() == (0,)
        assert conn.execute("SELECT exit_status FROM ncc_audit.runs WHERE run_id = %s",
                            (in_flight,)).fetchone() == (1,)
    # The day generated again from the restored database, as the job: the very bytes archived.
    monkeypatch.setenv("NCC_DB_USER", JOB_USER)
    password.chmod(0o600)
    password.write_text(JOB_PASSWORD + "\n")
    password.chmod(0o400)
    out = tmp_path / "regenerated"
    assert cli.main(["daily", "--date", DAY, "--dry-run", "--out", str(out)]) == 0
    [row] = archived(database)
    for entry in row["objects"]:
        if "/files/" in entry["key"]:
            name = entry["key"].rsplit("/", 1)[1]
            assert hashlib.sha256((out / "daily" / DAY / name).read_bytes()).hexdigest() == \
                entry["sha256"]
    # And the day is not sent again.
    assert cli.main(["daily", "--date", DAY]) == 0
    assert f"daily {DAY}: already-accepted" in capsys.readouterr().out
    assert len(atrs.accepted) == 1


def test_a_restore_without_the_identity_says_so(evidence_env: dict[str, str],
                                                database: Database, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["restore", "--backup", "backups/x.dump.age", "--identity-file",
                     str(tmp_path / "missing")]) == 2
    assert "--identity-file" in capsys.readouterr().err


def test_a_backup_recipient_that_is_not_one_is_refused_by_name(
        evidence_env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("NCC_BACKUP_RECIPIENT", "ssh-ed25519 AAAA-not-an-age-recipient")
    assert cli.main(["backup"]) == 2
    printed = capsys.readouterr().err
    assert "NCC_BACKUP_RECIPIENT" in printed and "is not an age recipient" in printed


def test_the_first_backup_makes_the_projects_own_bucket(
        evidence_env: dict[str, str], database: Database, object_store: ObjectStore,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh local stack backs up before any submission was archived: the bucket the archive
    would have made does not exist yet, and the backup makes it (with Object Lock)."""
    identity = tmp_path / "backup-identity.txt"
    subprocess.run(["age-keygen", "-o", str(identity)], check=True, capture_output=True)
    monkeypatch.setenv("NCC_BACKUP_RECIPIENT", subprocess.run(
        ["age-keygen", "-y", str(identity)], check=True, capture_output=True,
        text=True).stdout.strip())
    bucket = evidence_env["NCC_EVIDENCE_BUCKET"]
    assert bucket not in {b["Name"] for b in s3(object_store).list_buckets()["Buckets"]}
    assert cli.main(["backup"]) == 0
    lock = s3(object_store).get_object_lock_configuration(Bucket=bucket)
    assert lock["ObjectLockConfiguration"]["ObjectLockEnabled"] == "Enabled"
