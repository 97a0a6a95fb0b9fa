"""Inside the platform's hosts (pods through testinfra's kubectl backend, or local daemons):
processes, sockets, config files, secret permissions; and the protocols they answer."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import socket
import stat
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from tests.smoke.plan import ConfigFile, SmokePlan, section


def split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def test_haproxy_process_runs(plan: SmokePlan, host_of: Callable[[str], Any]) -> None:
    section(plan.haproxy, "haproxy")
    assert host_of("haproxy").process.filter(comm="haproxy"), "no haproxy process"


def test_haproxy_listens_on_its_sip_sockets(plan: SmokePlan,
                                            host_of: Callable[[str], Any]) -> None:
    listen = section(plan.haproxy, "haproxy").listen
    host = host_of("haproxy")
    closed = [spec for spec in listen if not host.socket(spec).is_listening]
    assert not closed, f"HAProxy is not listening on {closed}"


def with_basic_auth(url: str, user: str, password_env: str) -> urllib.request.Request:
    password = os.environ.get(password_env)
    if password is None:
        pytest.fail(f"{password_env} is not set")
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return urllib.request.Request(url, headers={"Authorization": f"Basic {token}"})


def test_haproxy_sees_opensips_backends_up(plan: SmokePlan) -> None:
    haproxy = section(plan.haproxy, "haproxy")
    request = with_basic_auth(haproxy.stats_csv_url, haproxy.stats_user,
                              haproxy.stats_password_env)
    with urllib.request.urlopen(request, timeout=5) as answer:
        rows = list(csv.DictReader(io.StringIO(answer.read().decode().lstrip("# "))))
    for backend in haproxy.backends:
        servers = {row["svname"]: row["status"] for row in rows
                   if row["pxname"] == backend and row["svname"] not in ("FRONTEND", "BACKEND")}
        up = [name for name, status in servers.items() if status.startswith("UP")]
        assert up, f"backend {backend}: no server UP ({servers or 'no servers'})"


def test_dragonfly_answers_and_refuses_strangers(plan: SmokePlan) -> None:
    """The breaker store is up, and its ACL is in force: a PING without an account is refused
    (NOAUTH); a PONG would mean anyone on the network could open the breaker."""
    address = split(section(plan.dragonfly_address, "dragonfly_address"))
    with socket.create_connection(address, timeout=5) as connection:
        connection.sendall(b"*1\r\n$4\r\nPING\r\n")
        answer = connection.recv(128)
    assert answer.startswith(b"-NOAUTH"), f"Dragonfly answered a stranger {answer!r}"


def test_database_accepts_a_connection(plan: SmokePlan) -> None:
    settings = section(plan.database, "database")
    host, port = split(settings.address)
    password = os.environ.get(settings.password_env)
    if password is None:
        pytest.fail(f"{settings.password_env} is not set")
    with psycopg.connect(host=host, port=port, dbname=settings.dbname, user=settings.user,
                         password=password, connect_timeout=5) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_config_file_is_the_rendered_one(config_file: ConfigFile,
                                         host_of: Callable[[str], Any]) -> None:
    file = host_of(config_file.role).file(config_file.path)
    assert file.exists, f"{config_file.role}: {config_file.path} is missing"
    assert file.sha256sum == config_file.sha256, (
        f"{config_file.role}: {config_file.path} differs from the ConfigMap the stack rendered")


def test_compliance_secrets_are_mounted_restrictively(plan: SmokePlan,
                                                      host_of: Callable[[str], Any]) -> None:
    compliance = section(plan.compliance, "compliance")
    host = host_of("compliance")
    problems = []
    for name in compliance.files:
        file = host.file(f"{compliance.secrets_dir}/{name}")
        if not file.exists:
            problems.append(f"{name}: missing")
        elif file.mode & (stat.S_IRWXO | stat.S_IWUSR | stat.S_IWGRP):
            problems.append(f"{name}: mode {file.mode:o} (writable or world-accessible)")
    assert not problems, "; ".join(problems)


def options_request(transport: str, local: tuple[str, int]) -> bytes:
    branch = f"z9hG4bK-smoke-{os.getpid()}-{time.monotonic_ns()}"
    # No user part: OpenSIPS answers keepalive OPTIONS (to itself) with 200 and any other
    # non-INVITE with 405 (a stand-in that answered both with 200 hid this until real pods).
    return (f"OPTIONS sip:acm.invalid SIP/2.0\r\n"
            f"Via: SIP/2.0/{transport} {local[0]}:{local[1]};branch={branch}\r\n"
            "Max-Forwards: 70\r\n"
            "From: <sip:smoke@acm.invalid>;tag=smoke\r\n"
            "To: <sip:ping@acm.invalid>\r\n"
            f"Call-ID: {branch}@smoke\r\n"
            "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode()


def test_sip_options_through_haproxy_tcp(plan: SmokePlan) -> None:
    address = split(section(plan.front_door, "front_door").sip_tcp_address)
    with socket.create_connection(address, timeout=5) as tcp:
        tcp.sendall(options_request("TCP", tcp.getsockname()))
        status = tcp.recv(4096).split(b"\r\n", 1)[0]
    assert status.startswith(b"SIP/2.0 200"), f"OPTIONS over TCP answered {status!r}"


def test_sip_options_over_the_udp_service(plan: SmokePlan) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.settimeout(3)
        udp.connect(split(section(plan.front_door, "front_door").sip_udp_address))
        udp.send(options_request("UDP", udp.getsockname()))
        try:
            status = udp.recv(4096).split(b"\r\n", 1)[0]
        except (TimeoutError, ConnectionRefusedError) as error:
            pytest.fail(f"no answer to OPTIONS over UDP: {error!r}")
    assert status.startswith(b"SIP/2.0 200"), f"OPTIONS over UDP answered {status!r}"


MI_VERSION_CALL = """
import base64, json, sys, urllib.request
password = open(sys.argv[3]).read().strip()
token = base64.b64encode(f"{sys.argv[2]}:{password}".encode()).decode()
request = urllib.request.Request(sys.argv[1], method="POST",
    data=json.dumps({"jsonrpc": "2.0", "method": "version", "id": 1}).encode(),
    headers={"Content-Type": "application/json", "Authorization": f"Basic {token}"})
