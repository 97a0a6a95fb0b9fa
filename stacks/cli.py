"""`acmctl`: the platform team's review and recovery tool.

It renders a stack without a cluster, summarizes CI's previews, restores a database backup and
prints the settings reference. Deployments go through the Pulumi engine (`scripts/pulumi up
--stack STACK`); the render runs the same program under Pulumi's mocks and never decrypts a
secret, so it needs no cluster, no state backend and no secrets provider.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from stacks.config import StackConfigError
from stacks.stack_files import STACKS

EXAMPLES = {
    "render": "acmctl render prod --out out/prod",
    "preview-summary": "acmctl preview-summary previews/ --out summary.md",
    "restore-database": "acmctl restore-database prod --backup "
                        "backups/NCC-ACM-0042/acm/20261207T011500Z.dump.age",
    "settings-reference": "acmctl settings-reference --out docs/settings.md",
}
EXIT_STATUS = {
    "render": "0 rendered; 2 the stack's configuration is invalid (each problem named by its key)",
    "preview-summary": "0 every stack may proceed; 1 a stack is blocked (mandatory policy "
                       "violation or failed preview); 2 a file that is not what the engine writes",
    "restore-database": "0 restored (or listed); 1 the restore Job failed (its log is printed); "
                        "2 the stack, its cluster or its backup identity cannot be used",
    "settings-reference": "0 written",
}


def _command(commands: Any, name: str, help_text: str) -> argparse.ArgumentParser:
    """A subcommand whose help says what it does, its exit status and an example."""
    parser: argparse.ArgumentParser = commands.add_parser(
        name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".",
        epilog=f"exit status: {EXIT_STATUS[name]}\n\nexample:\n  {EXAMPLES[name]}",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="acmctl", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n" + "\n".join(f"  {example}" for example in EXAMPLES.values()))
    commands = parser.add_subparsers(dest="command", required=True)
    render = _command(
        commands, "render", "render a stack's Kubernetes objects and config files without a "
                            "cluster or its secrets")
    render.add_argument("stack", help=f"stack name ({', '.join(STACKS)})")
    render.add_argument("--out", type=Path, required=True, help="output directory")
    summary = _command(
        commands, "preview-summary",
        "summarize CI's previews (<stack>.preview.json, <stack>.events.jsonl and <stack>.status "
        "in a folder) as Markdown for a change request (docs/ci-review.md)")
    summary.add_argument("folder", type=Path, help="folder holding the previews")
    summary.add_argument("--out", type=Path, help="write the Markdown here (default: stdout)")
    restore = _command(
        commands, "restore-database",
        "restore a database backup into a stack's report database (replaces what is there; the "
        "stack's cluster from KUBECONFIG and its kubernetes.context); without --backup, list "
        "the backups (docs/ncc-compliance.md, \"Database backups and the restore\")")
    restore.add_argument("stack", help=f"stack name ({', '.join(STACKS)})")
    restore.add_argument("--backup", metavar="KEY", help="the backup's key in the store")
    reference = _command(
        commands, "settings-reference",
        "print the stack settings reference (docs/settings.md) from the settings models")
    reference.add_argument("--out", type=Path, help="write it here (default: stdout)")
    options = parser.parse_args(argv)

    if options.command == "preview-summary":
        return preview_summary(options.folder, options.out)
    if options.command == "restore-database":
        return restore_database_command(options.stack, options.backup)
    if options.command == "settings-reference":
        from stacks.settings_reference import settings_reference

        page = settings_reference()
        if options.out is None:
            print(page, end="")
        else:
            options.out.write_text(page)
        return 0

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
