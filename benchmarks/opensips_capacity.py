"""Benchmark: what one OpenSIPS 4.0.1 core carries (screened path and plain relay), measured so
that it repeats, and what happens past it with load shedding.

Method. OpenSIPS runs on core 0 (`taskset -c 0`); the SIPp caller, the SIPp stand-ins for the
ACM engine and the media gateway, and Redis run on core 1, so the proxy and its load do not
take turns on the same cores (the old figures did, and did not repeat). Each path is ramped
three times: coarse steps (x1.25) to the first rate over 0.1 % failed (a failing rate is run
again and decided by two runs of three), then 5 % steps from the last good rate. Every run of a
rate gets a fresh proxy and fresh stand-ins: past the knee, an unprotected proxy keeps what an
overloaded run left (INVITE transactions waiting out their timers, dialogs whose BYE was lost,
retransmissions) and fails the next, lower rate too, which is how the fine steps after a
failing rate once failed at rates that pass on their own. A ramp's capacity is its highest rate
under 0.1 % failed; the median of three and the spread ((max - min) / median) are printed, with what
limited each ramp at its first failing rate (core 0 busy: OpenSIPS's CPU; core 1 busy: the
generators'; shared memory used).

Overload. The screened config with load shedding at 90 % of the measured capacity (the pod's
ceiling, `opensips.loadShedding.callsPerSecond`, as the stacks set theirs) is offered 1x, 2x and
4x the capacity: for each, offered, completed, shed (503 + Retry-After), failed, completed calls
per second against capacity, the setup time of admitted calls (p50/p95/p99, INVITE to 200) and
SIPp's retransmissions. Goal (issue #24): at 2x and 4x, completed >= 90 % of capacity.

Where the time goes (`--profile`). At one steady rate below the knee (`--profile-rate`, the
same for both paths): OpenSIPS's CPU per call for the relay and the screened path, and
`perf record` of core 0 (OpenSIPS alone on it) for each, the top functions side by side
(Debian's linux-perf; without it the table is left out and says so). Then what each piece of
the screened route costs: the rendered config with that piece taken out (a measurement only:
such a route is not one to deploy), CPU per call at the same rate, median of three fresh labs;
the difference to the whole route is the piece's cost.

Over TCP and TLS (`--tls`). The interconnect's way in: the screened call through the rendered
HAProxy (`send-proxy`) into OpenSIPS's PROXY-protocol TCP and TLS sockets, each call on a
connection of its own (a partner that opens one per call, the costly case: each TLS call is a
TLS 1.3 handshake in OpenSIPS), with the caller stand-in of tests/sip/callers.py and the
recording engine (every call answered 603). Printed per transport, median of `--runs` fresh
labs: OpenSIPS's and HAProxy's CPU per call, the calls a core-second they leave, failed calls;
the TLS row's difference to the TCP row is the handshake's cost. The caller (Python) shares the
two cores, so the calls a second it reaches are not a capacity; CPU per call is the figure.

Run: .venv/bin/python benchmarks/opensips_capacity.py [--seconds 6] [--runs 3]
     [--paths relay,screened] [--overload 1,2,4] [--profile] [--profile-rate 900]
     [--tls] [--tls-calls 3000]
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from components.opensips.settings import (
    DEFAULT_TCP_IO_THREADS,
    SCREENED_CPS_PER_CORE,
    UDP_RECEIVE_BUFFER_BYTES,
    FloodProtection,
    LoadShedding,
)
from tests.conftest import rendering_of
from tests.sip.callers import CallerLab, opensips_build
from tests.sip.lab import (
    CALLER_ADDRESS,
    CLEAN_NUMBER,
    SCENARIOS,
    Ports,
    Processes,
    free_port,
    loopback_config,
    mi,
    opensips_modules,
    sipp,
    statistic,
    wait_for_port,
)

PROXY_CORE, LOAD_CORE = "0", "1"
SHARED_MIB, PRIVATE_MIB = 1024, 16
FAILED_LIMIT = 0.001
SHED_AT = 0.9
# No shedding while capacity is measured: a ceiling far above any rate here.
UNLIMITED = 64 * SCREENED_CPS_PER_CORE
TRUNK = FloodProtection(requests_per_second=30, trunk_requests_per_second=UNLIMITED)
START = {"relay": 1000, "screened": 400}

# The same UDP receive buffer as the screened config's, so that the ratio compares the work.
PLAIN_RELAY = """
mpath = "{modules}"
log_level = 2
maxbuffer = {receive_buffer}
udp_workers = 8
socket = udp:127.0.0.1:{sip}
loadmodule "proto_udp.so"
loadmodule "signaling.so"
loadmodule "sl.so"
loadmodule "tm.so"
loadmodule "rr.so"
loadmodule "maxfwd.so"
loadmodule "sipmsgops.so"
loadmodule "httpd.so"
modparam("httpd", "ip", "127.0.0.1")
modparam("httpd", "port", {http})
loadmodule "mi_http.so"
route {{
    if (!mf_process_maxfwd_header(10)) {{ send_reply(483, "Too Many Hops"); exit; }}
    if (has_totag()) {{
        if (loose_route()) {{ t_relay(); exit; }}
        if (is_method("ACK") && t_check_trans()) t_relay();
        exit;
    }}
    if (is_method("CANCEL")) {{ if (t_check_trans()) t_relay(); exit; }}
    t_check_trans();
    record_route();
    $du = "sip:127.0.0.1:{gateway}";
    t_relay();
}}
"""


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of processes and their children, from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    every = list(pids)
    for pid in pids:
        every += [int(p) for p in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True,
                                                 text=True).stdout.split()]
    total = 0
    for pid in every:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / ticks


@dataclass
class Step:
    rate: int
    calls: int
    failed: int
    proxy_busy: float  # share of core 0
    load_busy: float  # share of core 1
    shared_used: float  # share of OpenSIPS's shared memory

    @property
    def failed_share(self) -> float:
        return self.failed / self.calls if self.calls else 1.0

    def limit(self) -> str:
        figures = {"OpenSIPS CPU (core 0)": self.proxy_busy,
                   "load generators' CPU (core 1)": self.load_busy,
                   "OpenSIPS shared memory": self.shared_used}
        name = max(figures, key=lambda key: figures[key])
        return (f"{name} at {100 * figures[name]:.0f} % (core 0 {100 * self.proxy_busy:.0f} %, "
                f"core 1 {100 * self.load_busy:.0f} %, shared memory "
                f"{100 * self.shared_used:.0f} %)")


class Lab:
    """One OpenSIPS on core 0 with its stand-ins on core 1, for one ramp or one overload run."""

    def __init__(self, name: str, config: Path, ports: Ports, work: Path, engine: bool) -> None:
        self.ports, self.work = ports, work
        self.processes = Processes(work / f"{name}.log")
        self.processes.start_redis(ports.redis, cpus=LOAD_CORE)
        self.load_pids = [self.processes.running["redis"].pid]
        roles = [("gateway", "media_gateway.xml", ports.gateway)]
        if engine:
            roles.append(("engine", "acm_engine.xml", ports.engine))
        for role, scenario, port in roles:
            process = self.processes.start(role, [
                sipp(), "-sf", str(SCENARIOS / scenario), "-i", "127.0.0.1", "-p", str(port),
                "-nostdin", "-buff_size", "4194304"], cpus=LOAD_CORE)
            self.load_pids.append(process.pid)
        self.main = self.processes.start_opensips(name, config, (SHARED_MIB, PRIVATE_MIB),
                                                  cpus=PROXY_CORE)
        wait_for_port(ports.http)
        time.sleep(1.5)

    def close(self) -> None:
        self.processes.stop_all()

    def offer(self, rate: int, seconds: int, scenario: str = "caller.xml",
              ) -> tuple[dict[str, str], tuple[float, float], Path]:
        """One SIPp caller run on core 1: its last cumulative statistics; the busy share of
        core 0 (OpenSIPS) and core 1 (caller and stand-ins) over the seconds it sends (the
        calls' drain after it is left out, or the shares would read low); the folder holding
        its response-time file."""
        run = self.work / f"caller-{rate}-{time.monotonic_ns()}"
        run.mkdir()
        stats = run / "stats.csv"
        command = ["taskset", "-c", LOAD_CORE, sipp(), "-sf", str(SCENARIOS / scenario),
                   "-s", CLEAN_NUMBER, "-i", CALLER_ADDRESS, "-p", str(free_port()),
                   "-r", str(rate), "-m", str(rate * seconds), "-l", str(rate * 4),
                   "-timeout", f"{seconds + 30}s", "-recv_timeout", "5000", "-nostdin",
                   "-trace_stat", "-stf", str(stats), "-fd", "60", "-buff_size", "4194304",
                   "-trace_rtt", "-rtt_freq", "1", f"127.0.0.1:{self.ports.sip}"]
        proxy_before, load_before = cpu_seconds([self.main.pid]), cpu_seconds(self.load_pids)
        started = time.monotonic()
        caller = subprocess.Popen(command, cwd=run, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        time.sleep(seconds)
        window = time.monotonic() - started
        proxy = cpu_seconds([self.main.pid]) - proxy_before
        load = cpu_seconds([*self.load_pids, caller.pid]) - load_before
        _, _, _ = os.wait4(caller.pid, 0)
        caller.returncode = 0  # reaped above
        header, *rows = stats.read_text().splitlines()
        last = dict(zip(header.split(";"), rows[-1].split(";"), strict=False))
        return last, (proxy / window, load / window), run

    def step(self, rate: int, seconds: int) -> Step:
        stats, (proxy_busy, load_busy), _ = self.offer(rate, seconds)
        sizes = mi(self.ports.http, "get_statistics",
                   {"statistics": ["max_used_size", "total_size"]})
        used = (int(sizes.get("shmem:max_used_size", 0)) / int(sizes["shmem:total_size"])
                if isinstance(sizes, dict) else 0.0)
        ok, failed = int(stats["SuccessfulCall(C)"]), int(stats["FailedCall(C)"])
        return Step(rate, ok + failed, failed, proxy_busy, load_busy, used)


def on_a_fresh_lab(new_lab: Callable[[], Lab], rate: int, seconds: int) -> Step:
    lab = new_lab()
    try:
        return lab.step(rate, seconds)
    finally:
        lab.close()


def passes(new_lab: Callable[[], Lab], name: str, rate: int, seconds: int) -> tuple[bool, Step]:
    """One rate, decided by two runs out of three: a single hiccup (one burst of
    retransmissions, a stray process on a core) neither passes nor fails a rate on its own.
    A first run under the limit is taken as it is; every run is printed."""
    verdicts: list[bool] = []
    step = on_a_fresh_lab(new_lab, rate, seconds)
    while True:
        report(name, step)
        verdicts.append(step.failed_share < FAILED_LIMIT)
        if verdicts == [True] or verdicts.count(True) == 2:
            return True, step
        if verdicts.count(False) == 2:
            return False, step
        step = on_a_fresh_lab(new_lab, rate, seconds)


def ramp(new_lab: Callable[[], Lab], name: str, start: int,
         seconds: int) -> tuple[int, Step | None]:
    """One ramp's capacity: coarse steps (x1.25) to the first rate that fails twice,
    then 5 % steps from the last good one. Returns (capacity, the first failing step)."""
    good, failing, rate = 0, None, start
    while failing is None:
        ok, step = passes(new_lab, name, rate, seconds)
        if ok:
            good, rate = rate, int(rate * 1.25)
        else:
            failing = step
    rate = int(good * 1.05)
    while good and rate < failing.rate:
        ok, step = passes(new_lab, name, rate, seconds)
        if not ok:
            failing = step
            break
        good, rate = rate, int(rate * 1.05)
    return good, failing


def report(name: str, step: Step) -> None:
    print(f"    {name:9} {step.rate:6d} CPS: {step.failed:6d}/{step.calls:7d} failed "
          f"({100 * step.failed_share:6.2f} %), core 0 {100 * step.proxy_busy:3.0f} %, "
          f"core 1 {100 * step.load_busy:3.0f} %", flush=True)


WORKERS = 8  # staging and prod run 8 (up to 16): a worker waits on each Dragonfly read


def screened_config(work: Path, ports: Ports, ceiling: int) -> Path:
    directory = work / f"screened-{ports.sip}-{time.monotonic_ns()}"
    directory.mkdir()
    # The CPU limit stack validation asks for this ceiling (OpenSIPS still runs on one core).
    local = rendering_of("local").config.opensips.resources
    cores = str(math.ceil(ceiling / SCREENED_CPS_PER_CORE))
    resources = local.model_copy(update={"limits": local.limits.model_copy(
        update={"cpu": cores})})
    return loopback_config(
        "local", directory, ports, tls=None, peer_cidrs=(f"{CALLER_ADDRESS}/32",),
        udp_workers=WORKERS, max_udp_workers=WORKERS, flood_protection=TRUNK,
        resources=resources,
        load_shedding=LoadShedding(calls_per_second=ceiling, retry_after_seconds=2))


def relay_config(work: Path, ports: Ports) -> Path:
    path = work / f"relay-{ports.sip}-{time.monotonic_ns()}.cfg"
    path.write_text(PLAIN_RELAY.format(modules=opensips_modules(), sip=ports.sip,
                                       receive_buffer=UDP_RECEIVE_BUFFER_BYTES,
                                       http=ports.http, gateway=ports.gateway))
    return path


def capacity(path: str, runs: int, seconds: int, work: Path) -> list[int]:
    found = []
    labs = 0

    def new_lab() -> Lab:
        nonlocal labs
        labs += 1
        ports = Ports()
        config = (screened_config(work, ports, UNLIMITED) if path == "screened"
                  else relay_config(work, ports))
        return Lab(f"{path}-{labs}", config, ports, work, engine=path == "screened")

    for run in range(1, runs + 1):
        print(f"  {path}, ramp {run} of {runs}:", flush=True)
        good, failing = ramp(new_lab, path, START[path], seconds)
        limit = failing.limit() if failing else "none reached"
        print(f"  {path} ramp {run}: {good} CPS; limited at {failing.rate if failing else '-'} "
              f"CPS by {limit}", flush=True)
        found.append(good)
    return found


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def overload(capacity: int, ceiling: int, factors: list[int], seconds: int,
             work: Path) -> list[str]:
    ports = Ports()
    lab = Lab("overload", screened_config(work, ports, ceiling), ports, work, engine=True)
    rows = []
    try:
        for factor in factors:
            offered_rate = capacity * factor
            shed_before = statistic(ports.http, "acm_shed_calls_total")
            stats, (proxy_busy, load_busy), run = lab.offer(offered_rate, seconds,
                                                    "caller_sheddable.xml")
            shed = statistic(ports.http, "acm_shed_calls_total") - shed_before
            ok, failed = int(stats["SuccessfulCall(C)"]), int(stats["FailedCall(C)"])
            offered = ok + failed
            completed = ok - shed
            retransmissions = int(stats.get("Retransmissions(C)", "0") or 0)
            setup = []
            for rtt in run.glob("*_rtt.csv"):
                for line in rtt.read_text().splitlines()[1:]:
                    fields = line.split(";")
                    if len(fields) >= 3 and fields[2].strip() == "1":
                        setup.append(float(fields[1]))
            per_second = completed / seconds
            rows.append(
                f"  {factor}x {offered_rate:6d} CPS | offered {offered:7d} | completed "
                f"{completed:7d} ({per_second:7.0f}/s, {100 * per_second / capacity:5.1f} % of "
                f"capacity) | shed {shed:7d} | failed {failed:5d} | setup p50 "
                f"{percentile(setup, 0.5):6.1f} ms p95 {percentile(setup, 0.95):6.1f} ms p99 "
                f"{percentile(setup, 0.99):6.1f} ms | retransmissions {retransmissions} | "
                f"core 0 {100 * proxy_busy:3.0f} %, core 1 {100 * load_busy:3.0f} %")
            print(rows[-1], flush=True)
            time.sleep(3)
    finally:
        lab.close()
    return rows


# --- where the time goes ---------------------------------------------------------------------

# Each piece of the screened route, and how to take it out of the rendered config: (pattern,
# replacement) pairs, regular expressions over the rendered text. A pattern that no longer
# matches stops the benchmark: the template changed and this table must follow it.
NEVER = "$var(never) == 1"
PIECES: dict[str, list[tuple[str, str]]] = {
    "sipmsg_validate": [(r"!sipmsg_validate\(\)", NEVER)],
    "evidence headers (remove_hf_re, 2 x append_hf)": [
        (r'remove_hf_re\("[^"]*"\);', "$var(never) = 0;"),
        (r'append_hf\("X-ACM-[^"]*"\);', "$var(never) = 0;")],
    "flood protection pipe (rl_check per caller)": [
        (r'!rl_check\("caller:.*?"TAILDROP"\)', NEVER)],
    "load shedding pipe (rl_check per slot)": [(r'!rl_check\("shed:.*?"TAILDROP"\)', NEVER)],
    "dialog (create_dialog)": [(r"\n\s*create_dialog\(\);", "")],
    "breaker state (shared variable, refreshed by the timer)": [
        (r"if \(\$shv\(breaker\) == 2\)", "if ($var(never) == 2)"),
        (r"if \(\$shv\(breaker\) == 1\)", "if ($var(never) == 1)")],
    "gateway failures reset in Dragonfly (on 2xx)": [
        (r'cache_remove\("redis:breaker", "acm:gateway_failures:\$avp\(gateway\)"\);'
         r"\s*if \(\$rc == -1\)\s*route\(breaker_store_lost\);", "")],
}


def without(config: Path, piece: str) -> None:
    text = config.read_text()
    for pattern, replacement in PIECES[piece]:
        text, count = re.subn(pattern, replacement.replace("\\", "\\\\"), text)
        if count == 0:
            raise SystemExit(f"the screened config no longer has {piece!r} ({pattern}): "
                             "update PIECES in benchmarks/opensips_capacity.py")
    config.write_text(text)


def lab_maker(path: str, work: Path, pieces: tuple[str, ...] = ()) -> Callable[[], Lab]:
    def new_lab() -> Lab:
        ports = Ports()
        if path == "relay":
            config = relay_config(work, ports)
        else:
            config = screened_config(work, ports, UNLIMITED)
            for piece in pieces:
                without(config, piece)
        return Lab(path, config, ports, work, engine=path != "relay")
    return new_lab


def perf_binary() -> str | None:
    return shutil.which("perf")


def perf_top(data: Path, limit: int) -> list[str]:
    """The functions OpenSIPS's processes spent their samples on core 0 in, most first, as
    shares of OpenSIPS's own time (the idle loop and the kernel's other work left out):
    `share  function (object)`."""
    answer = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "--no-children",
                             "--comms", "opensips", "--percentage", "relative",
                             "--sort", "dso,sym", "--percent-limit", "0.5", "-q"],
                            capture_output=True, text=True, check=False)
    rows = []
    for line in answer.stdout.splitlines():
        found = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[[.k]\]\s+(.+)$", line)
        if found:
            rows.append(f"{float(found[1]):5.1f} % {found[3].strip()[:38]} "
                        f"({Path(found[2]).name[:18]})")
    return rows[:limit]


def cpu_per_call(new_lab: Callable[[], Lab], rate: int, seconds: int,
                 profile_to: Path | None = None) -> tuple[float, float]:
    """OpenSIPS's CPU milliseconds per call at `rate` on a fresh lab, and the failed share;
    `profile_to`: perf's samples of core 0 over the same seconds."""
    lab = new_lab()
    try:
        recorder = None
        if profile_to is not None:
            recorder = subprocess.Popen(
                ["perf", "record", "-F", "1999", "-C", PROXY_CORE, "-o", str(profile_to),
                 "--", "sleep", str(seconds)], stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL)
        stats, (proxy_busy, _), _ = lab.offer(rate, seconds)
        if recorder is not None:
            recorder.wait()
    finally:
        lab.close()
    ok, failed = int(stats["SuccessfulCall(C)"]), int(stats["FailedCall(C)"])
    return 1000 * proxy_busy / rate, failed / max(ok + failed, 1)


