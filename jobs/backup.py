"""Database backups to the evidence store, and the restore that brings one back.

`ncc-report backup` (the ncc-database-backup CronJob, Lagos time, Forbid) takes a logical
backup of the report database with `pg_dump` (custom format, compressed), encrypts it with
`age` to the stack's recipient (`compliance.backup.recipient`: the identity that decrypts it
never enters the cluster), uploads it to `backups/LICENCE/DATABASE/YYYYMMDDTHHMMSSZ.dump.age`
locked until it may be pruned, and prunes backups older than `keepDays`. Each backup is a run
in `ncc_audit.runs` (command `backup`), so a backup that failed or never started pages
(NccReportRunFailed, NccReportRunNotStarted) and one grown older than its schedule pages too
(NccDatabaseBackupStale).

`ncc-report restore --backup KEY --identity-file FILE` downloads that backup, decrypts it and
restores it over the database the job connects to (`pg_restore --clean --if-exists`), then
closes the backup's own run, which the dump caught while it was running.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from jobs import clock
from jobs.archive import ArchiveError, EvidenceArchive, store_client
from jobs.settings import (
    DATABASE_PASSWORD,
    ENV_PREFIX,
    ConfigError,
    JobSettings,
    read_secret,
)

log = logging.getLogger(__name__)
RUN_METADATA = "acm-backup-run-id"


@dataclass(frozen=True)
class BackupResult:
    key: str
    bytes: int
    pruned: int
    seconds: float


def _database_environment(settings: JobSettings) -> dict[str, str]:
    return {**os.environ, "PGHOST": settings.db_host, "PGPORT": str(settings.db_port),
            "PGDATABASE": settings.db_name, "PGUSER": settings.db_user,
            "PGPASSWORD": read_secret(settings, DATABASE_PASSWORD),
            "PGSSLMODE": settings.db_sslmode,
            "PGCONNECT_TIMEOUT": str(settings.db_connect_timeout_seconds)}


def _run(command: list[str], environment: dict[str, str] | None = None) -> None:
    """A tool of the backup (pg_dump, age, pg_restore); its complaint, not a traceback."""
    try:
        finished = subprocess.run(command, env=environment, capture_output=True, text=True,
                                  check=False)
    except FileNotFoundError:
        raise ArchiveError(f"{command[0]} is not installed in this image") from None
    if finished.returncode != 0:
        complaint = (finished.stderr or finished.stdout).strip().splitlines()
        raise ArchiveError(f"{command[0]} failed (exit {finished.returncode}): "
                           f"{complaint[-1] if complaint else 'no message'}")


def _store(settings: JobSettings) -> tuple[Any, str]:
    if settings.evidence_bucket is None:
        raise ConfigError(f"{ENV_PREFIX}EVIDENCE_BUCKET: where the backups go is not set")
    return store_client(settings), settings.evidence_bucket


def backup_prefix(settings: JobSettings) -> str:
    return f"backups/{settings.license_number}/{settings.db_name}/"


def take_backup(settings: JobSettings, run_id: int | None) -> BackupResult:
    if settings.backup_recipient is None:
        raise ConfigError(f"{ENV_PREFIX}BACKUP_RECIPIENT: the age recipient the backups are "
                          "encrypted to is not set")
    client, bucket = _store(settings)
    if settings.evidence_create_bucket:
        # The project's own store (local): the first backup may come before the first
        # archived submission made the bucket.
        EvidenceArchive(client, bucket, dt.timedelta(days=settings.evidence_retention_days),
                        production=settings.environment == "production", create=True).prepare()
    started = clock.now()
    key = f"{backup_prefix(settings)}{started:%Y%m%dT%H%M%SZ}.dump.age"
    settings.out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ncc-backup-", dir=settings.out_dir) as scratch:
        dump, sealed = Path(scratch) / "database.dump", Path(scratch) / "database.dump.age"
        _run(["pg_dump", "--format=custom", "--compress=6", "--file", str(dump)],
             _database_environment(settings))
        _run(["age", "--encrypt", "--recipient", settings.backup_recipient, "--output",
              str(sealed), str(dump)])
        size = sealed.stat().st_size
        # Locked as long as it is kept: nobody prunes it early, the backup job then may.
        retain_until = started + dt.timedelta(days=settings.backup_keep_days)
        client.upload_file(str(sealed), bucket, key, ExtraArgs={
            "ChecksumAlgorithm": "SHA256", "ObjectLockMode": "COMPLIANCE",
            "ObjectLockRetainUntilDate": retain_until,
            "Metadata": {RUN_METADATA: str(run_id or "")}})
    pruned = prune(client, bucket, backup_prefix(settings),
                   started - dt.timedelta(days=settings.backup_keep_days))
    seconds = (clock.now() - started).total_seconds()
    log.info("backup %s: %d bytes, %d old backups pruned, %.1f s", key, size, pruned, seconds,
             extra={"backup_key": key, "backup_bytes": size})
    return BackupResult(key, size, pruned, seconds)


def prune(client: Any, bucket: str, prefix: str, before: dt.datetime) -> int:
    """Delete every version of the backups made before `before` (their lock has expired)."""
    pruned = 0
    pages = client.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix)
    for page in pages:
        for version in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
            if version["LastModified"] < before:
                client.delete_object(Bucket=bucket, Key=version["Key"],
                                     VersionId=version["VersionId"])
                pruned += 1
    return pruned


def list_backups(settings: JobSettings) -> list[str]:
    client, bucket = _store(settings)
    keys = []
    for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=backup_prefix(settings)):
        keys += [item["Key"] for item in page.get("Contents", [])]
    return sorted(keys)


def restore_backup(settings: JobSettings, key: str, identity_file: Path) -> dict[str, Any]:
    """Restore the backup `key` over the database the job connects to."""
    client, bucket = _store(settings)
    if not identity_file.is_file():
        raise ConfigError(f"--identity-file {identity_file}: no such file (the age identity "
                          "that decrypts the backups, kept outside the cluster)")
    settings.out_dir.mkdir(parents=True, exist_ok=True)
    started = clock.now()
    try:
        head = client.head_object(Bucket=bucket, Key=key)
    except ClientError as error:
        raise ArchiveError(f"backup {key} cannot be read from the store "
                           f"({error.response.get('Error', {}).get('Code', error)})") from None
    with tempfile.TemporaryDirectory(prefix="ncc-restore-", dir=settings.out_dir) as scratch:
        sealed, dump = Path(scratch) / "database.dump.age", Path(scratch) / "database.dump"
        client.download_file(bucket, key, str(sealed))
        _run(["age", "--decrypt", "--identity", str(identity_file), "--output", str(dump),
              str(sealed)])
        _run(["pg_restore", "--clean", "--if-exists", "--exit-on-error",
              "--single-transaction", "--dbname", settings.db_name, str(dump)],
             _database_environment(settings))
    result = {"restored": key, "bytes": head.get("ContentLength"),
              "seconds": round((clock.now() - started).total_seconds(), 1)}
    log.info("restored %s in %.1f s", key, result["seconds"], extra={"backup_key": key})
    return result


def close_restored_run(conn: Any, settings: JobSettings, key: str) -> None:
    """The dump caught its own run while it was running: that run ended with this backup; any
    other run it caught is closed as interrupted."""
    client, bucket = _store(settings)
    run_id = (client.head_object(Bucket=bucket, Key=key).get("Metadata") or {}).get(
        RUN_METADATA)
    if run_id:
        conn.execute(
            "UPDATE ncc_audit.runs SET finished_at = now(), exit_status = 0, detail = %s"
            " WHERE run_id = %s AND finished_at IS NULL",
            (f"the backup {key}, closed by its restore", int(run_id)))
    # Any other run the dump caught in flight (a report CronJob at the same moment) went on in
    # the lost database: its end is not in this one. Closed as interrupted, so that nothing
    # restored reads as still running and the next run of its report catches up.
    conn.execute(
        "UPDATE ncc_audit.runs SET finished_at = now(), exit_status = 1, detail = %s"
        " WHERE finished_at IS NULL",
        (f"caught running by the backup {key}: its outcome is not in the restored database",))
