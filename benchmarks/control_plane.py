"""Benchmark: the local control plane and a deploy onto it (goals from issue #6: preview under
15 s, up under 120 s, no-op under 10 s).

Prints: control plane start (scripts/control-plane start, programs already built), a preview of
the prod stack (render + server-side dry-run of every object: the API server validates and
admits each one and persists nothing), `acmctl deploy local` from empty to Ready, a no-op
deploy, and destroy. `pulumi preview`/`pulumi up` themselves cannot be timed here: the Pulumi
CLI cannot be built (README, "Toolchain").
Run: .venv/bin/python benchmarks/control_plane.py   (with no control plane running)
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from kubernetes.client.exceptions import ApiException

from stacks.deploy import FIELD_MANAGER, Cluster, deploy, destroy, object_ref
from stacks.render import render_stack

ROOT = Path(__file__).resolve().parent.parent
CONTROL_PLANE = ROOT / "scripts" / "control-plane"
PASSPHRASE = "acm-platform-demo"


def timed(label: str, started: float, note: str = "") -> None:
    print(f"{label:34} {time.perf_counter() - started:6.1f} s{('  ' + note) if note else ''}")


def preview(cluster: Cluster, stack: str) -> int:
    rendering = render_stack(stack, passphrase=PASSPHRASE)
    namespace = rendering.manifests[0]
    # Namespaced objects are only admitted into an existing namespace: create it for real.
    cluster.resource("v1", "Namespace").server_side_apply(
        body=namespace, name=namespace["metadata"]["name"], field_manager=FIELD_MANAGER)
    try:
        for manifest in rendering.manifests[1:]:
            ref = object_ref(manifest)
            cluster.resource(manifest["apiVersion"], manifest["kind"]).server_side_apply(
                body=manifest, name=ref.name, namespace=ref.namespace,
                field_manager=FIELD_MANAGER, force_conflicts=True, dry_run="All")
    finally:
        cluster.resource("v1", "Namespace").delete(name=namespace["metadata"]["name"])
    return len(rendering.manifests)


def main() -> int:
    if subprocess.run([CONTROL_PLANE, "status"], capture_output=True).returncode == 0:
        print("a control plane is running; stop it first (scripts/control-plane stop)")
        return 2
    started = time.perf_counter()
    subprocess.run([CONTROL_PLANE, "start"], check=True, capture_output=True)
    timed("control plane start", started)
    try:
        cluster = Cluster(ROOT / ".state" / "kubeconfig")
        started = time.perf_counter()
        try:
            count = preview(cluster, "prod")
        except ApiException as error:
            print(f"prod preview refused: {error.reason}: {error.body}")
            return 1
        timed("prod preview (render + dry-run)", started, f"{count} objects")
        local = render_stack("local", passphrase=PASSPHRASE)
        started = time.perf_counter()
        report = deploy(cluster, local, timeout=300)
        timed("local deploy, empty to Ready", started, report.summary())
        started = time.perf_counter()
        report = deploy(cluster, local, timeout=60)
        timed("local deploy, no-op", started, report.summary())
        started = time.perf_counter()
        count = destroy(cluster, "local", local.config.namespace)
        timed("local destroy", started, f"{count} objects")
    finally:
        subprocess.run([CONTROL_PLANE, "stop"], check=True, capture_output=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
