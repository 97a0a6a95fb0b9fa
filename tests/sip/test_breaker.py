"""The shared circuit breaker under the real OpenSIPS: two proxies on one Redis, an engine that
answers every screening request with 500. The breaker must open after exactly the configured
number of failed calls (each engine failure counted once, whichever proxy saw it), and then
both proxies complete calls unscreened and count them."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import rendering_of
from tests.sip.lab import (
    CALLER_ADDRESS,
    CLEAN_NUMBER,
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
PROBE_SECONDS = 1
BREAKER_READ_SECONDS = 1


def redis_get(port: int, key: str) -> str:
    return redis_cli(port, "GET", key)


def test_the_breaker_opens_after_exactly_its_threshold_shared_by_two_proxies(
        tmp_path: Path) -> None:
    threshold = rendering_of("local").config.opensips.circuit_breaker.failure_threshold
    first, second = Ports(), Ports()
    second.redis, second.engine, second.gateway = first.redis, first.engine, first.gateway
    processes = Processes(tmp_path / "processes.log")
    try:
        processes.start_redis(first.redis)
        processes.start("engine", [
            sipp(), "-sf", str(failing_engine(tmp_path, 500)), "-i", "127.0.0.1",
            "-p", str(first.engine), "-nostdin"])
        processes.start("gateway", [
            sipp(), "-sf", str(SCENARIOS / "media_gateway.xml"), "-i", "127.0.0.1",
            "-p", str(first.gateway), "-nostdin"])
        for name, ports in (("a", first), ("b", second)):
            directory = tmp_path / name
            directory.mkdir()
            config = loopback_config("local", directory, ports, tls=None,
                                     dispatcher_probe_seconds=PROBE_SECONDS)
            processes.start_opensips(name, config)
            wait_for_port(ports.sip)
        time.sleep(PROBE_SECONDS + 0.5)

        for failed in range(1, threshold + 1):
            proxy = first if failed % 2 else second
            result = place_call(proxy.sip)
            # Fail-open: the caller never notices the engine's failure.
            assert result.returncode == 0, result.stdout + result.stderr
            if failed < threshold:
                assert redis_get(first.redis, "acm:breaker:failures") == str(failed)
                assert redis_get(first.redis, "acm:breaker:open") == ""
            # The engine is back in the set after the next probe round (every second).
            time.sleep(2 * PROBE_SECONDS + 0.5)
        assert redis_get(first.redis, "acm:breaker:open") == "1"

        before = {name: statistic(p.http, "acm_unscreened_calls_total")
                  for name, p in (("a", first), ("b", second))}
        for ports in (first, second):
            assert place_call(ports.sip).returncode == 0
        after = {name: statistic(p.http, "acm_unscreened_calls_total")
                 for name, p in (("a", first), ("b", second))}
        assert {name: after[name] - before[name] for name in after} == {"a": 1, "b": 1}
    finally:
        processes.stop_all()


def redis_set(port: int, key: str, value: str) -> None:
    redis_cli(port, "SET", key, value)


def many_calls(port: int, count: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sipp(), "-sf", str(SCENARIOS / "caller.xml"), "-s", CLEAN_NUMBER, "-i", CALLER_ADDRESS,
         "-p", str(free_port()), "-r", "50", "-m", str(count), "-timeout", "30s", "-nostdin",
         f"127.0.0.1:{port}"], capture_output=True, text=True, timeout=90, check=False)


def test_half_open_tries_about_its_share_and_a_good_trial_closes(tmp_path: Path) -> None:
    share = rendering_of("local").config.opensips.circuit_breaker.half_open_percent
    calls = 300
    processes = Processes(tmp_path / "processes.log")
    try:
        # 1. No engine in the set: every trial finds none and goes out unscreened, so the
        #    breaker stays half-open and the trials can be counted.
        idle = Ports()
        processes.start_redis(idle.redis)
        processes.start("gateway", [sipp(), "-sf", str(SCENARIOS / "media_gateway.xml"), "-i",
                                    "127.0.0.1", "-p", str(idle.gateway), "-nostdin"])
        (tmp_path / "idle").mkdir()
        config = loopback_config("local", tmp_path / "idle", idle, None, engine_ports=[])
        processes.start_opensips("idle", config)
        wait_for_port(idle.sip)
        redis_set(idle.redis, "acm:breaker:half_open", "1")
        # The proxy reads the breaker's state from the store once a second (its timer route).
        time.sleep(BREAKER_READ_SECONDS + 0.5)
        many_calls(idle.sip, calls)
        log = (tmp_path / "processes.log").read_text(errors="replace")
        trials = log.count("HALF_OPEN: trial call")
        expected = calls * share / 100
        # Binomial: within about three standard deviations of the configured share.
        spread = 3 * (calls * share / 100 * (1 - share / 100)) ** 0.5
        assert expected - spread <= trials <= expected + spread, trials
        assert statistic(idle.http, "acm_unscreened_calls_total") == calls
        processes.stop_all()

        # 2. A healthy engine: the first trial that reaches it closes the breaker, and from
        #    then on every call is screened.
        ports = Ports()
        processes.start_redis(ports.redis)
        processes.start("engine", [sipp(), "-sf", str(SCENARIOS / "acm_engine.xml"), "-i",
                                   "127.0.0.1", "-p", str(ports.engine), "-nostdin"])
        processes.start("gateway", [sipp(), "-sf", str(SCENARIOS / "media_gateway.xml"), "-i",
                                    "127.0.0.1", "-p", str(ports.gateway), "-nostdin"])
        (tmp_path / "healthy").mkdir()
        processes.start_opensips("healthy",
                                 loopback_config("local", tmp_path / "healthy", ports, None))
        wait_for_port(ports.sip)
        time.sleep(1)
        redis_set(ports.redis, "acm:breaker:half_open", "1")
        time.sleep(BREAKER_READ_SECONDS + 0.5)
        deadline = time.monotonic() + 60
        while redis_get(ports.redis, "acm:breaker:half_open"):
            assert time.monotonic() < deadline, "no trial closed the breaker"
            assert place_call(ports.sip).returncode == 0
        screened_before = statistic(ports.http, "acm_unscreened_calls_total")
        for _ in range(5):
            assert place_call(ports.sip).returncode == 0
        assert statistic(ports.http, "acm_unscreened_calls_total") == screened_before
    finally:
        processes.stop_all()


def start_screening_proxy(processes: Processes, ports: Ports, directory: Path) -> None:
    """The local stack's OpenSIPS with an answering engine and gateway, after its first
    dispatcher probes (Redis, if any, is the caller's to start)."""
    processes.start("engine", [sipp(), "-sf", str(SCENARIOS / "acm_engine.xml"), "-i",
                               "127.0.0.1", "-p", str(ports.engine), "-nostdin"])
    processes.start("gateway", [sipp(), "-sf", str(SCENARIOS / "media_gateway.xml"), "-i",
                                "127.0.0.1", "-p", str(ports.gateway), "-nostdin"])
    processes.start_opensips("opensips", loopback_config("local", directory, ports, None))
    wait_for_port(ports.sip)
    time.sleep(1)


def test_a_breaker_store_that_does_not_answer_is_skipped_while_calls_complete(
        tmp_path: Path) -> None:
    """Dragonfly away (nothing listens on its port): every call completes, screened, and the
    store is asked again only every few seconds, not by every call (each ask can cost a
    connect timeout, which stalled the workers and failed calls while Dragonfly restarted on
    the real node)."""
    from components.opensips.config_files import BREAKER_STORE_RETRY_SECONDS

    ports = Ports()  # ports.redis: nothing started there
    processes = Processes(tmp_path / "processes.log")
    try:
        start_screening_proxy(processes, ports, tmp_path)
        started = time.monotonic()
        result = many_calls(ports.sip, 200)
        elapsed = time.monotonic() - started
        assert result.returncode == 0, result.stdout[-2000:]
        assert statistic(ports.http, "acm_unscreened_calls_total") == 0
        log = (tmp_path / "processes.log").read_text(errors="replace")
        asks = log.count("breaker store not answering")
        assert 1 <= asks <= elapsed / BREAKER_STORE_RETRY_SECONDS + 2, (asks, elapsed)
    finally:
        processes.stop_all()


def store_commands(port: int) -> dict[str, int]:
    """How many times each command reached the store since its statistics were reset."""
    counts = {}
    for line in redis_cli(port, "INFO", "commandstats").splitlines():
        if line.startswith("cmdstat_"):
            name, fields = line.removeprefix("cmdstat_").split(":", 1)
            counts[name] = int(fields.split(",")[0].removeprefix("calls="))
    return counts


def test_calls_do_not_ask_the_store_and_another_proxys_open_is_seen_within_a_second(
        tmp_path: Path) -> None:
    """The breaker's state is read by each proxy's timer once a second, not by every call: 200
    calls cost the store no more reads than the seconds they took; an OPEN that another
    replica wrote turns this proxy's calls unscreened within about a second."""
    ports = Ports()
    processes = Processes(tmp_path / "processes.log")
    try:
        processes.start_redis(ports.redis)
        start_screening_proxy(processes, ports, tmp_path)
        redis_cli(ports.redis, "CONFIG", "RESETSTAT")
        started = time.monotonic()
        result = many_calls(ports.sip, 200)
        elapsed = time.monotonic() - started
        assert result.returncode == 0, result.stdout[-2000:]
        reads = store_commands(ports.redis).get("get", 0)
        # The timer reads `open`, and `half_open` when `open` is absent: two a second.
        assert reads <= 2 * (elapsed + 1), (reads, elapsed)
        assert statistic(ports.http, "acm_unscreened_calls_total") == 0

        redis_set(ports.redis, "acm:breaker:half_open", "1")
        redis_cli(ports.redis, "SET", "acm:breaker:open", "1", "EX", "60")
        time.sleep(BREAKER_READ_SECONDS + 0.5)
        for _ in range(3):
            assert place_call(ports.sip).returncode == 0
        assert statistic(ports.http, "acm_unscreened_calls_total") == 3
        assert statistic(ports.http, "acm_breaker_open") == 1
    finally:
        processes.stop_all()
