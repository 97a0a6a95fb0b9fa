"""Real servers for the compliance job tests, on loopback only, started and stopped here:
PostgreSQL (Debian's binaries) and OpenSSH's sshd serving SFTP."""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PG_BIN_CANDIDATES = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
SUPERUSER_PASSWORD = "pg-test-superuser"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _pg_bin(name: str) -> str:
    for directory in PG_BIN_CANDIDATES:
        if (directory / name).exists():
            return str(directory / name)
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} not found: run ./scripts/setup")
    return found


def _as_postgres(command: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root; CI runs as root.
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    data: Path

    def dsn(self, dbname: str = "postgres", user: str = "postgres",
            password: str = SUPERUSER_PASSWORD) -> str:
        return f"host={self.host} port={self.port} dbname={dbname} user={user} password={password}"


@contextlib.contextmanager
def postgres_server() -> Iterator[Postgres]:
    # Its own directory under /tmp: pytest's per-user temp tree is closed to the postgres user.
    directory = Path(tempfile.mkdtemp(prefix="acm-postgres-"))
    data, password_file = directory / "data", directory / "pwfile"
    password_file.write_text(SUPERUSER_PASSWORD + "\n")
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres", "postgres")
        shutil.chown(password_file, "postgres", "postgres")
    subprocess.run(_as_postgres([_pg_bin("initdb"), "-D", str(data), "-U", "postgres",
                                 "--auth=scram-sha-256", f"--pwfile={password_file}",
                                 "--encoding=UTF8", "--locale=C.UTF-8"]),
                   check=True, capture_output=True)
    port = free_port()
    options = (f"-c listen_addresses=127.0.0.1 -c port={port}"
               f" -c unix_socket_directories={directory}"
               " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
               " -c shared_buffers=256MB -c max_connections=50")
    subprocess.run(_as_postgres([_pg_bin("pg_ctl"), "-D", str(data), "-l",
                                 str(directory / "server.log"), "-o", options, "-w", "start"]),
                   check=True, capture_output=True)
    try:
        yield Postgres("127.0.0.1", port, data)
    finally:
        subprocess.run(_as_postgres([_pg_bin("pg_ctl"), "-D", str(data), "-m", "immediate",
                                     "-w", "stop"]), capture_output=True)
        shutil.rmtree(directory, ignore_errors=True)


@dataclass(frozen=True)
class SftpServer:
    host: str
    port: int
    user: str
    client_key: str
    known_hosts: str
    root: Path
    host_public_key: str


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


@contextlib.contextmanager
def sftp_server(directory: Path, host: str = "127.0.0.1") -> Iterator[SftpServer]:
    """sshd on a port of `host` (loopback unless a test serves pods: the node's bridge
    address): key authentication only, SFTP only, a throwaway host key."""
    directory.mkdir(parents=True, exist_ok=True)
    host_key, client_key = directory / "host_ed25519", directory / "client_ed25519"
    _keygen(host_key)
    _keygen(client_key)
    authorized = directory / "authorized_keys"
    shutil.copy(client_key.with_suffix(".pub"), authorized)
    authorized.chmod(0o600)
    root = directory / "incoming"
    root.mkdir()
    port, user = free_port(), getpass.getuser()
    config = directory / "sshd_config"
    config.write_text(f"""Port {port}
ListenAddress {host}
HostKey {host_key}
PidFile {directory}/sshd.pid
AuthorizedKeysFile {authorized}
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
AllowUsers {user}
Subsystem sftp internal-sftp
ForceCommand internal-sftp
LogLevel ERROR
""")
    Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory
    process = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(config)],
                               stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection((host, port), 0.5):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                errors = process.stderr.read() if process.stderr else b""
                raise RuntimeError(f"sshd did not start: {errors!r}")
            time.sleep(0.05)
        public = host_key.with_suffix(".pub").read_text().split()
        yield SftpServer(host, port, user, client_key.read_text(),
                         f"[{host}]:{port} {public[0]} {public[1]}\n", root,
                         f"{public[0]} {public[1]}")
    finally:
        process.terminate()
        process.wait(timeout=10)


def restart_postgres(server: Postgres) -> None:
    """Kill the server the way a crashed or evicted pod dies (no clean shutdown) and start it
    again on the same port: every open connection is lost."""
    subprocess.run(_as_postgres([_pg_bin("pg_ctl"), "-D", str(server.data), "-m", "immediate",
                                 "-l", str(server.data.parent / "server.log"), "-w",
                                 "restart"]), check=True, capture_output=True)


@dataclass(frozen=True)
class ObjectStore:
    """VersityGW (the local stack's object store) on loopback, TLS from a test CA."""

    endpoint: str
    access_key: str
    secret_key: str
    ca_file: Path
    root: Path


def object_store_binary() -> str:
    found = subprocess.run([str(Path(__file__).resolve().parents[2] / "scripts" / "object-store"),
                            "bin"], capture_output=True, text=True, check=False)
    if found.returncode != 0:
        raise RuntimeError(f"the object store is not built: {found.stderr.strip()} "
                           "(run ./scripts/setup)")
    return f"{found.stdout.strip()}/versitygw"


@contextlib.contextmanager
def object_store_server(directory: Path, certificate: Path, key: Path,
                        ca_file: Path) -> Iterator[ObjectStore]:
    data, versions = directory / "data", directory / "versions"
    data.mkdir(parents=True)
    versions.mkdir()
    port = free_port()
    access, secret = "acm-evidence-test", "acm-evidence-test-secret-0123456789"
    with (directory / "versitygw.log").open("wb") as log:
        process = subprocess.Popen(
            [object_store_binary(), "--access", access, "--secret", secret,
             "--port", f"127.0.0.1:{port}", "--cert", str(certificate), "--key", str(key),
             "--health", "/health", "posix", "--versioning-dir", str(versions), str(data)],
            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port),
                                                                        timeout=1):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("versitygw did not start: "
                                   + (directory / "versitygw.log").read_text()[-2000:])
            time.sleep(0.1)
        yield ObjectStore(f"https://localhost:{port}", access, secret, ca_file, data)
    finally:
        process.terminate()
        process.wait(timeout=10)
