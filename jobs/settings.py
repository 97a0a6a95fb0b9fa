"""The job's configuration: environment variables (from the CronJob) and secret files (from a
Kubernetes Secret mounted read-only). Everything is checked before any work starts, and a bad
or missing setting is reported by the name the operator sets it under."""

from __future__ import annotations

import datetime as dt
import os
import re
import stat
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from jobs.runs import RunSchedule

ENV_PREFIX = "NCC_"


class ConfigError(Exception):
    """A setting is missing or malformed; the message names it."""


class JobSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    license_number: str
    environment: Literal["sandbox", "production"]
    # The first WAT day this licence's platform holds call records for (stack config
    # compliance.firstDataDate). No period that ends before it is ever filed: an all-zero
    # report accepted for a day the platform did not exist cannot be corrected later.
    first_data_date: dt.date
    # The report database (YugabyteDB YSQL in production). The password is a secret file.
    db_host: str
    db_port: Annotated[int, Field(ge=1, le=65535)] = 5433
    db_name: str = "acm"
    db_user: str = "ncc_compliance"
    db_sslmode: Literal["disable", "prefer", "require", "verify-ca", "verify-full"] = "prefer"
    # How long a connection attempt may take before the run gives up and says so (libpq's
    # connect_timeout: a database that accepts and never answers counts too).
    db_connect_timeout_seconds: Annotated[int, Field(ge=2, le=120)] = 10
    sftp_host: str | None = None
    sftp_port: Annotated[int, Field(ge=1, le=65535)] = 22
    sftp_user: str = "acm"
    sftp_directory: str = "/incoming"
    atrs_base_url: str | None = None
    # A CA bundle for the ATRS endpoint; unset means the system's trust store. Never "off".
    atrs_ca_file: Path | None = None
    atrs_timeout_seconds: Annotated[float, Field(gt=0, le=120)] = 30.0
    atrs_attempts: Annotated[int, Field(ge=1, le=10)] = 6
    atrs_backoff_seconds: Annotated[float, Field(gt=0, le=60)] = 2.0
    atrs_backoff_max_seconds: Annotated[float, Field(gt=0, le=300)] = 60.0
    # Whether the regulator has confirmed (at onboarding) that it answers a repeated
    # Idempotency-Key with the original result. True: a POST that got no answer is resent
    # under the same key. False: it is not; the attempt ends `unconfirmed`, an alert fires,
    # and a person asks the regulator (docs/ncc-compliance.md, "Exactly once").
    atrs_idempotency_key_honoured: bool = True
    secrets_dir: Path = Path("/var/run/secrets/ncc")
    out_dir: Path = Path("/scratch")
    dry_run: bool = False
    # How many past periods a scheduled run looks back over to catch up on missed ones.
    catch_up_periods: Annotated[int, Field(ge=1, le=31)] = 7
    # How far back the first incident run (no watermark yet) looks for CRITICAL alerts.
    incident_lookback_hours: Annotated[int, Field(ge=1, le=168)] = 24
    # The exporter's: each CronJob's schedule and deadlines (stack config compliance.reports),
    # JSON by command, e.g. {"daily": {"schedule": "30 5 * * *", "starting_deadline_seconds":
    # 600, "active_deadline_seconds": 1200}}: when a scheduled run must have started, and
    # how long one may run before its open row counts as killed.
    schedules: dict[Literal["daily", "weekly", "monthly", "incidents", "backup"],
                    RunSchedule] = {}
    # The exporter's: the password of the account its /metrics asks for (a secret file of its
    # own Secret, not the jobs' credentials).
    exporter_password_file: Path | None = None
    # The evidence store (S3 API): where every accepted submission is archived write-once and
    # the database backups go. Its keys are secret files (EVIDENCE_ACCESS_KEY_ID,
    # EVIDENCE_SECRET_ACCESS_KEY). Unset: nothing is archived (a dry-run stack).
    evidence_endpoint: str | None = None
    evidence_bucket: str | None = None
    evidence_region: str = "us-east-1"
    # A CA bundle for the store's TLS; unset means the system's trust store. Never "off".
    evidence_ca_file: Path | None = None
    # How long each archived object is locked (S3 Object Lock, compliance mode) after the
    # regulator accepted it: the regulator's seven years at least in production.
    evidence_retention_days: Annotated[int, Field(ge=1, le=36500)] = 2557
    # A store the project runs itself (local): the job creates the bucket, with Object Lock,
    # where it is missing. Never for the operator's store.
    evidence_create_bucket: bool = False
    # Backups: encrypted to this age recipient (the identity that decrypts them never enters
    # the cluster), kept this many days.
    backup_recipient: str | None = None
    backup_keep_days: Annotated[int, Field(ge=1, le=3650)] = 35

    @field_validator("license_number")
    @classmethod
    def licence(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Z0-9-]{3,32}", value):
            raise ValueError(f"{value!r} is not an NCC licence number: 3 to 32 capital "
                             "letters, digits or hyphens")
        return value

    @field_validator("first_data_date", mode="before")
    @classmethod
    def iso_day(cls, value: object) -> object:
        if isinstance(value, str) and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            raise ValueError(f"{value!r} is not a day in the form YYYY-MM-DD")
        return value

    @field_validator("atrs_base_url")
    @classmethod
    def https_address(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"https://[^/\s]+(/\S*)?", value):
            raise ValueError(f"{value!r} is not an https:// address of the regulator's API "
                             "(https://host[:port][/path], no spaces): the API is reached over "
                             "verified TLS only")
        return value

    @field_validator("evidence_endpoint")
    @classmethod
    def store_address(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"https://[^/\s]+/?", value):
            raise ValueError(f"{value!r} is not an https:// address of an S3 endpoint "
                             "(https://host[:port], no path): the store is reached over "
                             "verified TLS only")
        return value

    @field_validator("backup_recipient")
    @classmethod
    def age_recipient(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"age1[02-9ac-hj-np-z]{58}", value):
            raise ValueError(f"{value!r} is not an age recipient (age1 and 58 more bech32 "
                             "characters, what `age-keygen -y` prints)")
        return value

    @field_validator("sftp_directory")
    @classmethod
    def absolute_directory(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must be an absolute path on the regulator's server")
        return value.rstrip("/") or "/"

    def require_transport(self) -> None:
        """Sending needs the SFTP and ATRS endpoints, which a dry run does not."""
        missing = [f"{ENV_PREFIX}{name.upper()}" for name in ("sftp_host", "atrs_base_url")
                   if getattr(self, name) is None]
        if missing:
            raise ConfigError(f"{', '.join(missing)}: required to submit (or use --dry-run)")


def load_settings() -> JobSettings:
    try:
        return JobSettings()
    except ValidationError as error:
        problems = []
        for detail in error.errors():
            name = f"{ENV_PREFIX}{str(detail['loc'][0]).upper()}" if detail["loc"] else "?"
            problems.append(f"{name}: {detail['msg'].removeprefix('Value error, ')}")
        raise ConfigError("invalid job settings:\n  " + "\n  ".join(problems)) from None


# The files of the mounted Secret (components/compliance.py writes the same names).
EVIDENCE_ACCESS_KEY_ID = "evidence-access-key-id"
EVIDENCE_SECRET_ACCESS_KEY = "evidence-secret-access-key"
DATABASE_PASSWORD = "database-password"
ATRS_CLIENT_ID = "atrs-client-id"
ATRS_CLIENT_SECRET = "atrs-client-secret"
SFTP_PRIVATE_KEY = "sftp-private-key"
SFTP_KNOWN_HOSTS = "sftp-known-hosts"
SECRET_FILES = (DATABASE_PASSWORD, ATRS_CLIENT_ID, ATRS_CLIENT_SECRET, SFTP_PRIVATE_KEY,
                SFTP_KNOWN_HOSTS)


def read_secret(settings: JobSettings, name: str) -> str:
    path = settings.secrets_dir / name
    try:
        ensure_private(path)
        value = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"secret file {path} is missing (Secret key {name!r})") from None
    except OSError as error:
        raise ConfigError(f"secret file {path} cannot be read: {error.strerror}") from None
    # Keys and known_hosts keep their text; single-line values lose a trailing newline.
    stripped = value.strip()
    if not stripped:
        raise ConfigError(f"secret file {path} is empty (Secret key {name!r})")
    return value if "\n" in stripped else stripped


