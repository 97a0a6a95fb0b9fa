"""The call path end to end with real SIP: OpenSIPS with the rendered config, SIPp stand-ins.

Runs when an `opensips` binary is on PATH (or `OPENSIPS_BIN` names one), with `sipp` and a
Redis-protocol server (`redis-server` or `dragonfly`) for the breaker state; otherwise it skips
and says which one is missing. Everything listens on loopback: the caller is 127.0.0.2, the
proxy and the stand-ins 127.0.0.1, so the caller's address is distinguishable from HAProxy's.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from components.opensips import OpenSipsArgs
from components.opensips_config import load_balancer_table, opensips_values, version_table
from components.templating import render
from stacks.config import Features, MediaGateway
from tests.conftest import rendering_of

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
OPENSIPS = os.environ.get("OPENSIPS_BIN") or shutil.which("opensips")
SIPP = shutil.which("sipp")
REDIS = shutil.which("redis-server") or shutil.which("dragonfly")
HAPROXY = shutil.which("haproxy")
CALLER_ADDRESS = "127.0.0.2"
CLEAN_NUMBER = "+2348031234567"
FRAUD_NUMBER = "+2349000000001"

missing = [name for name, found in (("opensips (or OPENSIPS_BIN)", OPENSIPS), ("sipp", SIPP),
                                    ("redis-server or dragonfly", REDIS)) if not found]
pytestmark = pytest.mark.skipif(bool(missing), reason=f"not installed: {', '.join(missing)}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


@dataclass
class Lab:
    directory: Path
    sip_port: int
    proxy_port: int
    engine_port: int
    gateway_port: int
    processes: dict[str, subprocess.Popen[bytes]]

    def call(self, number: str, scenario: str, port: int | None = None,
             transport: str = "u1") -> subprocess.CompletedProcess[str]:
        assert SIPP is not None
        return subprocess.run(
            [SIPP, "-sf", str(SCENARIOS / scenario), "-s", number, "-i", CALLER_ADDRESS,
             "-p", str(free_port()), "-t", transport, "-m", "1", "-timeout", "20s",
             "-timeout_error", "-nostdin", f"127.0.0.1:{port or self.sip_port}"],
            capture_output=True, text=True, timeout=60, check=False,
        )

    def stop(self, name: str) -> None:
        process = self.processes.pop(name)
        process.terminate()
        process.wait(timeout=10)


def loopback_config(lab_dir: Path, redis_port: int, ports: dict[str, int]) -> str:
    local = rendering_of("local").config
    settings = local.opensips.model_copy(update={
        "ports": local.opensips.ports.model_copy(update={
            "sip_udp": ports["sip"], "sip_tcp": ports["sip"], "proxy_tcp": ports["proxy"],
            "http": ports["http"]}),
        "media_gateways": [MediaGateway(host="127.0.0.1", port=ports["gateway"], capacity=10)],
    })
    args = OpenSipsArgs(
        namespace="lab", instance="lab", settings=settings,
        features=Features(sip_tls=False), priority_class="lab", node_topology_key="n",
        zone_topology_key="z", acm_engine_domain="engine.lab.invalid",
        acm_engine_backup_domain=None, acm_engine_port=ports["engine"],
        dragonfly_host="127.0.0.1", dragonfly_port=redis_port,
        sidecar_image="docker.io/library/python:3.12.8-slim", sip_peer_cidrs=["127.0.0.0/8"],
        tls_certificate="", tls_private_key="",
    )
    db_dir = lab_dir / "db"
    db_dir.mkdir()
    (db_dir / "load_balancer").write_text(load_balancer_table(args))
    (db_dir / "version").write_text(version_table())
    (db_dir / "dispatcher").write_text(
        "id(int,auto) setid(int) destination(string) socket(string,null) state(int) "
        "probe_mode(int) weight(string) priority(int) attrs(string,null) "
        "description(string,null)\n"
        f"1:1:sip\\:127.0.0.1\\:{ports['engine']}::0:0:1:0::engine\n"
    )
    values = opensips_values(args, str(lab_dir), str(db_dir), str(lab_dir),
                             listen_host="127.0.0.1")
    return render("opensips.cfg.j2", **values)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    assert OPENSIPS and SIPP and REDIS
    ports = {name: free_port() for name in ("sip", "proxy", "http", "engine", "gateway")}
    redis_port = free_port()
    processes: dict[str, subprocess.Popen[bytes]] = {}
    log = (tmp_path / "processes.log").open("wb")
    try:
        processes["redis"] = subprocess.Popen(
            [REDIS, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", ""],
            stdout=log, stderr=log)
        for name, scenario in (("engine", "acm_engine.xml"), ("gateway", "media_gateway.xml")):
            processes[name] = subprocess.Popen(
                [SIPP, "-sf", str(SCENARIOS / scenario), "-i", "127.0.0.1", "-p",
                 str(ports[name]), "-nostdin", "-trace_msg", "-message_file",
                 str(tmp_path / f"{name}-messages.log")],
                stdout=log, stderr=log)
        config = tmp_path / "opensips.cfg"
        config.write_text(loopback_config(tmp_path, redis_port, ports))
        check = subprocess.run([OPENSIPS, "-c", "-f", str(config)], capture_output=True,
                               text=True, check=False)
        assert check.returncode == 0, check.stdout + check.stderr
        processes["opensips"] = subprocess.Popen([OPENSIPS, "-F", "-f", str(config)],
                                                 stdout=log, stderr=log)
        wait_for_port(ports["sip"])
        time.sleep(1)  # first dispatcher probe round
        yield Lab(tmp_path, ports["sip"], ports["proxy"], ports["engine"], ports["gateway"],
                  processes)
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            process.wait(timeout=10)
        log.close()


def test_clean_call_completes(lab: Lab) -> None:
    result = lab.call(CLEAN_NUMBER, "caller.xml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_fraud_call_is_declined(lab: Lab) -> None:
    result = lab.call(FRAUD_NUMBER, "caller_declined.xml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_calls_complete_unscreened_when_the_engine_is_gone(lab: Lab) -> None:
    lab.stop("engine")
    # Each failed screening counts towards the breaker; after it opens, calls skip screening.
    for _ in range(6):
        lab.call(CLEAN_NUMBER, "caller.xml")
    result = lab.call(FRAUD_NUMBER, "caller.xml")
    assert result.returncode == 0, "fail-open: a call must complete while the breaker is open"


@pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed")
def test_caller_address_survives_haproxy(lab: Lab, tmp_path: Path) -> None:
    assert HAPROXY is not None
    rendered = rendering_of("local").rendered_files()["haproxy.cfg"]
    front_port = free_port()
    config = rendered.split("\nfrontend sip_tcp", 1)[0]
    config += (
        f"\nfrontend sip_tcp\n    bind 127.0.0.1:{front_port}\n"
        "    default_backend opensips_sip_tcp\n"
        "\nbackend opensips_sip_tcp\n    balance leastconn\n    stick-table type ip size 1k\n"
        "    stick on src\n"
        f"    server opensips1 127.0.0.1:{lab.proxy_port} send-proxy\n"
    )
    config = config.replace("stats socket", "# stats socket")
    path = tmp_path / "haproxy.cfg"
    path.write_text(config)
    proxy = subprocess.Popen([HAPROXY, "-db", "-f", str(path)])
    try:
        wait_for_port(front_port)
        result = lab.call(CLEAN_NUMBER, "caller.xml", port=front_port, transport="t1")
        assert result.returncode == 0, result.stdout + result.stderr
    finally:
        proxy.terminate()
        proxy.wait(timeout=10)
    messages = (lab.directory / "engine-messages.log").read_text()
    invite = messages[messages.rfind("INVITE sip:"):]
    # The caller's Via names no address (caller.invalid;rport), so the received= parameter
    # OpenSIPS adds is the source it believed: the caller's own, not HAProxy's 127.0.0.1.
    caller_via = re.search(r"^Via: SIP/2\.0/TCP caller\.invalid.*$", invite, re.M)
    assert caller_via is not None, invite[:2000]
    assert f"received={CALLER_ADDRESS}" in caller_via.group(), caller_via.group()
