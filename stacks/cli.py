"""`acmctl`: the platform team's offline review tool (render a stack without a cluster).

Deployments go through the Pulumi engine (`scripts/pulumi up --stack STACK`); the render runs
the same program under Pulumi's mocks and never decrypts a secret, so it needs no cluster, no
state backend and no secrets provider.
"""

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
    options = parser.parse_args(argv)

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


if __name__ == "__main__":
    sys.exit(main())
