"""`scripts/control-plane stop` leaves the host as start found it, and start works again after a
stop. What the real node may change on the host (processes, mounts, network namespaces, the
bridge, addresses, routes, iptables rules and chains, sysctls the kubelet sets, cgroups, files
under /var and /run) is listed by `scripts/node snapshot`; a stop must bring every line back.

The session's cluster is stopped and started again here; no other module holds a stack across
modules, so the others meet a working (empty) cluster afterwards.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import CONTROL_PLANE, REPO

pytestmark = pytest.mark.slow
NODE = REPO / "scripts" / "node"


def snapshot() -> str:
    return subprocess.run([NODE, "snapshot"], capture_output=True, text=True,
                          check=True).stdout


def run(*arguments: str) -> None:
    subprocess.run([CONTROL_PLANE, *arguments], check=True, capture_output=True)


def kubectl(*arguments: str) -> str:
    binary = subprocess.run([CONTROL_PLANE, "bin"], capture_output=True, text=True,
                            check=True).stdout.strip()
    return subprocess.run([f"{binary}/kubectl", "--kubeconfig",
                           str(REPO / ".state" / "kubeconfig"), *arguments],
                          capture_output=True, text=True, check=True).stdout


POD = """
apiVersion: v1
kind: Pod
metadata: {name: lifecycle-probe, namespace: default}
spec:
  containers:
  - name: sleeper
    image: 127.0.0.1:5000/acm/debian-base:bookworm
    command: ["sleep", "600"]
    securityContext:
      runAsUser: 10001
      runAsNonRoot: true
      readOnlyRootFilesystem: true
      allowPrivilegeEscalation: false
      capabilities: {drop: [ALL]}
      seccompProfile: {type: RuntimeDefault}
"""


def test_stop_leaves_the_host_as_start_found_it_and_start_works_again(
        control_plane: Path, tmp_path: Path) -> None:
    run("stop")
    found = snapshot()
    assert "acm0" not in found and "kubepods" not in found, found
    try:
        run("start")
        running = snapshot()
        # The snapshot sees what the node changes: without that, equal snapshots prove nothing.
        assert "acm0" in running and "KUBE-" in running and "kubepods" in running, running
        # A pod with a network namespace, mounts and cgroups of its own, stopped by `stop`.
        manifest = tmp_path / "pod.yaml"
        manifest.write_text(POD)
        kubectl("apply", "-f", str(manifest))
        kubectl("wait", "--for=condition=Ready", "pod/lifecycle-probe", "--timeout=90s")
        assert "cni-" in snapshot()
        run("stop")
        assert snapshot() == found
    finally:
        run("start")
    assert "Ready" in kubectl("get", "node", "localhost", "--no-headers")


def test_start_clears_what_an_interrupted_run_left_on_the_host(control_plane: Path) -> None:
    """A machine restarted under a running node keeps its bridge, rules and namespaces while the
    checkout's state (or the checkout itself) is gone: start takes them away instead of failing
    on "RTNETLINK answers: File exists", as a CI run once did."""
    run("stop")
    found = snapshot()
    leftovers = [
        ["ip", "link", "add", "acm0", "type", "bridge"],
        ["ip", "addr", "add", "10.203.0.1/24", "dev", "acm0"],
        ["iptables", "-I", "FORWARD", "1", "-i", "acm0", "!", "-o", "acm0",
         "-m", "comment", "--comment", "acm-pod-guard", "-j", "DROP"],
        ["iptables", "-t", "nat", "-N", "KUBE-LEFTOVER"],
        # A pod's namespace the way CNI makes one (`ip netns add` would also mount /run/netns).
        ["mkdir", "-p", "/run/netns"],
        ["touch", "/run/netns/cni-leftover"],
        ["unshare", "--net=/run/netns/cni-leftover", "true"],
    ]
    try:
        for command in leftovers:
            subprocess.run(command, check=True)
        assert "acm0" in snapshot() and "cni-leftover" in snapshot()
        started = subprocess.run([CONTROL_PLANE, "start"], capture_output=True, text=True)
        assert started.returncode == 0, started.stderr
        assert "removing what an interrupted node left" in started.stderr
        assert "Ready" in kubectl("get", "node", "localhost", "--no-headers")
        run("stop")
        assert snapshot() == found
    finally:
        run("start")


def test_a_fresh_cluster_gets_empty_volumes(control_plane: Path) -> None:
    """Each start makes the cluster's PersistentVolumes anew, so what a claim wrote before the
    stop is gone: a CI run once met the previous module's audit trail in a new database, because
    the volume folders had been on the host before the cluster's start and outlived its stop."""
    written = Path("/var/lib/acm-local/volumes/01/left-by-an-earlier-cluster")
    written.write_text("an audit row\n")
    run("stop")
    run("start")
    assert "Ready" in kubectl("get", "node", "localhost", "--no-headers")
    assert Path("/var/lib/acm-local/volumes/01").is_dir()
    assert not written.exists()