def median_cpu_per_call(new_lab: Callable[[], Lab], rate: int, seconds: int,
                        runs: int) -> tuple[float, float, float]:
    """Median, lowest and highest CPU per call over `runs` fresh labs."""
    figures = []
    for _ in range(runs):
        per_call, failed = cpu_per_call(new_lab, rate, seconds)
        if failed >= FAILED_LIMIT:
            raise SystemExit(f"{100 * failed:.2f} % of calls failed at {rate} CPS: profile "
                             "below the knee (--profile-rate)")
        figures.append(per_call)
    return statistics.median(figures), min(figures), max(figures)


def profile(rate: int, seconds: int, runs: int, work: Path) -> None:
    print(f"\nWhere the time goes, at {rate} CPS ({seconds} s a run, median of {runs} "
          "fresh labs):", flush=True)
    relay = median_cpu_per_call(lab_maker("relay", work), rate, seconds, runs)
    screened = median_cpu_per_call(lab_maker("screened", work), rate, seconds, runs)
    for name, (median, low, high) in (("relay", relay), ("screened", screened)):
        print(f"  {name:9} {median:.3f} ms of OpenSIPS CPU a call ({low:.3f}-{high:.3f}): "
              f"{1000 / median:,.0f} calls a core-second", flush=True)
    print(f"  CPU ratio relay / screened = {relay[0] / screened[0]:.2f}")
    if perf_binary() is None:
        print("  (no perf: install Debian's linux-perf for the profile of each path)")
    else:
        tops = {}
        for path in ("relay", "screened"):
            data = work / f"perf-{path}.data"
            cpu_per_call(lab_maker(path, work), rate, seconds, profile_to=data)
            tops[path] = perf_top(data, 18)
        print(f"\n  {'relay: share of core 0, function (object)':62} | screened")
        for index in range(max(len(rows) for rows in tops.values())):
            left, right = (tops[path][index] if index < len(tops[path]) else ""
                           for path in ("relay", "screened"))
            print(f"  {left:62} | {right}")
    print("\n  What each piece of the screened route costs (taken out, same rate):", flush=True)
    whole = screened[0]
    for piece in PIECES:
        median, low, high = median_cpu_per_call(lab_maker("screened", work, (piece,)), rate,
                                                seconds, runs)
        cost = whole - median
        print(f"    {piece:48} {cost:+.3f} ms a call ({100 * cost / whole:+5.1f} %; "
              f"without it {median:.3f}, {low:.3f}-{high:.3f})", flush=True)
    floor = median_cpu_per_call(lab_maker("screened", work, tuple(PIECES)), rate, seconds,
                                runs)
    print(f"    {'all of them':48} {whole - floor[0]:+.3f} ms a call (what is left: "
          f"{floor[0]:.3f} ms, {floor[0] / relay[0]:.2f}x the relay)", flush=True)


