"""Benchmark: the HA scenarios of tests/cluster/test_ha_under_load.py at a higher call rate,
as one table (scenario, calls, failed, worst gap, setup time).

On a fresh local cluster (scripts/control-plane: the control plane and its real node), the
`local` stack deployed by `pulumi up`; SIPp on the host calls HAProxy's NodePort, each call on
its own TCP connection, while one thing happens: an OpenSIPS or HAProxy rollout by `pulumi up`,
an OpenSIPS, engine or Dragonfly container killed (SIGKILL, the kubelet restarts it). The same
code as the tests (`tests/cluster/faults.py`); the tests assert the goals at 50 calls/s.

Run: .venv/bin/python benchmarks/ha_faults.py [--rate 150] [--seconds 40]
     (with no control plane running)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.cluster.faults import Outcome, Platform, kill_container, rollout, wait_for
from tests.cluster.kube import Cluster
from tests.cluster.load import SteadyLoad
from tests.conftest import rendering_of
from tests.engine import REPO, Engine

CONTROL_PLANE = REPO / "scripts" / "control-plane"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=150, help="calls per second")
    parser.add_argument("--seconds", type=int, default=40, help="load per fault scenario")
    options = parser.parse_args()
    if subprocess.run([CONTROL_PLANE, "status"], capture_output=True).returncode == 0:
        print("a control plane is running; stop it first (scripts/control-plane stop)")
        return 2
    subprocess.run([CONTROL_PLANE, "start"], check=True, capture_output=True)
    kubeconfig = REPO / ".state" / "kubeconfig"
    outcomes: list[Outcome] = []
    try:
        with tempfile.TemporaryDirectory() as scratch:
            work = Path(scratch)
            stack = Engine(work / "state", kubeconfig).stack("local")
            stack.up(on_output=lambda _: None)
            platform = Platform(stack, Cluster(kubeconfig), rendering_of("local"))
            wait_for(platform.whole, 180, "every workload ready")
            def steady(w: Path) -> Outcome:
                # The same rate with nothing happening: what the machine carries at all.
                load = SteadyLoad(platform.sip_port(), options.rate,
                                  options.rate * options.seconds, w)
                return Outcome("no fault (baseline)", load.result())

            scenarios = [
                ("baseline", steady),
                ("opensips-rollout", lambda w: rollout(platform, w, options.rate,
                                                       options.seconds + 35, "opensips")),
                ("haproxy-rollout", lambda w: rollout(platform, w, options.rate,
                                                      options.seconds + 35, "haproxy")),
                ("opensips-killed", lambda w: kill_container(
                    platform, w, options.rate, options.seconds, "opensips", "opensips")),
                ("engine-killed", lambda w: kill_container(
                    platform, w, options.rate, options.seconds, "acm-engine", "acm-engine")),
                ("dragonfly-killed", lambda w: kill_container(
                    platform, w, options.rate, options.seconds, "dragonfly", "dragonfly")),
            ]
            for name, run in scenarios:
                outcomes.append(run(work / name))
                print(f"{outcomes[-1].row()} | {outcomes[-1].notes}", flush=True)
            stack.destroy(on_output=lambda _: None)
    finally:
        subprocess.run([CONTROL_PLANE, "stop"], check=True, capture_output=True)
    print(f"\nHA under faults, {options.rate} calls/s, each call its own TCP connection:")
    for outcome in outcomes:
        print(outcome.row())
    return 0


if __name__ == "__main__":
    sys.exit(main())
