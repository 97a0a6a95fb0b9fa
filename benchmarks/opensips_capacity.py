"""Benchmark: calls per second through the real OpenSIPS 4.0.1, screened against plain relay.

Both run on this machine's loopback with the same SIPp stand-ins (caller, ACM engine, media
gateway) and the same memory: the screened path is the local stack's rendered config (flood
protection set to the trunk limit, as for an interconnect partner); the plain relay is a
minimal stateful proxy (record-route, t_relay to the gateway), the ceiling of OpenSIPS here.
Each rate runs for a fixed time; the highest rate with under 0.1 % failed calls is reported for
each, with their ratio, the OpenSIPS CPU time per call and the shared memory per call per second.
Load generators share the 2 cores with OpenSIPS.

Goal (issue #15): screened >= 2,000 CPS and >= 0.7 of plain relay.
Run: .venv/bin/python benchmarks/opensips_capacity.py [--seconds 10] [--rates 500,1000,...]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

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
    wait_for_port,
)

SHARED_MIB, PRIVATE_MIB = 1024, 16
GOAL_CPS, GOAL_RATIO = 2000, 0.7

PLAIN_RELAY = """
mpath = "{modules}"
log_level = 2
udp_workers = 4
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


@dataclass
class Step:
    rate: int
    calls: int
    failed: int
    cpu_seconds: float
    shared_used_mib: float

    @property
    def failed_share(self) -> float:
        return self.failed / self.calls if self.calls else 1.0


def opensips_cpu_seconds(main_pid: int) -> float:
    """utime + stime of OpenSIPS's main process and all its children, from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    pids = [main_pid] + [int(p) for p in subprocess.run(
        ["pgrep", "-P", str(main_pid)], capture_output=True, text=True).stdout.split()]
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / ticks


def run_rate(sip_port: int, http_port: int, main_pid: int, rate: int, seconds: int,
             work: Path) -> Step:
    stats = work / f"caller-{rate}.csv"
    before = opensips_cpu_seconds(main_pid)
    subprocess.run(
        [sipp(), "-sf", str(SCENARIOS / "caller.xml"), "-s", CLEAN_NUMBER, "-i",
         CALLER_ADDRESS, "-p", str(free_port()), "-r", str(rate), "-m", str(rate * seconds),
         "-l", str(rate * 4), "-timeout", f"{seconds + 20}s", "-recv_timeout", "5000",
         "-nostdin", "-trace_stat", "-stf", str(stats), "-fd", "60", "-buff_size", "4194304",
         f"127.0.0.1:{sip_port}"], capture_output=True, text=True, timeout=seconds + 60,
        check=False)
    cpu = opensips_cpu_seconds(main_pid) - before
    header, *rows = stats.read_text().splitlines()
    last = dict(zip(header.split(";"), rows[-1].split(";"), strict=False))
    used = mi(http_port, "get_statistics", {"statistics": ["max_used_size"]})
    shared = int(used.get("shmem:max_used_size", 0)) / 2**20 if isinstance(used, dict) else 0
    ok, failed = int(last["SuccessfulCall(C)"]), int(last["FailedCall(C)"])
    return Step(rate, ok + failed, failed, cpu, shared)


def ramp(name: str, config: Path, ports: Ports, rates: list[int], seconds: int,
         work: Path, engine: bool) -> list[Step]:
    processes = Processes(work / f"{name}.log")
    steps = []
    try:
        processes.start_redis(ports.redis)
        scenarios = [("gateway", "media_gateway.xml", ports.gateway)]
        if engine:
            scenarios.append(("engine", "acm_engine.xml", ports.engine))
        for role, scenario, port in scenarios:
            processes.start(role, [sipp(), "-sf", str(SCENARIOS / scenario), "-i", "127.0.0.1",
                                   "-p", str(port), "-nostdin", "-buff_size", "4194304"])
        main = processes.start_opensips(name, config, (SHARED_MIB, PRIVATE_MIB))
        wait_for_port(ports.http)
        time.sleep(1.5)
        for rate in rates:
            step = run_rate(ports.sip, ports.http, main.pid, rate, seconds, work)
            steps.append(step)
            cpu_ms = 1000 * step.cpu_seconds / max(1, step.calls)
            print(f"  {name:9} {rate:5d} CPS: {step.failed:5d}/{step.calls:6d} failed "
                  f"({100 * step.failed_share:.2f} %), CPU {cpu_ms:.3f} ms/call, "
                  f"shared memory max {step.shared_used_mib:.1f} MiB", flush=True)
            if step.failed_share > 0.01:
                break  # well past the knee
            time.sleep(2)
    finally:
        processes.stop_all()
    return steps


def best(steps: list[Step]) -> Step | None:
    passing = [s for s in steps if s.failed_share < 0.001]
    return max(passing, key=lambda s: s.rate) if passing else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rates", default="1000,2000,3000,3500,4000,5000,6000,7000,8000")
    parser.add_argument("--paths", default="relay,screened",
                        help="which of relay,screened to ramp")
    options = parser.parse_args()
    paths = options.paths.split(",")
    rates = [int(r) for r in options.rates.split(",")]
    if shutil.which("sipp") is None:
        print("sipp is not installed: run scripts/setup")
        return 2
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        screened_ports = Ports()
        (work / "screened").mkdir()
        screened_config = loopback_config(
            "local", work / "screened", screened_ports, tls=None,
            peer_cidrs=(f"{CALLER_ADDRESS}/32",), udp_workers=4, max_udp_workers=4)
        relay_ports = Ports()
        relay_config = work / "relay.cfg"
        relay_config.write_text(PLAIN_RELAY.format(modules=opensips_modules(),
                                                   sip=relay_ports.sip, http=relay_ports.http,
                                                   gateway=relay_ports.gateway))
        print(f"OpenSIPS 4.0.1, -m {SHARED_MIB} -M {PRIVATE_MIB}, 4 UDP workers, "
              f"{options.seconds} s per rate, {os.cpu_count()} cores shared with SIPp")
        relay = ramp("relay", relay_config, relay_ports, rates, options.seconds, work,
                     engine=False) if "relay" in paths else []
        screened = ramp("screened", screened_config, screened_ports, rates, options.seconds,
                        work, engine=True) if "screened" in paths else []
    top_relay, top_screened = best(relay), best(screened)
    print()
    for name, top in (("plain relay", top_relay), ("screened", top_screened)):
        if top is None:
            print(f"{name:12} no rate under 0.1 % failed")
            continue
        print(f"{name:12} {top.rate:5d} CPS under 0.1 % failed; "
              f"{1000 * top.cpu_seconds / top.calls:.3f} ms CPU per call; "
              f"{top.shared_used_mib / top.rate:.3f} MiB shared memory per CPS")
    if top_relay and top_screened:
        ratio = top_screened.rate / top_relay.rate
        met = top_screened.rate >= GOAL_CPS and ratio >= GOAL_RATIO
        print(f"screened / relay = {ratio:.2f}; goal >= {GOAL_CPS} CPS and >= {GOAL_RATIO}: "
              f"{'met' if met else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
