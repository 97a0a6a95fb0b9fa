"""The SIPp scenarios themselves, played against each other without OpenSIPS.

The call-path harness needs an OpenSIPS binary; these checks need only SIPp, so the stand-ins
the harness relies on are proven on every run: the gateway answers and hangs up, the engine
declines fraud numbers.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.sip.lab import CALLER_ADDRESS, FRAUD_NUMBER, SCENARIOS, free_port

SIPP = shutil.which("sipp")
pytestmark = pytest.mark.skipif(SIPP is None, reason="sipp is not installed (sip-tester)")


def play(server_scenario: str, caller_scenario: str, number: str,
         tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], str]:
    assert SIPP is not None
    port = free_port()
    messages = tmp_path / "server-messages.log"
    server = subprocess.Popen(
        [SIPP, "-sf", str(SCENARIOS / server_scenario), "-i", "127.0.0.1", "-p", str(port),
         "-m", "1", "-nostdin", "-trace_msg", "-message_file", str(messages)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        caller = subprocess.run(
            [SIPP, "-sf", str(SCENARIOS / caller_scenario), "-s", number, "-i", CALLER_ADDRESS,
             "-p", str(free_port()), "-m", "1", "-timeout", "15s", "-timeout_error",
             "-nostdin", f"127.0.0.1:{port}"],
            capture_output=True, text=True, timeout=60, check=False)
        server.wait(timeout=20)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    return caller, messages.read_text() if messages.exists() else ""


def test_gateway_answers_and_hangs_up(tmp_path: Path) -> None:
    caller, messages = play("media_gateway.xml", "caller.xml", "+2348031234567", tmp_path)
    assert caller.returncode == 0, caller.stdout + caller.stderr
    assert "CSeq: 2 BYE" in messages


def test_engine_declines_fraud_numbers(tmp_path: Path) -> None:
    caller, messages = play("acm_engine.xml", "caller_declined.xml", FRAUD_NUMBER, tmp_path)
    assert caller.returncode == 0, caller.stdout + caller.stderr
    assert "X-ACM-Verdict: fraud" in messages


def test_engine_redirects_clean_numbers(tmp_path: Path) -> None:
    # A clean number gets 302, which the fraud caller scenario does not accept.
    caller, messages = play("acm_engine.xml", "caller_declined.xml", "+2348031234567",
                            tmp_path)
    assert caller.returncode != 0
    assert "302 Moved Temporarily" in messages
