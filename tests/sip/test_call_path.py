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

from tests.sip.lab import (
    CALLER_ADDRESS,
    CLEAN_NUMBER,
    FRAUD_NUMBER,
    Ports,
    Processes,
    check_config,
    free_port,
    loopback_config,
    loopback_haproxy,
    place_call,
    statistic,
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
        return place_call(port or self.ports.sip, number, scenario, transport)

    def messages(self, name: str) -> str:
        return (self.directory / f"{name}-messages.log").read_text(errors="replace")


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    ports = Ports()
    processes = Processes(tmp_path / "processes.log")
    try:
        processes.start_stand_ins(ports, messages=tmp_path)
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


def test_fraud_call_is_declined_and_counted(lab: Lab) -> None:
    result = lab.call(FRAUD_NUMBER, "caller_declined.xml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert statistic(lab.ports.http, "acm_fraud_detected_total") == 1
    assert "INVITE sip:" not in (lab.directory / "gateway-messages.log").read_text()


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
    front_port = free_port()
    path = tmp_path / "haproxy.cfg"
    path.write_text(loopback_haproxy("local", {"sip_tcp": front_port},
                                     {"opensips_sip_tcp": lab.ports.proxy}))
    lab.processes.start("haproxy", [haproxy, "-db", "-f", str(path)])
    wait_for_port(front_port)
    # A TCP connection of the call's own that listens nowhere (`tn`): the gateway's BYE can
    # only reach the caller back through HAProxy on that connection (fix_nated_contact).
    result = lab.call(CLEAN_NUMBER, "caller.xml", port=front_port, transport="tn")
    assert result.returncode == 0, result.stdout + result.stderr
    messages = lab.messages("engine")
    invite = messages[messages.rfind("INVITE sip:"):]
    # OpenSIPS 4.0.1 sees HAProxy's 127.0.0.1 as $si on a PROXY socket; the caller's own
    # address is only in the PROXY header, and the config hands that to the engine.
    header = re.search(r"^X-ACM-Caller-IP: (\S+)", invite, re.M)
    assert header is not None, invite[:2000]
    assert header.group(1) == CALLER_ADDRESS


def tls_invite(port: int, number: str) -> str:
    """An INVITE over TLS 1.3 from the caller's address; the final answer's status line.
    (Debian's SIPp has no TLS transport, so this one caller is written here.)"""
    import socket
    import ssl
    import uuid

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the server's identity is not what this tests
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    call_id = uuid.uuid4().hex
    invite = (
        f"INVITE sip:{number}@opensips.invalid SIP/2.0\r\n"
        f"Via: SIP/2.0/TLS caller.invalid;branch=z9hG4bK-{call_id};rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:caller@caller.invalid>;tag=tls-caller\r\n"
        f"To: <sip:{number}@opensips.invalid>\r\n"
        f"Call-ID: {call_id}@caller.invalid\r\n"
        "CSeq: 1 INVITE\r\n"
        f"Contact: <sip:caller@{CALLER_ADDRESS};transport=tls>\r\n"
        "Content-Length: 0\r\n\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=10,
                                  source_address=(CALLER_ADDRESS, 0)) as raw, \
            context.wrap_socket(raw) as tls:
        tls.sendall(invite.encode())
        received = ""
        while True:
            received += tls.recv(65536).decode(errors="replace")
            finals = re.findall(r"^SIP/2\.0 ([2-6]\d\d .*)$", received, re.M)
            if finals:
                return str(finals[0]).strip()


def test_the_engine_is_told_the_caller_behind_haproxy_over_tls(tmp_path: Path) -> None:
    import trustme

    haproxy = shutil.which("haproxy")
    assert haproxy, "haproxy is not installed: run ./scripts/setup"
    issued = trustme.CA().issue_cert("opensips.lab.invalid")
    issued.private_key_pem.write_to_path(tmp_path / "key.pem")
    issued.cert_chain_pems[0].write_to_path(tmp_path / "cert.pem")
    ports = Ports()
    processes = Processes(tmp_path / "processes.log")
    try:
        processes.start_stand_ins(ports, messages=tmp_path)
        config = loopback_config("prod", tmp_path, ports,
                                 tls=(tmp_path / "cert.pem", tmp_path / "key.pem"))
        processes.start_opensips("opensips", config)
        wait_for_port(ports.http)
        # The rendered HAProxy front door, TLS passed through with the PROXY header.
        front = free_port()
        (tmp_path / "haproxy.cfg").write_text(loopback_haproxy(
            "prod", {"sip_tls": front}, {"opensips_sip_tls": ports.proxy_tls},
            check_port=ports.proxy))
        processes.start("haproxy", [haproxy, "-db", "-f", str(tmp_path / "haproxy.cfg")])
        wait_for_port(front)
        time.sleep(1)
        assert tls_invite(front, CLEAN_NUMBER).startswith("200")
        messages = (tmp_path / "engine-messages.log").read_text(errors="replace")
        invite = messages[messages.rfind("INVITE sip:"):]
        header = re.search(r"^X-ACM-Caller-IP: (\S+)", invite, re.M)
        assert header is not None, invite[:2000]
        assert header.group(1) == CALLER_ADDRESS
    finally:
        processes.stop_all()
