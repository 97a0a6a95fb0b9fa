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
