"""Load shedding on the real OpenSIPS 4.0.1, at a small scale: a pod admits new calls up to its
configured ceiling and refuses the excess at once with a stateless 503 and Retry-After, before
the screening transaction and any dialog, so the calls it admits still complete. The same trunk
stays under flood protection's own (higher) limit, which is unchanged."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from components.opensips.settings import LoadShedding
from tests.sip.burst import BurstCaller, Call
from tests.sip.lab import (
    CALLER_ADDRESS,
    Ports,
    Processes,
    check_config,
    loopback_config,
    statistic,
    wait_for_port,
)

pytestmark = pytest.mark.slow

CEILING = 20  # calls a second this pod admits
RETRY_AFTER = 2
OFFERED, SECONDS = 80, 3.0  # four times the ceiling, for three seconds


@pytest.fixture
def shedding_proxy(tmp_path: Path) -> Iterator[Ports]:
    ports = Ports()
    processes = Processes(tmp_path / "processes.log")
    try:
        processes.start_stand_ins(ports)
        config = loopback_config(
            "local", tmp_path, ports, tls=None, peer_cidrs=(f"{CALLER_ADDRESS}/32",),
            load_shedding=LoadShedding(calls_per_second=CEILING,
                                       retry_after_seconds=RETRY_AFTER))
        checked = check_config(config)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        processes.start_opensips("opensips", config)
        wait_for_port(ports.http)
        time.sleep(1)  # the first dispatcher probe round
        yield ports
    finally:
        processes.stop_all()


def test_the_excess_is_refused_at_once_and_admitted_calls_complete(
        shedding_proxy: Ports) -> None:
    caller = BurstCaller(("127.0.0.1", shedding_proxy.sip), address=CALLER_ADDRESS)
    try:
        calls = caller.run(OFFERED, SECONDS, settle=8.0)
    finally:
        caller.close()
    shed = [c for c in calls if c.status == 503]
    admitted = [c for c in calls if c.status == 200]
    print(f"\noffered {len(calls)} in {SECONDS:.0f} s at {OFFERED}/s, ceiling {CEILING}/s: "
          f"{len(admitted)} admitted, {len(shed)} shed, "
          f"{len(calls) - len(admitted) - len(shed)} other")
    assert len(calls) == OFFERED * SECONDS
    # Every call got a final answer: admitted or shed, nothing lost or failed otherwise.
    assert len(admitted) + len(shed) == len(calls), [c.status for c in calls
                                                     if c.status not in (200, 503)]
    # The ceiling holds per second (the pipe's window is one second; the burst spans up to
    # four windows).
    assert SECONDS * CEILING <= len(admitted) <= (SECONDS + 1) * CEILING
    # Shed calls are told when to come back, and told at once: no screening, no transaction.
    assert all(c.headers.get("retry-after") == str(RETRY_AFTER) for c in shed)
    shed_latency = sorted(c.latency for c in shed if c.latency is not None)
    p99 = shed_latency[int(0.99 * (len(shed_latency) - 1))]
    print(f"503 answer time: median {1000 * statistics.median(shed_latency):.1f} ms, "
          f"p99 {1000 * p99:.1f} ms")
    assert p99 < 0.05
    # Admitted calls are screened and complete: 200 through the gateway, its BYE answered.
    assert all(c.completed for c in admitted), sum(not c.completed for c in admitted)
    setup = sorted(c.latency for c in admitted if c.latency is not None)
    print(f"admitted setup time: median {1000 * statistics.median(setup):.1f} ms, "
          f"max {1000 * setup[-1]:.1f} ms")
    assert setup[-1] < 0.5
    # The metric the alert rule reads counts exactly the shed calls; no dialog was created for
    # them (calls_total counts admitted calls only).
    assert statistic(shedding_proxy.http, "acm_shed_calls_total") == len(shed)
    assert statistic(shedding_proxy.http, "acm_calls_total") == len(admitted)


def test_below_the_ceiling_nothing_is_shed(shedding_proxy: Ports) -> None:
    caller = BurstCaller(("127.0.0.1", shedding_proxy.sip), address=CALLER_ADDRESS)
    try:
        calls: list[Call] = caller.run(CEILING // 2, 2.0, settle=8.0)
    finally:
        caller.close()
    assert [c.status for c in calls] == [200] * len(calls)
    assert all(c.completed for c in calls)
    assert statistic(shedding_proxy.http, "acm_shed_calls_total") == 0
