"""Media gateways under the real OpenSIPS: a gateway that fails two calls in a row is disabled
(the calls go to the next gateway and still complete), and load_balancer's probe brings it back
when it answers again."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import rendering_of
from tests.sip.lab import (
    SCENARIOS,
    Ports,
    Processes,
    failing_engine,
    free_port,
    loopback_config,
    mi,
    place_call,
    sipp,
    wait_for_port,
)

pytestmark = pytest.mark.slow
PROBE_SECONDS = 3


def enabled(http_port: int) -> dict[str, str]:
    listed: Any = mi(http_port, "lb_list")
    return {d["uri"]: d["enabled"] for d in listed["Destinations"]}


def test_a_gateway_failing_twice_is_disabled_and_probed_back(tmp_path: Path) -> None:
    failures = rendering_of("local").config.opensips.gateway_failures_before_inactive
    assert failures == 2
    ports, failing = Ports(), free_port()
    processes = Processes(tmp_path / "processes.log")
    try:
        processes.start_redis(ports.redis)
        processes.start("engine", [sipp(), "-sf", str(SCENARIOS / "acm_engine.xml"), "-i",
                                   "127.0.0.1", "-p", str(ports.engine), "-nostdin"])
        # The failing gateway answers calls 503 (and probes 200: it recovers).
        processes.start("failing", [sipp(), "-sf", str(failing_engine(tmp_path, 503)), "-i",
                                    "127.0.0.1", "-p", str(failing), "-nostdin"])
        processes.start("healthy", [sipp(), "-sf", str(SCENARIOS / "media_gateway.xml"), "-i",
                                    "127.0.0.1", "-p", str(ports.gateway), "-nostdin"])
        config = loopback_config("local", tmp_path, ports, None,
                                 gateway_ports=[failing, ports.gateway],
                                 gateway_probe_seconds=PROBE_SECONDS)
        processes.start_opensips("opensips", config)
        wait_for_port(ports.http)
        time.sleep(1)
        failing_uri = f"sip:127.0.0.1:{failing}"
        assert enabled(ports.http)[failing_uri] == "yes"
        for call in range(1, failures + 1):
            result = place_call(ports.sip)
            # The call fails over to the healthy gateway and completes.
            assert result.returncode == 0, result.stdout + result.stderr
            assert enabled(ports.http)[failing_uri] == ("no" if call == failures else "yes")
        deadline = time.monotonic() + 2 * PROBE_SECONDS + 2
        while enabled(ports.http)[failing_uri] != "yes":
            assert time.monotonic() < deadline, "the probe did not bring the gateway back"
            time.sleep(0.5)
    finally:
        processes.stop_all()