print(urllib.request.urlopen(request, timeout=5).read().decode())
"""


def test_opensips_runs_and_listens_on_its_sip_sockets(
        plan: SmokePlan, host_of: Callable[[str], Any]) -> None:
    listen = section(plan.opensips, "opensips").listen
    host = host_of("opensips")
    assert host.process.filter(comm="opensips"), "no opensips process"
    closed = [spec for spec in listen if not host.socket(spec).is_listening]
    assert not closed, f"OpenSIPS is not listening on {closed}"


def test_opensips_mi_answers(plan: SmokePlan, host_of: Callable[[str], Any]) -> None:
    opensips = section(plan.opensips, "opensips")
    mi_url = opensips.mi_url
    # In the pod, with the account the sidecar uses (the password never leaves the pod).
    answer = host_of("opensips-mi").run("python3 -c %s %s %s %s", MI_VERSION_CALL, mi_url,
                                        opensips.mi_user, opensips.mi_password_file)
    assert answer.rc == 0, f"OpenSIPS MI at {mi_url} did not answer: {answer.stderr.strip()}"
    reply = json.loads(answer.stdout)
    assert "result" in reply, f"OpenSIPS MI version call failed: {reply}"


def test_acm_engines_report_healthy(plan: SmokePlan) -> None:
    urls = section(plan.acm_engine_health_urls, "acm_engine_health_urls")
    unhealthy = []
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                status = answer.status
        except urllib.error.HTTPError as error:
            status = error.code
        except OSError as error:
            unhealthy.append(f"{url}: {error}")
            continue
        if status != 200:
            unhealthy.append(f"{url}: HTTP {status}")
    assert not unhealthy, "ACM engine not healthy: " + "; ".join(unhealthy)
