"""Benchmark: the real Pulumi engine against what a user would otherwise type, in one run.

On a fresh local cluster (scripts/control-plane: the control plane and its real node, whose
pods run the images `pulumi up` builds and pushes to the project's registry), side by side:

- preview of prod: `pulumi preview --stack prod` with the policy pack, against
  `kubectl apply --server-side --dry-run=server` of the same rendered manifests;
- up of local from empty to Ready: `pulumi up --stack local` (the provider waits for every
  workload; its images are already in the registry, so pulumi-docker's builds are cache hits:
  the first `up` on a machine that never built them takes longer, README "Costs"), against
  `kubectl apply --server-side` plus `kubectl rollout status` of every Deployment and
  StatefulSet of the same manifests, with the same images and the Secrets the up created
  (the offline rendering holds placeholders only), on the same node;
- no-op up: each of the two again.

Goals (issue #14): preview under 15 s, no-op `up` under 10 s.
Run: .venv/bin/python benchmarks/pulumi_engine.py   (with no control plane running)
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stacks.render import render_stack, write_rendering
from tests.engine import REPO, Engine, cli_root, policy_config

CONTROL_PLANE = REPO / "scripts" / "control-plane"
GOALS = {"preview of prod": 15.0, "no-op up of local": 10.0}


def timed(command: Sequence[str], env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    answer = subprocess.run(list(command), capture_output=True, text=True, cwd=REPO, env=env,
                            check=False)
    if answer.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])} failed:\n{answer.stdout}\n{answer.stderr}")
    return time.perf_counter() - started


def live_secrets(kubectl: list[str], namespace: str) -> str:
    """The stack's Secrets as the up created them, ready to apply again."""
    import json

    listed = json.loads(subprocess.run([*kubectl, "-n", namespace, "get", "secrets", "-o",
                                        "json"], capture_output=True, text=True,
                                       check=True).stdout)
    for item in listed["items"]:
        metadata = item["metadata"]
        item["metadata"] = {key: metadata[key] for key in ("name", "namespace", "labels")
                            if key in metadata}
    return json.dumps(listed)


def main() -> int:
    if subprocess.run([CONTROL_PLANE, "status"], capture_output=True).returncode == 0:
        print("a control plane is running; stop it first (scripts/control-plane stop)")
        return 2
    subprocess.run([CONTROL_PLANE, "start"], check=True, capture_output=True)
    kubeconfig = REPO / ".state" / "kubeconfig"
    bin_dir = subprocess.run([CONTROL_PLANE, "bin"], capture_output=True, text=True,
                             check=True).stdout.strip()
    kubectl = [f"{bin_dir}/kubectl", "--kubeconfig", str(kubeconfig)]
    pulumi = str(cli_root() / "bin" / "pulumi")
    figures: dict[str, tuple[float, float]] = {}
    try:
        with tempfile.TemporaryDirectory() as scratch:
            work = Path(scratch)
            engine = Engine(work / "state", kubeconfig)
            env = engine.cli_env()
            manifests: dict[str, list[str]] = {}
            for stack in ("prod", "local"):
                engine.stack(stack)
                write_rendering(render_stack(stack), work / stack)
                manifests[stack] = [f"-f{p}" for p in sorted((work / stack / "manifests")
                                                              .iterdir())]

            pulumi_preview = timed(
                [pulumi, "preview", "--stack", "prod", "--non-interactive", "--policy-pack",
                 str(REPO / "policies"), "--policy-pack-config", policy_config("prod")], env)
            # Namespaced objects are only admitted into an existing namespace: the first
            # manifest (the Namespace) is applied for real, the rest as a server-side dry run.
            timed([*kubectl, "apply", "--server-side", manifests["prod"][0]])
            kubectl_preview = timed([*kubectl, "apply", "--server-side", "--dry-run=server",
                                     *manifests["prod"][1:]])
            timed([*kubectl, "delete", manifests["prod"][0], "--wait=true"])
            figures["preview of prod"] = (pulumi_preview, kubectl_preview)

            up = [pulumi, "up", "--stack", "local", "--yes", "--non-interactive",
                  "--skip-preview"]
            # The images once, so that both sides start from the same registry.
            timed(up, env)
            timed([pulumi, "destroy", "--stack", "local", "--yes", "--non-interactive",
                   "--skip-preview"], env)
            pulumi_up = timed(up, env)
            pulumi_noop = timed(up, env)
            namespace = render_stack("local").config.namespace
            secrets = work / "local-secrets.json"
            secrets.write_text(live_secrets(kubectl, namespace))
            timed([pulumi, "destroy", "--stack", "local", "--yes", "--non-interactive",
                   "--skip-preview"], env)

            rendered = [m for m in manifests["local"] if "-secret-" not in m.lower()]
            apply = [*kubectl, "apply", "--server-side", rendered[0], f"-f{secrets}",
                     *rendered[1:]]
            started = time.perf_counter()
            timed(apply)
            for kind in ("deployment", "statefulset"):
                timed([*kubectl, "-n", namespace, "rollout", "status", kind,
                       "-l", "app.kubernetes.io/part-of=acm-platform", "--timeout=300s"])
            kubectl_up = time.perf_counter() - started
            kubectl_noop = timed(apply)
            figures["up of local, to Ready"] = (pulumi_up, kubectl_up)
            figures["no-op up of local"] = (pulumi_noop, kubectl_noop)
    finally:
        subprocess.run([CONTROL_PLANE, "stop"], check=True, capture_output=True)

    print(f"{'':24} {'pulumi':>8} {'kubectl':>8} {'goal':>6}")
    for label, (pulumi_seconds, kubectl_seconds) in figures.items():
        goal = GOALS.get(label)
        verdict = "" if goal is None else ("  met" if pulumi_seconds < goal else "  MISSED")
        print(f"{label:24} {pulumi_seconds:7.1f}s {kubectl_seconds:7.1f}s "
              f"{'' if goal is None else f'{goal:5.0f}s'}{verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