def exporter_password(settings: JobSettings) -> str:
    """The exporter's account password, checked like every secret file."""
    path = settings.exporter_password_file
    if path is None:
        raise ConfigError(f"{ENV_PREFIX}EXPORTER_PASSWORD_FILE: required by the exporter, whose "
                          "/metrics asks for an account")
    try:
        ensure_private(path)
        value = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ConfigError(f"{ENV_PREFIX}EXPORTER_PASSWORD_FILE: {path} is missing") from None
    except OSError as error:
        raise ConfigError(f"{ENV_PREFIX}EXPORTER_PASSWORD_FILE: {path} cannot be read: "
                          f"{error.strerror}") from None
    if not value:
        raise ConfigError(f"{ENV_PREFIX}EXPORTER_PASSWORD_FILE: {path} is empty")
    return value


def ensure_private(path: Path) -> None:
    """Refuse a secret that others could read or replace: a file readable or writable by
    others, writable by its group, readable by a group this process is not in, or in a
    directory anyone may write to without the sticky bit (which lets them swap the file).

    A Kubernetes Secret volume passes: files 0440 owned by the pod's fsGroup (a group of
    this process), in a tmpfs whose root is 1777 and whose data directory is 0755."""
    resolved = path.resolve(strict=True)
    status = resolved.stat()
    mode = stat.S_IMODE(status.st_mode)
    own_groups = {os.getegid(), *os.getgroups()}
    problem = None
    if mode & 0o007:
        problem = f"is {'readable' if mode & 0o004 else 'accessible'} by others"
    elif mode & 0o020:
        problem = "is writable by its group"
    elif mode & 0o040 and status.st_gid not in own_groups:
        problem = f"is readable by group {status.st_gid}, which this job does not belong to"
    if problem:
        raise ConfigError(f"secret file {path} {problem} (mode {mode:04o}); refusing to use "
                          "it: give it mode 0400 or 0440 (a Secret's defaultMode)")
    for directory in dict.fromkeys((path.parent, resolved.parent)):
        dir_mode = directory.stat().st_mode
        if dir_mode & stat.S_IWOTH and not dir_mode & stat.S_ISVTX:
            raise ConfigError(f"secret file {path} is in {directory}, which anyone may write "
                              f"to (mode {stat.S_IMODE(dir_mode):04o}, no sticky bit), so "
                              "anyone could replace it; refusing to use it")
