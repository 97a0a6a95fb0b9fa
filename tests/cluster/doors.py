"""Finding open doors by looking: every socket a pod listens on, read from the pod's own network
namespace (`ss` through `nsenter`, not a list of ports we keep), and what each says to a
stranger and to the platform's own accounts, asked from the node the way any pod on the
network could ask.

A socket passes when it is a SIP socket (by design open to the interconnect: it answers
OPTIONS, with or without a PROXY header or TLS), a kubelet probe page that reveals nothing
(the port a container's probe names, answering only its probe path with a few bytes), bound
to the pod's loopback only (no one outside the pod reaches it), or when it refuses a stranger
(HTTP 401, Redis NOAUTH, PostgreSQL's password request, a TLS handshake that wants a client
certificate) and answers one of the platform's accounts. Anything else is a door.
"""

from __future__ import annotations

import re
import socket
import ssl
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

SIP_ANSWER = b"SIP/2.0 "
HTTP_ANSWER = b"HTTP/"
# What a probe page may say: "ok", "alive", "ready", "not found" and the like.
PROBE_PAGE_LIMIT = 64
# Paths that would show or change something, tried on a probe port without an account.
PROBED_PATHS = ("/", "/metrics", "/mi", "/stats", "/api/v1/status/config", "/api/v2/status",
                "/-/reload", "/received")


@dataclass(frozen=True)
class Listening:
    protocol: str  # tcp | udp
    address: str
    port: int
    process: str


@dataclass(frozen=True)
class Accounts:
    """The platform's credentials, read from the namespace's Secrets."""

    basic: list[tuple[str, str]]  # (user, password) for HTTP basic auth
    store: list[tuple[str, str]]  # (user, password) for the breaker store's ACL
    database: list[tuple[str, str]]  # (user, password) for PostgreSQL/YSQL
    client_certificates: list[tuple[Path, Path, Path]]  # (CA, certificate, key)
    s3: list[tuple[str, str]]  # (access key, secret key) for the S3 API


@dataclass(frozen=True)
class Verdict:
    socket: Listening
    kind: str  # sip | probe | pod-local | refuses | door
    detail: str

    @property
    def open(self) -> bool:
        return self.kind == "door"


def pod_pid(uid: str) -> int:
    """A process of the pod (its sandbox's pause, or a container's), found by its cgroup."""
    marker = f"pod{uid}"
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker in (entry / "cgroup").read_text():
                return int(entry.name)
        except OSError:
            continue
    raise LookupError(f"no process of pod {uid} on this node")


def listening_sockets(pid: int) -> list[Listening]:
    listed = subprocess.run(["nsenter", "-t", str(pid), "-n", "ss", "-Hlntup"],
                            capture_output=True, text=True, check=True, timeout=30).stdout
    sockets = []
    for line in listed.splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        address, _, port = fields[4].rpartition(":")
        process = re.search(r'\(\("([^"]+)"', line)
        sockets.append(Listening(fields[0], address.strip("[]"), int(port),
                                 process.group(1) if process else "?"))
    return sorted(set(sockets), key=lambda s: (s.protocol, s.port, s.address))