# --- over TCP and TLS through HAProxy ----------------------------------------------------------

def connection_per_call(transport: str, calls: int, work: Path) -> tuple[float, float, float, int]:
    """One fresh lab: OpenSIPS's and HAProxy's CPU milliseconds per call, the calls a second the
    caller reached, and the calls that did not end as they should."""
    directory = work / f"{transport}-{time.monotonic_ns()}"
    directory.mkdir()
    lab = CallerLab(directory, opensips_build(), DEFAULT_TCP_IO_THREADS)
    try:
        lab.start()
        opensips = [lab.processes.running["opensips"].pid]
        haproxy = [lab.processes.running["haproxy"].pid]
        before = cpu_seconds(opensips), cpu_seconds(haproxy)
        tally = lab.run(transport, calls)
        after = cpu_seconds(opensips), cpu_seconds(haproxy)
    finally:
        lab.stop()
    return (1000 * (after[0] - before[0]) / calls, 1000 * (after[1] - before[1]) / calls,
            calls / tally.seconds, tally.failures)


def over_tls(calls: int, runs: int, work: Path) -> None:
    print(f"\nThe screened call through HAProxy, a connection per call ({calls:,} calls, 64 at "
          f"a time, median of {runs} fresh labs):", flush=True)
    print(f"  {'':5} {'OpenSIPS ms/call':>17} {'HAProxy ms/call':>16} {'calls/core-s':>13} "
          f"{'caller calls/s':>15} {'failed':>7}")
    figures = {}
    for transport in ("tcp", "tls"):
        measured = [connection_per_call(transport, calls, work) for _ in range(runs)]
        opensips = statistics.median(m[0] for m in measured)
        haproxy = statistics.median(m[1] for m in measured)
        rate = statistics.median(m[2] for m in measured)
        failed = sum(m[3] for m in measured)
        figures[transport] = opensips + haproxy
        print(f"  {transport:5} {opensips:17.3f} {haproxy:16.3f} "
              f"{1000 / (opensips + haproxy):13,.0f} {rate:15,.0f} {failed:7}", flush=True)
        if failed:
            raise SystemExit(f"{failed} calls over {transport} failed: the figures above do not "
                             "describe working calls")
    handshake = figures["tls"] - figures["tcp"]
    print(f"  the TLS handshake: {handshake:+.3f} ms a call ({figures['tls'] / figures['tcp']:.2f}x"
          " the TCP call's CPU)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--paths", default="relay,screened")
    parser.add_argument("--overload", default="1,2,4",
                        help="multiples of the screened capacity to offer with shedding on")
    parser.add_argument("--capacity", type=int,
                        help="skip the screened ramps and use this capacity for the overload")
    parser.add_argument("--profile", action="store_true",
                        help="CPU per call, perf's top functions and each route piece's cost")
    parser.add_argument("--profile-rate", type=int, default=900,
                        help="the steady rate of --profile, below both paths' knees")
    parser.add_argument("--tls", action="store_true",
                        help="CPU per screened call over TCP and TLS through HAProxy")
    parser.add_argument("--tls-calls", type=int, default=3000,
                        help="calls a lab of --tls, each on its own connection")
    options = parser.parse_args()
    if (os.cpu_count() or 1) < 2:
        print("needs two cores: one for OpenSIPS, one for the load")
        return 2
    results: dict[str, list[int]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        print(f"OpenSIPS 4.0.1 on core {PROXY_CORE}, SIPp and stand-ins on core {LOAD_CORE}; "
              f"-m {SHARED_MIB} -M {PRIVATE_MIB}, {WORKERS} UDP workers, "
              f"{options.seconds} s a rate, {options.runs} ramps a path", flush=True)
        for path in filter(None, options.paths.split(",")):
            if path == "screened" and options.capacity:
                continue
            results[path] = capacity(path, options.runs, options.seconds, work)
        print()
        for path, found in results.items():
            median = statistics.median(found)
            spread = (max(found) - min(found)) / median if median else float("nan")
            verdict = "repeats within 10 %" if spread <= 0.10 else "MORE THAN 10 %"
            print(f"{path:9} capacity {median:6.0f} CPS (median of {found}; spread "
                  f"{100 * spread:.1f} %: {verdict})")
        if "relay" in results and "screened" in results:
            ratio = statistics.median(results["screened"]) / statistics.median(results["relay"])
            print(f"screened / relay = {ratio:.2f} (a second transaction per call: about 0.5 is "
                  "the ceiling)")
        measured = options.capacity or (int(statistics.median(results["screened"]))
                                        if "screened" in results else 0)
        # As the stacks set it: the ceiling at 90 % of what a core screens, so that the work of
        # refusing the excess does not push the admitted calls over the knee.
        ceiling = int(measured * SHED_AT)
        if ceiling and options.overload:
            print(f"\nOverload: capacity {measured} CPS, shedding at {ceiling} CPS "
                  f"({100 * SHED_AT:.0f} %); offered as multiples of capacity:", flush=True)
            rows = overload(measured, ceiling, [int(f) for f in options.overload.split(",")],
                            options.seconds * 2, work)
            print("\n".join(["", "factor  rate   | calls", *rows]))
        if options.profile:
            profile(options.profile_rate, options.seconds, options.runs, work)
        if options.tls:
            over_tls(options.tls_calls, options.runs, work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
