"""Steady SIP load through the deployed platform's front door, counted.

SIPp on the host calls HAProxy's NodePort on the node's address at a fixed rate for a fixed
number of calls, each call on a TCP connection of its own (`-t tn`, as many interconnect
partners' trunks open them), so that HAProxy balances calls and a fault shows up per call.
Counted: INVITEs sent, calls completed (200, ACK, the gateway's BYE answered), calls failed,
the longest stretch of seconds in which calls failed, and the setup time (INVITE to 200).
"""

from __future__ import annotations

import math
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.cluster.kube import NODE_ADDRESS
from tests.sip.lab import CLEAN_NUMBER, SCENARIOS, free_port, sipp


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else math.nan


@dataclass(frozen=True)
class LoadResult:
    rate: int
    sent: int
    completed: int
    failed: int
    # The longest run of one-second periods in which at least one call failed.
    worst_gap_seconds: int
    setup_p50_ms: float
    setup_p99_ms: float
    setup_max_ms: float
    # The first lines of SIPp's error log: why calls failed.
    errors: tuple[str, ...] = ()

    def row(self, scenario: str) -> str:
        return (f"{scenario:<34} | {self.rate:4d}/s | sent {self.sent:6d} | completed "
                f"{self.completed:6d} | failed {self.failed:4d} | worst gap "
                f"{self.worst_gap_seconds:3d} s | setup p50 {self.setup_p50_ms:6.1f} ms p99 "
                f"{self.setup_p99_ms:7.1f} ms max {self.setup_max_ms:7.1f} ms")


class SteadyLoad:
    """Calls at `rate` per second until `calls` were placed; `result()` waits for the last."""

    def __init__(self, port: int, rate: int, calls: int, work: Path,
                 host: str = NODE_ADDRESS) -> None:
        self.rate, self.work = rate, work
        work.mkdir(parents=True, exist_ok=True)
        self.stats = work / "stats.csv"
        seconds = math.ceil(calls / rate)
        command = [sipp(), "-sf", str(SCENARIOS / "caller.xml"), "-s", CLEAN_NUMBER,
                   "-i", host, "-p", str(free_port()), "-t", "tn", "-max_socket", "10000",
                   "-r", str(rate), "-m", str(calls), "-l", str(rate * 20),
                   # A call waiting 10 s for its next message has failed (the engine timeout
                   # and one failover fit well inside).
                   "-recv_timeout", "10000", "-timeout", f"{seconds + 120}s", "-nostdin",
                   "-trace_stat", "-stf", str(self.stats), "-fd", "1",
                   "-trace_rtt", "-rtt_freq", "1", "-trace_err", f"{host}:{port}"]
        self.started = time.monotonic()
        self.process = subprocess.Popen(command, cwd=work, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True)

    def running_for(self) -> float:
        return time.monotonic() - self.started

    def result(self, timeout: float = 600) -> LoadResult:
        _, output = self.process.communicate(timeout=timeout)
        assert self.stats.exists(), f"SIPp wrote no statistics: {output[-2000:]}"
        header, *rows = self.stats.read_text().splitlines()
        names = header.split(";")
        periods = [dict(zip(names, row.split(";"), strict=False)) for row in rows]
        assert periods, f"SIPp wrote no statistics rows: {output[-2000:]}"
        last = periods[-1]
        worst = stretch = 0
        for period in periods:
            stretch = stretch + 1 if int(period["FailedCall(P)"]) > 0 else 0
            worst = max(worst, stretch)
        setup = []
        for rtt in self.work.glob("*_rtt.csv"):
            for line in rtt.read_text().splitlines()[1:]:
                fields = line.split(";")
                if len(fields) >= 3 and fields[2].strip() == "1":
                    setup.append(float(fields[1]))
        errors = tuple(line for log in sorted(self.work.glob("*_errors.log"))
                       for line in log.read_text(errors="replace").splitlines()
                       if line.strip() and not line.startswith("The following events"))[:5]
        if not errors and int(last["FailedCall(C)"]):
            # A connection the far end closed or reset is reported on SIPp's stderr only.
            errors = tuple(line for line in output.splitlines()
                           if line.strip() and not line.startswith("Resolving"))[-5:]
        return LoadResult(
            rate=self.rate, sent=int(last["OutgoingCall(C)"]),
            completed=int(last["SuccessfulCall(C)"]), failed=int(last["FailedCall(C)"]),
            worst_gap_seconds=worst, setup_p50_ms=percentile(setup, 0.5),
            setup_p99_ms=percentile(setup, 0.99), setup_max_ms=max(setup, default=math.nan),
            errors=errors)