def sip_options(target: str, port: int, transport: str, local_port: int = 5999) -> bytes:
    # rport: the answer comes back to the port the request came from (UDP).
    return (f"OPTIONS sip:probe@{target}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/{transport} 10.203.0.1:{local_port};rport;"
            f"branch=z9hG4bK-door-{port}\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:door-probe@10.203.0.1>;tag=door\r\n"
            f"To: <sip:probe@{target}>\r\nCall-ID: door-{port}@10.203.0.1\r\n"
            "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode()


def _exchange(address: str, port: int, payload: bytes, timeout: float = 2.0) -> bytes:
    try:
        with socket.create_connection((address, port), timeout=timeout) as conn:
            conn.sendall(payload)
            return conn.recv(512)
    except OSError:
        return b""


def _tls_exchange(address: str, port: int, payload: bytes, prefix: bytes = b"",
                  certificate: tuple[Path, Path, Path] | None = None) -> tuple[bool, bytes]:
    """(handshake completed and the server kept the connection, what it answered)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if certificate is None:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context.check_hostname = False
        context.load_verify_locations(certificate[0])
        context.load_cert_chain(certificate[1], certificate[2])
    try:
        with socket.create_connection((address, port), timeout=3) as raw:
            if prefix:
                raw.sendall(prefix)
            with context.wrap_socket(raw) as conn:
                conn.settimeout(2)
                if payload:
                    conn.sendall(payload)
                try:
                    return True, conn.recv(512)
                except TimeoutError:
                    return True, b""
    except (ssl.SSLError, OSError):
        return False, b""


def _http(address: str, port: int, path: str, account: tuple[str, str] | None,
          method: str = "GET") -> tuple[int, bytes]:
    import base64

    headers = f"{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n"
    if account is not None:
        token = base64.b64encode(f"{account[0]}:{account[1]}".encode()).decode()
        headers += f"Authorization: Basic {token}\r\n"
    answer = b""
    try:
        with socket.create_connection((address, port), timeout=3) as conn:
            conn.sendall((headers + "Content-Length: 0\r\n\r\n").encode())
            while chunk := conn.recv(4096):
                answer += chunk
                if len(answer) > 65536:
                    break
    except OSError:
        pass
    status = re.match(rb"HTTP/\S+ (\d{3})", answer)
    body = answer.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in answer else b""
    return (int(status.group(1)) if status else 0), body


def _s3_answers(address: str, port: int, access: str, secret: str) -> bool:
    """Whether the S3 API answers a signed request (AWS Signature V4) with these keys. The
    certificate names the Service, not the pod's address: what is checked here is who may ask,
    not which server answers."""
    import boto3
    from botocore.config import Config

    client = boto3.client("s3", endpoint_url=f"https://{address}:{port}",
                          region_name="us-east-1", aws_access_key_id=access,
                          aws_secret_access_key=secret, verify=False,
                          config=Config(s3={"addressing_style": "path"},
                                        retries={"max_attempts": 1}))
    try:
        client.list_buckets()
    except Exception:
        return False
    return True


def _postgres_asks_for_a_password(address: str, port: int) -> bool:
    parameters = b"user\0acm\0database\0acm\0\0"
    startup = struct.pack("!ii", 8 + len(parameters), 196608) + parameters
    answer = _exchange(address, port, startup)
    # 'R' AuthenticationRequest; code 0 would be "no password needed".
    return len(answer) >= 9 and answer[:1] == b"R" and struct.unpack("!i", answer[5:9])[0] != 0


def probe_ports(pod: Any) -> set[int | str]:
    """The ports the pod's containers' probes name (numbers, or port names)."""
    named: set[int | str] = set()
    for container in [*(pod.spec.init_containers or []), *pod.spec.containers]:
        for probe in (container.liveness_probe, container.readiness_probe,
                      container.startup_probe):
            if probe is not None and probe.http_get is not None:
                named.add(probe.http_get.port)
        for port in container.ports or []:
            if port.name in named:
                named.add(port.container_port)
    return named


def probe_paths(pod: Any) -> set[str]:
    return {probe.http_get.path
            for container in [*(pod.spec.init_containers or []), *pod.spec.containers]
            for probe in (container.liveness_probe, container.readiness_probe,
                          container.startup_probe)
            if probe is not None and probe.http_get is not None}


def _http_verdict(found: Listening, address: str, pod: Any, accounts: Accounts) -> Verdict:
    status, _ = _http(address, found.port, "/", None)
    if status == 401:
        for account in accounts.basic:
            answered, _ = _http(address, found.port, "/", account)
            if answered not in (0, 401):
                return Verdict(found, "refuses", f"HTTP 401 without an account, {answered} "
                                                 f"with {account[0]}'s")
        return Verdict(found, "door", "HTTP 401 to every account the platform has")
    if found.port in probe_ports(pod):
        shown = []
        for path in probe_paths(pod):
            code, body = _http(address, found.port, path, None)
            if code == 200 and len(body) > PROBE_PAGE_LIMIT:
                return Verdict(found, "door", f"probe page {path} shows {len(body)} bytes")
            shown.append(f"{path} {code}")
        for path in PROBED_PATHS:
            if path in probe_paths(pod):
                continue
            for method in ("GET", "POST"):
                code, body = _http(address, found.port, path, None, method)
                if code not in (401, 403, 404, 405, 501):
                    return Verdict(found, "door", f"probe port answers {method} {path} with "
                                                  f"{code}: {body[:80]!r}")
        return Verdict(found, "probe", "kubelet probe page: " + ", ".join(sorted(shown)))
    return Verdict(found, "door", f"HTTP {status} to a stranger on a port no probe names")


def classify(found: Listening, address: str, pod: Any, accounts: Accounts) -> Verdict:
    if found.address.startswith("127.") or found.address in ("::1", "::ffff:127.0.0.1"):
        return Verdict(found, "pod-local", "bound to the pod's loopback")
    if found.protocol == "udp":
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as conn:
            conn.settimeout(2)
            conn.bind(("10.203.0.1", 0))
            conn.sendto(sip_options(address, found.port, "UDP", conn.getsockname()[1]),
                        (address, found.port))
            try:
                answer = conn.recv(512)
            except OSError:
                answer = b""
        if answer.startswith(SIP_ANSWER):
            return Verdict(found, "sip", "answers SIP OPTIONS over UDP")
        return Verdict(found, "door", f"UDP socket that is not SIP ({answer[:40]!r})")
    answer = _exchange(address, found.port, sip_options(address, found.port, "TCP"))
    if answer.startswith(SIP_ANSWER):
        return Verdict(found, "sip", "answers SIP OPTIONS over TCP")
    if answer.startswith(HTTP_ANSWER) or _http(address, found.port, "/", None)[0]:
        # (Python's http.server answers a request line it cannot read without a status line.)
        return _http_verdict(found, address, pod, accounts)
    if answer.startswith(b"-"):
        # The Redis protocol (it refuses unknown commands before it asks who is there).
        if not _exchange(address, found.port, b"PING\r\n").startswith(b"-NOAUTH"):
            return Verdict(found, "door", "Redis protocol: PING without an account answered")
        for user, password in accounts.store:
            reply = _exchange(address, found.port,
                              f"AUTH {user} {password}\r\nPING\r\n".encode())
            if reply.startswith(b"+OK"):
                return Verdict(found, "refuses", f"Redis NOAUTH without an account, +OK as "
                                                 f"{user}")
        return Verdict(found, "door", "Redis NOAUTH to every account the platform has")
    if _postgres_asks_for_a_password(address, found.port):
        for user, password in accounts.database:
            try:
                with psycopg.connect(host=address, port=found.port, user=user,
                                     password=password, dbname="acm", connect_timeout=5,
                                     sslmode="disable"):
                    return Verdict(found, "refuses", f"PostgreSQL asks for a password, "
                                                     f"answers {user}")
            except psycopg.OperationalError:
                continue
        return Verdict(found, "door", "PostgreSQL refuses every account the platform has")
    proxy_header = f"PROXY TCP4 10.203.0.1 {address} 45999 {found.port}\r\n".encode()
    answer = _exchange(address, found.port,
                       proxy_header + sip_options(address, found.port, "TCP"))
    if answer.startswith(SIP_ANSWER):
        return Verdict(found, "sip", "answers SIP OPTIONS after a PROXY header")
    for prefix in (b"", proxy_header):
        completed, answer = _tls_exchange(address, found.port,
                                          sip_options(address, found.port, "TLS"), prefix)
        if completed and answer.startswith(SIP_ANSWER):
            return Verdict(found, "sip", "answers SIP OPTIONS over TLS"
                           + (" after a PROXY header" if prefix else ""))
    completed, answer = _tls_exchange(
        address, found.port, f"GET / HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n"
                             "\r\n".encode())
    if completed and answer.startswith(HTTP_ANSWER):
        status = re.match(rb"HTTP/\S+ (\d{3})", answer)
        code = int(status.group(1)) if status else 0
        if code not in (401, 403):
            return Verdict(found, "door", f"HTTPS {code} to a stranger")
        for access, secret in accounts.s3:
            if _s3_answers(address, found.port, access, secret):
                return Verdict(found, "refuses", f"HTTPS {code} without an account, the S3 "
                                                 "API answers the platform's keys")
        return Verdict(found, "door", f"HTTPS {code} to every account the platform has")
    completed, _ = _tls_exchange(address, found.port, b"")
    if not completed:
        for certificate in accounts.client_certificates:
            if _tls_exchange(address, found.port, b"", certificate=certificate)[0]:
                return Verdict(found, "refuses", "TLS handshake fails without a client "
                                                 "certificate, completes with the platform's")
    return Verdict(found, "door", "speaks none of SIP, HTTP, Redis, PostgreSQL, TLS with a "
                                  "client certificate")
