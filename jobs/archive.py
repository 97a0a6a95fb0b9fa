"""The evidence archive: what the regulator accepted, written once to object storage.

For every accepted submission (a report's package, an incident) the job writes, under
`LICENCE/REPORT/PERIOD/submission-ID/` in the evidence bucket (S3 API, boto3):

    files/NAME      each package file exactly as uploaded (reports)
    request.json    the request body exactly as posted (atrs.request_bytes)
    response.txt    the regulator's answer as it came
    audit.json      the attempt's audit rows: its package, its submission, its HTTP tries
    manifest.json   the SHA-256 and size of each object above, written last

each with its SHA-256 checked by the store and locked (S3 Object Lock, compliance mode) until
the retention period after the acceptance: nobody, the store's administrator included, can
delete or overwrite it before then. The prefix and every checksum go into
`ncc_audit.archives`. The database can be lost; the evidence of what was sent cannot.

An archive write that fails does not undo an accepted submission: the next run archives every
accepted submission that has no archive row yet (regenerating a package whose files this pod
does not hold, and refusing if it would not be byte-identical), and the exporter's
`ncc_evidence_unarchived` pages meanwhile.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from jobs import audit
from jobs.atrs import request_bytes
from jobs.generate import build_package
from jobs.periods import parse_period
from jobs.settings import (
    ENV_PREFIX,
    EVIDENCE_ACCESS_KEY_ID,
    EVIDENCE_SECRET_ACCESS_KEY,
    ConfigError,
    JobSettings,
    read_secret,
)

log = logging.getLogger(__name__)
Connection = Any


class ArchiveError(Exception):
    """The evidence could not be written, or would not be what was sent."""


def store_client(settings: JobSettings) -> Any:
    """A boto3 S3 client for the evidence store: its keys from the secret files, TLS verified
    (against NCC_EVIDENCE_CA_FILE where given), path-style addressing (on-premises stores),
    bounded retries."""
    if settings.evidence_endpoint is None:
        raise ConfigError(f"{ENV_PREFIX}EVIDENCE_ENDPOINT: the evidence store is not set")
    return boto3.client(
        "s3", endpoint_url=settings.evidence_endpoint, region_name=settings.evidence_region,
        aws_access_key_id=read_secret(settings, EVIDENCE_ACCESS_KEY_ID),
        aws_secret_access_key=read_secret(settings, EVIDENCE_SECRET_ACCESS_KEY),
        verify=str(settings.evidence_ca_file) if settings.evidence_ca_file else True,
        config=Config(s3={"addressing_style": "path"}, connect_timeout=10, read_timeout=60,
                      retries={"max_attempts": 5, "mode": "standard"}))


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


@dataclass
class EvidenceArchive:
    client: Any
    bucket: str
    retention: dt.timedelta
    production: bool = False
    create: bool = False
    locked: bool = False
    # The bucket was checked (exists, locks in production); a store that cannot be reached
    # when a run starts is checked again when the run archives.
    ready: bool = False

    @classmethod
    def from_settings(cls, settings: JobSettings) -> EvidenceArchive | None:
        """The archive of a stack that has an evidence store, checked: the bucket exists (made
        with Object Lock where the store is the project's own, NCC_EVIDENCE_CREATE_BUCKET) and,
        in production, locks what is written. None where no store is set."""
        if settings.evidence_endpoint is None:
            if settings.environment == "production":
                raise ConfigError(f"{ENV_PREFIX}EVIDENCE_ENDPOINT and {ENV_PREFIX}"
                                  "EVIDENCE_BUCKET: required to submit in production, where "
                                  "every accepted submission is archived for seven years")
            return None
        if settings.evidence_bucket is None:
            raise ConfigError(f"{ENV_PREFIX}EVIDENCE_BUCKET: required with "
                              f"{ENV_PREFIX}EVIDENCE_ENDPOINT")
        archive = cls(store_client(settings), settings.evidence_bucket,
                      dt.timedelta(days=settings.evidence_retention_days),
                      production=settings.environment == "production",
                      create=settings.evidence_create_bucket)
        try:
            archive.prepare()
        except ArchiveError as error:
            # The regulator's deadline comes first: the run submits, and what it accepts is
            # archived by a later run (the exporter pages while it is not).
            log.error("the evidence store cannot be checked now (%s); the run goes on and "
                      "archives later", error)
        return archive

    def prepare(self) -> None:
        """The bucket exists (made with Object Lock where the store is the project's own) and,
        in production, locks what is written; ConfigError for a production bucket that does
        not lock, ArchiveError for a store that cannot be read."""
        production, create = self.production, self.create
        try:
            answer = self.client.get_object_lock_configuration(Bucket=self.bucket)
            self.locked = answer["ObjectLockConfiguration"].get("ObjectLockEnabled") == "Enabled"
        except ClientError as error:
            code = _code(error)
            if code == "NoSuchBucket" and create:
                self.client.create_bucket(Bucket=self.bucket, ObjectLockEnabledForBucket=True)
                self.locked = True
                log.info("created the evidence bucket %s with Object Lock", self.bucket)
            elif code in ("ObjectLockConfigurationNotFoundError",
                          "ObjectLockConfigurationNotFound"):
                self.locked = False
            else:
                raise ArchiveError(f"the evidence bucket {self.bucket} cannot be read "
                                   f"({code or error})") from None
        except BotoCoreError as error:
            raise ArchiveError(f"the evidence store cannot be reached ({error})") from None
        if not self.locked and production:
            raise ConfigError(f"the evidence bucket {self.bucket} has no S3 Object Lock, so "
                              "what is archived there could be deleted or overwritten: the job "
                              "does not run in production against it (make the bucket with "
                              "Object Lock enabled)")
        if not self.locked:
            log.warning("the evidence bucket %s has no Object Lock: archived copies are not "
                        "write-once", self.bucket)
        self.ready = True

    def put(self, key: str, data: bytes, retain_until: dt.datetime) -> dict[str, Any]:
        """Write `data` once under `key`, its SHA-256 checked by the store, locked until
        `retain_until`. A key already holding the same bytes (a run that died after writing
        it) is fine; one holding other bytes is an error."""
        digest = hashlib.sha256(data).digest()
        checksum = base64.b64encode(digest).decode()
        entry = {"key": key, "sha256": digest.hex(), "bytes": len(data)}
        if self._holds(key, checksum):
            return entry
        extra: dict[str, Any] = {}
        if self.locked:
            extra = {"ObjectLockMode": "COMPLIANCE", "ObjectLockRetainUntilDate": retain_until}
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data,
                                   ChecksumSHA256=checksum, IfNoneMatch="*", **extra)
        except (ClientError, BotoCoreError) as error:
            # Written meanwhile by another run (the store refuses the second write, some by
            # closing the connection before reading it): fine if it holds these bytes.
            if not self._holds(key, checksum):
                code = _code(error) if isinstance(error, ClientError) else str(error)
                raise ArchiveError(f"{key}: {code}") from None
        return entry

    def _holds(self, key: str, checksum: str) -> bool:
        """Whether `key` is there with these bytes; ArchiveError if it holds others."""
        try:
            held = self.client.head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
        except ClientError as error:
            if _code(error) in ("404", "NoSuchKey", "NotFound"):
                return False
            raise ArchiveError(f"{key}: {_code(error) or error}") from None
        if held.get("ChecksumSHA256") != checksum:
            raise ArchiveError(f"{key} already holds other bytes than this run's: the archive "
                               "is not overwritten; a person must look")
        return True

    def get(self, key: str) -> bytes:
        body: bytes = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return body


def prefix(row: dict[str, Any]) -> str:
    return (f"{row['license_number']}/{row['report']}/{row['period']}/"
            f"submission-{row['submission_id']}/")


def package_files(conn: Connection, settings: JobSettings, row: dict[str, Any],
                  package: dict[str, Any]) -> dict[str, bytes]:
    """The files of the accepted package, byte for byte: this pod's copy when it has one, else
    generated again from the database (the read contract it was made with), each checked
    against the SHA-256 the audit trail recorded when it was uploaded."""
    wanted = {item["name"]: item["sha256"] for item in package["files"]}
    here = settings.out_dir / row["report"] / row["period"]
    found = {name: (here / name).read_bytes() for name in wanted if (here / name).is_file()}
    if any(hashlib.sha256(data).hexdigest() != wanted[name] for name, data in found.items()) \
            or set(found) != set(wanted):
        period = parse_period(row["report"], row["period"], "period")
        with tempfile.TemporaryDirectory(prefix="ncc-evidence-") as scratch:
            rebuilt = build_package(conn, period, row["license_number"], Path(scratch))
            found = {item.name: rebuilt.path(item).read_bytes() for item in rebuilt.files}
    for name, digest in wanted.items():
        if name not in found or hashlib.sha256(found[name]).hexdigest() != digest:
            raise ArchiveError(f"{row['report']} {row['period']}: {name} as generated again "
                               "differs from what was uploaded (SHA-256): not archived; a "
                               "person must look")
    return {name: found[name] for name in wanted}


def archive_submission(conn: Connection, settings: JobSettings, archive: EvidenceArchive,
                       submission_id: int) -> str:
    """Archive one accepted submission; returns its prefix."""
    row = audit.submission_record(conn, submission_id)
    if row is None or row["outcome"] != "accepted":
        raise ArchiveError(f"submission {submission_id} is not an accepted one")
    # Whole seconds (S3's precision), rounded up: the lock lasts at least the retention.
    exact = row["finished_at"] + archive.retention
    retain_until = exact.replace(microsecond=0) + dt.timedelta(
        seconds=1 if exact.microsecond else 0)
    key = prefix(row)
    objects = []
    package = audit.package_record(conn, row["package_id"]) if row["package_id"] else None
    if package is not None:
        for name, data in package_files(conn, settings, row, package).items():
            objects.append(archive.put(f"{key}files/{name}", data, retain_until))
    objects.append(archive.put(f"{key}request.json", request_bytes(row["request_body"] or {}),
                               retain_until))
    objects.append(archive.put(f"{key}response.txt", (row["response_text"] or "").encode(),
                               retain_until))
    rows = {"package": package, "submission": row,
            "httpTries": audit.http_tries(conn, submission_id)}
    objects.append(archive.put(f"{key}audit.json", json.dumps(
        rows, default=str, sort_keys=True, ensure_ascii=False, indent=1).encode(),
        retain_until))
    manifest = json.dumps({"submissionId": submission_id, "acceptedAt": str(row["finished_at"]),
                           "retainUntil": retain_until.isoformat(), "objects": objects},
                          sort_keys=True, indent=1).encode()
    written = archive.put(f"{key}manifest.json", manifest, retain_until)
    audit.record_archive(conn, submission_id, bucket=archive.bucket, key_prefix=key,
                         objects=[*objects, written], manifest_sha256=written["sha256"],
                         retain_until=retain_until)
    log.info("archived submission %d under %s", submission_id, key,
             extra={"submission_id": submission_id, "archive_prefix": key})
    return key


@dataclass(frozen=True)
class ArchiveOutcome:
    archived: int
    failed: int


def archive_pending(conn: Connection, settings: JobSettings,
                    archive: EvidenceArchive) -> ArchiveOutcome:
    """Archive every accepted submission of this licence and environment that has no archive
    yet: this run's, and any an earlier run could not write. A failure is logged and left for
    the next run; it never undoes the acceptance."""
    archived = failed = 0
    pending = audit.unarchived_accepted(conn, settings.license_number, settings.environment)
    if pending and not archive.ready:
        try:
            archive.prepare()
        except (ArchiveError, ConfigError) as error:
            log.error("%d accepted submissions are not archived yet (the next run tries "
                      "again): %s", len(pending), error)
            return ArchiveOutcome(0, len(pending))
    for submission_id in pending:
        try:
            archive_submission(conn, settings, archive, submission_id)
            archived += 1
        except (ArchiveError, ClientError, BotoCoreError, OSError) as error:
            failed += 1
            log.error("submission %d was accepted and is not archived yet (the next run tries "
                      "again): %s", submission_id, error, extra={"submission_id": submission_id})
    return ArchiveOutcome(archived, failed)
