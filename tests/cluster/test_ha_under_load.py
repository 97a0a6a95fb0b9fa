"""High availability measured while calls flow through the deployed local platform on the real
node: SIPp on the host at a steady 50 calls/s through HAProxy's NodePort, each call on its own
TCP connection, while one thing happens to the platform (`tests/cluster/faults.py`). Each test
prints its count (sent, completed, failed, worst gap, setup time) and asserts its goal:

1. an OpenSIPS rollout and a HAProxy rollout by `pulumi up`: no call fails;
2. an OpenSIPS container killed: only the calls in flight on it fail, and it is back in
   HAProxy's rotation afterwards;
3. an engine stand-in container killed: calls fail over to the other engine, none fails, and
   the breaker stays closed (no call goes out unscreened);
4. the Dragonfly stand-in killed: calls keep completing (a missing breaker store reads as
   closed), and the breaker works again once it is back.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.faults import (
    Platform,
    breaker_answers_again,
    breaker_keys,
    kill_container,
    rollout,
    wait_for,
)
from tests.cluster.kube import Cluster
from tests.conftest import rendering_of
from tests.engine import Engine

pytestmark = pytest.mark.slow
STACK = "local"
RATE = 50
# A call lasts about 0.3 s (setup, the gateway's 200 ms pause, its BYE); a pod killed holds at
# most the calls of its share of the last second.
IN_FLIGHT_BOUND = RATE


@pytest.fixture(scope="module")
def platform(control_plane: Path, engine: Engine) -> Iterator[Platform]:
    stack = engine.stack(STACK)
    stack.up(on_output=lambda _: None)
    deployed = Platform(stack, Cluster(control_plane), rendering_of(STACK))
    try:
        wait_for(deployed.whole, 180, "every workload ready")
        # Both OpenSIPS in both HAProxys' rotation before any load.
        wait_for(lambda: set(deployed.haproxy_servers_up().values()) == {
            len(deployed.pods("opensips"))}, 60, "every OpenSIPS UP in every HAProxy")
        yield deployed
    finally:
        stack.destroy(on_output=lambda _: None)


@pytest.mark.parametrize("part", ["opensips", "haproxy"])
def test_a_rollout_under_load_fails_no_call(platform: Platform, part: str,
                                            tmp_path: Path) -> None:
    outcome = rollout(platform, tmp_path, RATE, seconds=75, part=part)
    print(f"\n{outcome.row()} | {outcome.notes}")
    assert outcome.notes["replaced"], f"not every {part} pod was replaced"
    assert outcome.load.sent == RATE * 75
    assert outcome.load.failed == 0, (outcome.row(), outcome.load.errors)
    assert outcome.load.completed == outcome.load.sent, outcome.row()


def test_a_killed_opensips_costs_only_its_calls_in_flight(platform: Platform,
                                                          tmp_path: Path) -> None:
    outcome = kill_container(platform, tmp_path, RATE, 30, "opensips", "opensips")
    print(f"\n{outcome.row()} | {outcome.notes} | bound {IN_FLIGHT_BOUND}")
    assert outcome.load.failed <= IN_FLIGHT_BOUND, outcome.row()
    assert outcome.load.completed + outcome.load.failed == outcome.load.sent
    # Back in rotation: every HAProxy has both OpenSIPS UP again.
    wait_for(lambda: set(platform.haproxy_servers_up().values()) == {
        len(platform.pods("opensips"))}, 60, "the restarted OpenSIPS back in rotation")


def test_a_killed_engine_fails_over_with_the_breaker_closed(platform: Platform,
                                                            tmp_path: Path) -> None:
    outcome = kill_container(platform, tmp_path, RATE, 30, "acm-engine", "acm-engine")
    print(f"\n{outcome.row()} | {outcome.notes}")
    assert outcome.load.failed == 0, outcome.row()
    # Screened throughout: the breaker never opened, so no call went out unscreened.
    assert outcome.notes["unscreened"] == 0
    assert breaker_keys(platform) == {key: "0" for key in breaker_keys(platform)}
    # The failed-over calls waited for the engine timeout (2 s), not for a SIP retransmission
    # storm: every setup stayed within the 10 s a call may wait.
    assert math.isfinite(outcome.load.setup_max_ms) and outcome.load.setup_max_ms < 10_000


def test_a_killed_dragonfly_leaves_calls_completing(platform: Platform, tmp_path: Path) -> None:
    outcome = kill_container(platform, tmp_path, RATE, 30, "dragonfly", "dragonfly")
    print(f"\n{outcome.row()} | {outcome.notes}")
    assert outcome.load.failed == 0, outcome.row()
    assert breaker_answers_again(platform, tmp_path), "OpenSIPS ignores the breaker store"
