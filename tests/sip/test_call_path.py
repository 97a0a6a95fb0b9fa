"""The call path end to end with real SIP: the real OpenSIPS 4.0.1 (scripts/opensips) running the
local stack's rendered config on loopback, Redis for the breaker state, SIPp stand-ins for the
ACM engine and the media gateway. The caller is 127.0.0.2, everything else 127.0.0.1, so the
caller's address is distinguishable from HAProxy's."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import rendering_of
from tests.sip.lab import (
    CALLER_ADDRESS,
    CLEAN_NUMBER,
    FRAUD_NUMBER,
    SCENARIOS,
    Ports,
    Processes,
    check_config,
    free_port,
    loopback_config,
    sipp,
    wait_for_port,
)

pytestmark = pytest.mark.slow


@dataclass
class Lab:
    directory: Path
    ports: Ports
    processes: Processes

    def call(self, number: str, scenario: str, port: int | None = None,
             transport: str = "u1") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sipp(), "-sf", str(SCENARIOS / scenario), "-s", number, "-i", CALLER_ADDRESS,
             "-p", str(free_port()), "-t", transport, "-m", "1", "-timeout", "20s",
             "-timeout_error", "-nostdin", f"127.0.0.1:{port or self.ports.sip}"],
            capture_output=True, text=True, timeout=60, check=False,
        )

    def messages(self, name: str) -> str:
        return (self.directory / f"{name}-messages.log").read_text(errors="replace")


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    ports = Ports()
    processes = Processes(tmp_path / "processes.log")
    try:
        processes.start_redis(ports.redis)
        for name, scenario in (("engine", "acm_engine.xml"), ("gateway", "media_gateway.xml")):
            processes.start(name, [
                sipp(), "-sf", str(SCENARIOS / scenario), "-i", "127.0.0.1",
                "-p", str(getattr(ports, name)), "-nostdin", "-trace_msg",
                "-message_file", str(tmp_path / f"{name}-messages.log")])
        config = loopback_config("local", tmp_path, ports, tls=None)
        checked = check_config(config)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        processes.start_opensips("opensips", config)
        wait_for_port(ports.sip)
        time.sleep(1)  # first dispatcher probe round
        yield Lab(tmp_path, ports, processes)
    finally:
        processes.stop_all()


def test_clean_call_completes(lab: Lab) -> None:
    result = lab.call(CLEAN_NUMBER, "caller.xml")
    assert result.returncode == 0, result.stdout + result.stderr
    # 302 from the engine, 200 and a BYE from the gateway that found its way back.
    assert "CSeq: 2 BYE" in lab.messages("gateway")


def test_fraud_call_is_declined(lab: Lab) -> None:
    result = lab.call(FRAUD_NUMBER, "caller_declined.xml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_calls_complete_unscreened_when_the_engine_is_gone(lab: Lab) -> None:
    lab.processes.stop("engine")
    # Each failed screening counts towards the breaker; after it opens, calls skip screening.
    for _ in range(6):
        lab.call(CLEAN_NUMBER, "caller.xml")
    result = lab.call(FRAUD_NUMBER, "caller.xml")
    assert result.returncode == 0, "fail-open: a call must complete while the breaker is open"


def test_the_engine_is_told_the_caller_behind_haproxy(lab: Lab, tmp_path: Path) -> None:
    haproxy = shutil.which("haproxy")
    assert haproxy, "haproxy is not installed: run ./scripts/setup"
    rendered = rendering_of("local").rendered_files()["haproxy.cfg"]
    front_port = free_port()
    config = rendered.split("\nfrontend sip_tcp", 1)[0]
    config += (
        f"\nfrontend sip_tcp\n    bind 127.0.0.1:{front_port}\n"
        "    default_backend opensips_sip_tcp\n"
        "\nbackend opensips_sip_tcp\n    balance leastconn\n    stick-table type ip size 1k\n"
        "    stick on src\n"
        f"    server opensips1 127.0.0.1:{lab.ports.proxy} send-proxy\n"
    )
    config = config.replace("stats socket", "# stats socket").replace(
        "maxconn 20000", "maxconn 1000")
    path = tmp_path / "haproxy.cfg"
    path.write_text(config)
    lab.processes.start("haproxy", [haproxy, "-db", "-f", str(path)])
    wait_for_port(front_port)
    result = lab.call(CLEAN_NUMBER, "caller.xml", port=front_port, transport="t1")
    assert result.returncode == 0, result.stdout + result.stderr
    messages = lab.messages("engine")
    invite = messages[messages.rfind("INVITE sip:"):]
    # OpenSIPS 4.0.1 sees HAProxy's 127.0.0.1 as $si on a PROXY socket; the caller's own
    # address is only in the PROXY header, and the config hands that to the engine.
    header = re.search(r"^X-ACM-Caller-IP: (\S+)", invite, re.M)
    assert header is not None, invite[:2000]
    assert header.group(1) == CALLER_ADDRESS
