"""`acmctl`: the platform team's offline tools (render a stack without a cluster)."""

from __future__ import annotations

import argparse
import sys
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
    options = parser.parse_args(argv)

    if options.command == "seal":
        return _seal(options.stack, options.key)

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
