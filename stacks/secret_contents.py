"""What can be checked of the secret settings without ever printing them.

Runs where the values are real (the Pulumi engine decrypted them for `preview`/`up`); the
offline render holds placeholders and skips these checks. Every message names the key and
says what is wrong in words; none contains the value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime

import paramiko
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes


def _private_key(text: str) -> PrivateKeyTypes | serialization.SSHPrivateKeyTypes:
    data = text.encode()
    try:
        return serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        return serialization.load_ssh_private_key(data, password=None)


def _public_der(key: object) -> bytes:
    public = key.public_key()  # type: ignore[attr-defined]
    der: bytes = public.public_bytes(serialization.Encoding.DER,
                                     serialization.PublicFormat.SubjectPublicKeyInfo)
    return der


# A control password is printed into OpenSIPS's cfg (a quoted string) and HAProxy's userlist
# (a bare word): no quotes, backslashes, spaces or '#' that either parser would read.
CONTROL_PASSWORD = re.compile(r"[A-Za-z0-9._~+/=@%!^*,:-]{16,}")
CONTROL_PASSWORD_KEYS = ("opensipsControlPassword", "haproxyControlPassword",
                         "alertmanagerControlPassword", "prometheusControlPassword",
                         "complianceExporterPassword", "acmEngineMetricsPassword",
                         "clickhouseEnginePassword")
# A Dragonfly password goes into OpenSIPS's cachedb URL (redis://user:password@host/): none of
# the characters a URL gives a meaning to.
STORE_PASSWORD = re.compile(r"[A-Za-z0-9._~+=!^*,-]{16,}")
STORE_PASSWORD_KEYS = ("dragonflyOpensipsPassword", "dragonflyEnginePassword")
AGE_IDENTITY = re.compile(r"AGE-SECRET-KEY-1[02-9AC-HJ-NP-Z]{58}")


def secret_problems(secrets: Mapping[str, str], now: datetime | None = None
                    ) -> list[tuple[str, str]]:
    """(key, problem) for each secret setting whose content cannot be right."""
    now = now or datetime.now(UTC)
    problems: list[tuple[str, str]] = []
    for key, value in secrets.items():
        if not value.strip():
            problems.append((key, "is empty: set the real value with `pulumi config set "
                                  f"--secret acm-platform:{key}`"))
    for key in CONTROL_PASSWORD_KEYS:
        password = secrets.get(key, "")
        if password.strip() and not CONTROL_PASSWORD.fullmatch(password):
            problems.append((key, "must be at least 16 characters of letters, digits and "
                                  "._~+/=@%!^*,:- only (no spaces, quotes, backslashes or '#': "
                                  "it goes into OpenSIPS's and HAProxy's config files)"))
    for key in STORE_PASSWORD_KEYS:
        password = secrets.get(key, "")
        if password.strip() and not STORE_PASSWORD.fullmatch(password):
            problems.append((key, "must be at least 16 characters of letters, digits and "
                                  "._~+=!^*,- only (it goes into OpenSIPS's redis:// URL, where "
                                  "@ : / % and spaces have a meaning)"))
    identity = secrets.get("backupIdentity", "")
    if identity.strip() and not AGE_IDENTITY.fullmatch(identity.strip()):
        problems.append(("backupIdentity", "is not an age identity (AGE-SECRET-KEY-1 and 58 "
                                           "more characters, what `age-keygen` writes)"))
    digest_key = secrets.get("secretsDigestKey", "")
    if digest_key.strip() and len(digest_key.strip()) < 32:
        problems.append(("secretsDigestKey", "must be at least 32 characters (a random key "
                                             "of the stack's own, e.g. `openssl rand -base64 "
                                             "32`)"))
    certificate = secrets.get("sipTlsCertificate", "")
    key_text = secrets.get("sipTlsPrivateKey", "")
    parsed_certificate = None
    if certificate.strip():
        try:
            parsed_certificate = x509.load_pem_x509_certificate(certificate.encode())
        except ValueError:
            problems.append(("sipTlsCertificate", "is not a PEM certificate (-----BEGIN "
                                                  "CERTIFICATE----- ...)"))
    if parsed_certificate is not None and parsed_certificate.not_valid_after_utc <= now:
        problems.append(("sipTlsCertificate", "has expired (valid until "
                         f"{parsed_certificate.not_valid_after_utc:%Y-%m-%d}): OpenSIPS would "
                         "serve it and interconnect partners would refuse TLS"))
    if key_text.strip():
        try:
            private = serialization.load_pem_private_key(key_text.encode(), password=None)
        except (ValueError, TypeError):
            problems.append(("sipTlsPrivateKey", "is not an unencrypted PEM private key"))
        else:
            if parsed_certificate is not None and _public_der(private) != \
                    parsed_certificate.public_key().public_bytes(
                        serialization.Encoding.DER,
                        serialization.PublicFormat.SubjectPublicKeyInfo):
                problems.append(("sipTlsPrivateKey", "does not belong to sipTlsCertificate "
                                                     "(their public keys differ)"))
    sftp_key = secrets.get("nccSftpPrivateKey", "")
    if sftp_key.strip():
        try:
            _private_key(sftp_key)
        except (ValueError, TypeError):
            problems.append(("nccSftpPrivateKey", "is not an unencrypted OpenSSH or PEM "
                                                  "private key"))
    known_hosts = secrets.get("nccSftpKnownHosts", "")
    if known_hosts.strip():
        entries = 0
        for number, line in enumerate(known_hosts.splitlines(), start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                entry = paramiko.hostkeys.HostKeyEntry.from_line(line)
            except Exception:  # paramiko raises several types for a malformed key
                entry = None
            if entry is None:
                problems.append(("nccSftpKnownHosts", f"line {number} is not a known_hosts "
                                                      "entry (host key-type base64-key)"))
            else:
                entries += 1
        if not entries and not any(k == "nccSftpKnownHosts" for k, _ in problems):
            problems.append(("nccSftpKnownHosts", "has no host key: the regulator's SFTP "
                                                  "host key must be pinned"))
    return problems
