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
    summary = commands.add_parser(
        "preview-summary",
        help="summarize CI's previews (<stack>.preview.json and <stack>.events.jsonl in a "
             "folder) as Markdown for a change request; exit 1 when a stack is blocked")
    summary.add_argument("folder", type=Path, help="folder holding the previews")
    summary.add_argument("--out", type=Path, help="write the Markdown here (default: stdout)")
    restore = commands.add_parser(
        "restore-database",
        help="restore a database backup into a stack's report database (replaces what is "
             "there; the stack's cluster from KUBECONFIG and its kubernetes.context); without "
             "--backup, list the backups. Example: acmctl restore-database prod --backup "
             "backups/NCC-ACM-0042/acm/20261207T011500Z.dump.age")
    restore.add_argument("stack", help=f"stack name ({', '.join(STACKS)})")
    restore.add_argument("--backup", metavar="KEY", help="the backup's key in the store")
    options = parser.parse_args(argv)

    if options.command == "preview-summary":
        return preview_summary(options.folder, options.out)
    if options.command == "restore-database":
        return restore_database_command(options.stack, options.backup)

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


def restore_database_command(stack: str, backup: str | None) -> int:
    from stacks.restore import RestoreError, restore_database

    try:
        succeeded, log = restore_database(stack, backup)
    except RestoreError as error:
        print(f"acmctl restore-database: {error}", file=sys.stderr)
        return 2
    print("\n".join(line for line in log.splitlines() if not line.startswith("{")))
    if not succeeded:
        print(f"acmctl restore-database: the {'restore' if backup else 'listing'} failed (its "
              "log is above)", file=sys.stderr)
        return 1
    return 0


def preview_summary(folder: Path, out: Path | None) -> int:
    from stacks.preview_summary import SummaryInputError, summarize

    try:
        markdown, may_proceed = summarize(folder)
    except SummaryInputError as error:
        print(f"acmctl preview-summary: {error}", file=sys.stderr)
        return 2
    if out is None:
        print(markdown, end="")
    else:
        out.write_text(markdown)
    if not may_proceed:
        print("acmctl preview-summary: a stack is blocked by a mandatory policy violation or a "
              "failed preview (see the summary)", file=sys.stderr)
    return 0 if may_proceed else 1


if __name__ == "__main__":
    sys.exit(main())
