"""SFTP delivery to the regulator: key authentication, pinned host key, atomic uploads.

Each file goes up under a hidden temporary name, its size is checked on the server, and only
then is it renamed over the final name (OpenSSH's posix-rename: atomic, replaces an older copy).
The regulator's side therefore sees either no file or a complete one. A failed upload removes
its temporary file; one left by a killed process is removed by the next run before it uploads.
"""

from __future__ import annotations

import contextlib
import io
import logging
import posixpath
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import paramiko

log = logging.getLogger(__name__)

_KEY_TYPES: tuple[type[paramiko.PKey], ...] = (paramiko.Ed25519Key, paramiko.ECDSAKey,
                                               paramiko.RSAKey)


class TransferError(Exception):
    """The upload did not complete; nothing partial was left under a final name."""


@dataclass(frozen=True)
class SftpTarget:
    host: str
    port: int
    user: str
    directory: str
    private_key: str
    known_hosts: str


def private_key(text: str) -> paramiko.PKey:
    for key_type in _KEY_TYPES:
        try:
            return key_type.from_private_key(io.StringIO(text))
        except (paramiko.SSHException, ValueError):
            continue
    raise TransferError("the SFTP private key (secret sftp-private-key) is not an unencrypted "
                        "Ed25519, ECDSA or RSA key in OpenSSH or PEM format")


def pinned_host_keys(known_hosts: str) -> paramiko.HostKeys:
    keys = paramiko.HostKeys()
    for number, line in enumerate(known_hosts.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            entry = paramiko.hostkeys.HostKeyEntry.from_line(line, number)
        except paramiko.SSHException as error:
            raise TransferError(f"sftp-known-hosts line {number}: {error}") from None
        if entry is None or entry.key is None:
            raise TransferError(f"sftp-known-hosts line {number}: not a host key entry")
        for name in entry.hostnames:
            keys.add(name, entry.key.get_name(), entry.key)
    if not len(keys):
        raise TransferError("sftp-known-hosts holds no host key: refusing to connect unpinned")
    return keys


@contextmanager
def sftp_session(target: SftpTarget, timeout: float = 30.0) -> Iterator[paramiko.SFTPClient]:
    client = paramiko.SSHClient()
    host_keys = client.get_host_keys()
    for name, by_type in pinned_host_keys(target.known_hosts).items():
        for key in by_type.values():
            host_keys.add(name, key.get_name(), key)
    # An unknown or changed host key ends the connection: never trust on first use.
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(target.host, port=target.port, username=target.user,
                       pkey=private_key(target.private_key), allow_agent=False,
                       look_for_keys=False, timeout=timeout, banner_timeout=timeout,
                       auth_timeout=timeout)
    except paramiko.BadHostKeyException as error:
        client.close()
        raise TransferError(f"SFTP host key of {target.host}:{target.port} does not match the "
                            f"pinned key ({error})") from None
    except paramiko.SSHException as error:
        client.close()
        raise TransferError(f"SFTP connection to {target.host}:{target.port} failed: "
                            f"{error}") from None
    try:
        sftp = client.open_sftp()
        channel = sftp.get_channel()
        if channel is not None:
            channel.settimeout(timeout)
        yield sftp
    finally:
        client.close()


def temporary_name(name: str, tag: str) -> str:
    return f".{name}.part-{tag}"


def remove_stale_partials(sftp: paramiko.SFTPClient, directory: str,
                          names: Iterable[str]) -> list[str]:
    """Delete temporary files an interrupted earlier upload of these names left behind."""
    prefixes = tuple(temporary_name(name, "") for name in names)
    removed = []
    for entry in sftp.listdir(directory):
        if entry.startswith(prefixes):
            sftp.remove(posixpath.join(directory, entry))
            removed.append(entry)
    if removed:
        log.warning("removed %d temporary files of an interrupted upload: %s", len(removed),
                    ", ".join(removed))
    return removed


def upload_atomically(sftp: paramiko.SFTPClient, local: Path, directory: str, tag: str) -> int:
    """Upload `local` as `directory/<name>`; returns the verified size in bytes."""
    final = posixpath.join(directory, local.name)
    temporary = posixpath.join(directory, temporary_name(local.name, tag))
    expected = local.stat().st_size
    try:
        sftp.put(str(local), temporary, confirm=False)
        uploaded = sftp.stat(temporary).st_size
        if uploaded != expected:
            raise TransferError(f"{final}: server holds {uploaded} bytes of {expected}; "
                                "not renaming a partial file into place")
        sftp.posix_rename(temporary, final)
    except BaseException as error:
        # Never written, or the connection is gone: then the next run cleans up.
        with contextlib.suppress(OSError, paramiko.SSHException):
            sftp.remove(temporary)
        if isinstance(error, (OSError, paramiko.SSHException)):
            raise TransferError(f"upload of {final} failed: {error}") from error
        raise
    log.info("uploaded %s (%d bytes)", final, expected, extra={"remote_path": final})
    return expected


def remove_files(sftp: paramiko.SFTPClient, directory: str, names: Iterable[str]) -> int:
    """Delete these files (a rejected package's) where present; returns how many went."""
    removed = 0
    for name in names:
        if "/" in name or name.startswith("."):
            continue  # only the package's own plain file names, never a path
        try:
            sftp.remove(posixpath.join(directory, name))
        except FileNotFoundError:
            continue
        removed += 1
    if removed:
        log.info("removed %d files of a rejected package from %s", removed, directory)
    return removed
