"""`acmctl`: the platform team's offline tools (render a stack without a cluster)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from stacks.config import StackConfigError
from stacks.stack_files import STACKS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="acmctl", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    render = commands.add_parser(
        "render", help="render a stack's Kubernetes objects and config files without a cluster"
    )
    render.add_argument("stack", help=f"stack name ({', '.join(STACKS)})")
    render.add_argument("--out", type=Path, required=True, help="output directory")
    seal = commands.add_parser(
        "seal", help="encrypt a secret setting into a stack file (reads the value from stdin)"
    )
    seal.add_argument("stack")
    seal.add_argument("key", help="secret setting, e.g. databasePassword")
    for name, text in (
        ("deploy", "apply a stack to a cluster through the Kubernetes API and wait until ready "
                   "(the bridge until the Pulumi CLI is available; see README)"),
        ("destroy", "delete everything the stack applied to a cluster"),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument("stack")
        command.add_argument("--kubeconfig", type=Path, default=_default_kubeconfig(),
                             help="kubeconfig of the cluster (default: $KUBECONFIG or "
                                  ".state/kubeconfig, the local control plane's)")
        command.add_argument("--timeout", type=float, default=180.0,
                             help="seconds to wait for readiness or removal")
    options = parser.parse_args(argv)

    if options.command == "seal":
        return _seal(options.stack, options.key)
    if options.command in ("deploy", "destroy"):
        return _deploy(options.command, options.stack, options.kubeconfig, options.timeout)

    from stacks.render import render_stack, write_rendering

    try:
        rendering = render_stack(options.stack)
    except StackConfigError as error:
        print(f"acmctl: {error}", file=sys.stderr)
        return 2
    write_rendering(rendering, options.out)
    print(
        f"rendered stack {options.stack!r}: {len(rendering.manifests)} objects, "
        f"{len(rendering.rendered_files())} config files in {options.out} "
        f"(program {rendering.program_seconds * 1000:.0f} ms)"
    )
    return 0


def _default_kubeconfig() -> Path:
    import os

    from stacks.stack_files import ROOT

    return Path(os.environ.get("KUBECONFIG") or ROOT / ".state" / "kubeconfig")


def _deploy(command: str, stack: str, kubeconfig: Path, timeout: float) -> int:
    import os

    from stacks.deploy import Cluster, DeployError, deploy, destroy, readiness
    from stacks.render import render_stack

    passphrase = os.environ.get("PULUMI_CONFIG_PASSPHRASE")
    if passphrase is None and os.environ.get("PULUMI_CONFIG_PASSPHRASE_FILE"):
        passphrase = Path(os.environ["PULUMI_CONFIG_PASSPHRASE_FILE"]).read_text().strip()
    if not passphrase:
        print("acmctl: set PULUMI_CONFIG_PASSPHRASE (or _FILE) to decrypt the stack's secrets",
              file=sys.stderr)
        return 2
    try:
        # Validation first: a stack with bad config never reaches the cluster.
        rendering = render_stack(stack, passphrase=passphrase)
        cluster = Cluster(kubeconfig)
        if command == "destroy":
            count = destroy(cluster, stack, rendering.config.namespace, timeout)
            print(f"destroyed stack {stack!r}: {count} objects deleted")
            return 0
        started = time.perf_counter()
        report = deploy(cluster, rendering, timeout)
        elapsed = time.perf_counter() - started
    except StackConfigError as error:
        print(f"acmctl: {error}", file=sys.stderr)
        return 2
    except DeployError as error:
        print(f"acmctl: {command} of stack {stack!r} failed: {error}", file=sys.stderr)
        return 1
    for ref in report.created + report.updated + report.deleted:
        verb = ("created" if ref in report.created
                else "updated" if ref in report.updated else "deleted")
        print(f"  {verb:8} {ref}")
    print(f"deployed stack {stack!r} in {elapsed:.1f} s: {report.summary()}")
    for state in readiness(cluster, rendering):
        print(f"  {'ready' if state.ready else 'NOT READY':9} {state.ref}: {state.detail}")
    return 0


def _seal(stack: str, key: str) -> int:
    import os

    from stacks.sealing import seal
    from stacks.stack_files import ROOT

    passphrase = os.environ.get("PULUMI_CONFIG_PASSPHRASE")
    if not passphrase:
        print("acmctl: set PULUMI_CONFIG_PASSPHRASE (the stack's passphrase)", file=sys.stderr)
        return 2
    value = sys.stdin.read()
    if not value:
        print("acmctl: no value on stdin", file=sys.stderr)
        return 2
    try:
        seal(ROOT / f"Pulumi.{stack}.yaml", key, value, passphrase)
    except ValueError as error:
        print(f"acmctl: {error}", file=sys.stderr)
        return 2
    print(f"sealed acm-platform:{key} into Pulumi.{stack}.yaml")
    return 0


if __name__ == "__main__":
    sys.exit(main())
