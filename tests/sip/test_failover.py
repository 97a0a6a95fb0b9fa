"""Engine failover and the standby set under the real OpenSIPS: an engine that answers 5xx, does
not answer (OpenSIPS's own 408) or answers a 6xx other than the fraud verdict is skipped for the
next one; the standby engines are used only when no active engine is usable."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import rendering_of
from tests.sip.lab import (
    SCENARIOS,
    Ports,
    Processes,
    failing_engine,
    free_port,
    loopback_config,
    place_call,
    redis_cli,
    sipp,
    statistic,
    wait_for_port,
)

pytestmark = pytest.mark.slow


@dataclass
class Stage:
    directory: Path
    ports: Ports
    processes: Processes

    def call(self) -> subprocess.CompletedProcess[str]:
        return place_call(self.ports.sip)

    def invites(self, name: str) -> int:
        """Calls the stand-in was asked to screen (retransmissions of one INVITE count once)."""
        path = self.directory / f"{name}-messages.log"
        if not path.exists():
            return 0
        calls = re.findall(r"^INVITE sip:.*?^Call-ID:\s*(\S+)", path.read_text(errors="replace"),
                           re.M | re.S)
        return len(set(calls))


@pytest.fixture
def stage(tmp_path: Path) -> Iterator[Stage]:
    processes = Processes(tmp_path / "processes.log")
    try:
        yield Stage(tmp_path, Ports(), processes)
    finally:
        processes.stop_all()


def start_engine(stage: Stage, name: str, port: int, scenario: Path) -> None:
    stage.processes.start(name, [
        sipp(), "-sf", str(scenario), "-i", "127.0.0.1", "-p", str(port),
        "-nostdin", "-trace_msg", "-message_file", str(stage.directory / f"{name}-messages.log")])


def start_proxy(stage: Stage, engine_ports: list[int], backup_ports: list[int] | None = None
                ) -> None:
    stage.processes.start_redis(stage.ports.redis)
    stage.processes.start("gateway", [
        sipp(), "-sf", str(SCENARIOS / "media_gateway.xml"), "-i", "127.0.0.1",
        "-p", str(stage.ports.gateway), "-nostdin"])
    config = loopback_config("local", stage.directory, stage.ports, tls=None,
                             engine_ports=engine_ports, backup_ports=backup_ports)
    stage.processes.start_opensips("opensips", config)
    wait_for_port(stage.ports.sip)
    time.sleep(1)


@pytest.mark.parametrize("failure", ["503", "408 (no answer)", "606"])
def test_a_failing_engine_is_skipped_for_the_next_one(stage: Stage, failure: str) -> None:
    failing, healthy = free_port(), free_port()
    scenario = (SCENARIOS / "silent.xml" if failure.startswith("408")
                else failing_engine(stage.directory, int(failure)))
    start_engine(stage, "failing", failing, scenario)
    start_engine(stage, "healthy", healthy, SCENARIOS / "acm_engine.xml")
    start_proxy(stage, [failing, healthy])
    for _ in range(2):
        result = stage.call()
        assert result.returncode == 0, result.stdout + result.stderr
    # Round robin sends one of the two calls to the failing engine first; it fails over to
    # the healthy one, and the failing engine is left out until its next probe.
    assert stage.invites("failing") == 1, failure
    assert stage.invites("healthy") == 2, failure
    assert statistic(stage.ports.http, "acm_failover_events_total") == 1
    assert statistic(stage.ports.http, "acm_unscreened_calls_total") == 0


def test_the_standby_set_is_used_only_when_no_active_engine_is_usable(stage: Stage) -> None:
    active, standby = free_port(), free_port()
    start_engine(stage, "active", active, SCENARIOS / "acm_engine.xml")
    start_engine(stage, "standby", standby, SCENARIOS / "acm_engine.xml")
    start_proxy(stage, [active], [standby])
    for _ in range(2):
        assert stage.call().returncode == 0
    assert (stage.invites("active"), stage.invites("standby")) == (2, 0)

    stage.processes.stop("active")
    # The first call finds the active engine silent (408) and goes out unscreened; from then
    # on the active set has no usable destination and the standby engine screens.
    assert stage.call().returncode == 0
    assert stage.call().returncode == 0
    assert stage.invites("standby") == 1
    assert statistic(stage.ports.http, "acm_unscreened_calls_total") == 1


def test_calls_rescued_by_failover_do_not_count_towards_the_breaker(stage: Stage) -> None:
    """One engine silent (a killed pod), the other screening: every call completes screened,
    and the shared breaker's failure count stays empty, so a lost engine cannot open the
    breaker for every replica while another engine answers."""
    silent, healthy = free_port(), free_port()
    start_engine(stage, "silent", silent, SCENARIOS / "silent.xml")
    start_engine(stage, "healthy", healthy, SCENARIOS / "acm_engine.xml")
    start_proxy(stage, [silent, healthy])
    threshold = rendering_of("local").config.opensips.circuit_breaker.failure_threshold
    for _ in range(threshold + 1):
        result = stage.call()
        assert result.returncode == 0, result.stdout + result.stderr
    assert statistic(stage.ports.http, "acm_failover_events_total") >= 1
    assert statistic(stage.ports.http, "acm_unscreened_calls_total") == 0
    for key in ("acm:breaker:failures", "acm:breaker:open"):
        assert redis_cli(stage.ports.redis, "EXISTS", key) == "0", key
