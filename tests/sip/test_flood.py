"""Flood protection under the real OpenSIPS: an interconnect partner (an address in the stack's
peer CIDRs) sends 50 calls per second and none is dropped; an unknown address sending the same
is cut to its per-second limit."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import rendering_of
from tests.sip.lab import (
    CLEAN_NUMBER,
    SCENARIOS,
    Ports,
    Processes,
    free_port,
    loopback_config,
    sipp,
    wait_for_port,
)

pytestmark = pytest.mark.slow
TRUNK, STRANGER = "127.0.0.2", "127.0.0.3"
RATE, SECONDS = 50, 4


def run_calls(source: str, port: int, directory: Path) -> tuple[int, int]:
    """(successful, failed) calls of `RATE` calls per second for `SECONDS` from `source`."""
    stats = directory / f"{source}.csv"
    subprocess.run(
        [sipp(), "-sf", str(SCENARIOS / "caller.xml"), "-s", CLEAN_NUMBER, "-i", source,
         "-p", str(free_port()), "-r", str(RATE), "-m", str(RATE * SECONDS), "-l", "500",
         "-timeout", f"{SECONDS + 12}s", "-recv_timeout", "6000", "-nostdin",
         "-trace_stat", "-stf", str(stats), "-fd", "100", f"127.0.0.1:{port}"],
        capture_output=True, text=True, timeout=120, check=False)
    header, *rows = stats.read_text().splitlines()
    columns = header.split(";")
    last = rows[-1].split(";")
    value = dict(zip(columns, last, strict=False))
    return int(value["SuccessfulCall(C)"]), int(value["FailedCall(C)"])


def test_a_trunk_is_not_flood_limited_and_a_stranger_is(tmp_path: Path) -> None:
    limit = rendering_of("local").config.opensips.flood_protection.requests_per_second
    assert limit < RATE
    ports = Ports()
    processes = Processes(tmp_path / "processes.log")
    try:
        processes.start_stand_ins(ports)
        config = loopback_config("local", tmp_path, ports, tls=None,
                                 peer_cidrs=(f"{TRUNK}/32",))
        processes.start_opensips("opensips", config)
        wait_for_port(ports.sip)
        time.sleep(1)
        trunk_ok, trunk_failed = run_calls(TRUNK, ports.sip, tmp_path)
        assert (trunk_ok, trunk_failed) == (RATE * SECONDS, 0)
        stranger_ok, stranger_failed = run_calls(STRANGER, ports.sip, tmp_path)
        # Dropped INVITEs are retransmitted and some get through a second later; the rest of
        # the excess fails.
        assert stranger_failed > 0 and stranger_ok + stranger_failed == RATE * SECONDS
        log = (tmp_path / "processes.log").read_text(errors="replace")
        assert re.search(rf"flood protection: dropping INVITE from {re.escape(STRANGER)}", log)
        assert f"dropping INVITE from {TRUNK}" not in log
    finally:
        processes.stop_all()
