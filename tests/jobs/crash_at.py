"""Run `ncc-report` and SIGKILL it at a named step: a real kill (no cleanup handlers, no
flushes), placed deterministically by wrapping the function where the step happens.

    python -m tests.jobs.crash_at STEP ncc-report-arguments...
"""

from __future__ import annotations

import os
import posixpath
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jobs.audit
import jobs.generate
import jobs.sftp
import jobs.submit
from jobs import cli
from jobs.atrs import AtrsClient


def die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def before(function: Callable[..., Any], when: Callable[..., bool] = lambda *a, **k: True
           ) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if when(*args, **kwargs):
            die()
        return function(*args, **kwargs)
    return wrapper


def after(function: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        function(*args, **kwargs)
        die()
    return wrapper


def half_upload(sftp: Any, local: Path, directory: str, tag: str) -> int:
    """The second file dies mid-transfer: half its bytes sit under the temporary name."""
    if not local.name.startswith("ACM_ALERTS"):
        return original_upload(sftp, local, directory, tag)
    data = local.read_bytes()
    with sftp.open(posixpath.join(directory, jobs.sftp.temporary_name(local.name, tag)),
                   "wb") as remote:
        remote.write(data[: len(data) // 2])
    die()
    return 0


original_upload = jobs.sftp.upload_atomically
STEPS: dict[str, Callable[[], None]] = {
    # Mid-generation: the alerts file is written, the targets file is not.
    "generating": lambda: setattr(jobs.generate, "_copy_csv", before(
        jobs.generate._copy_csv, lambda conn, path, *a: path.name.startswith("ACM_TARGETS"))),
    "uploading": lambda: setattr(jobs.submit, "upload_atomically", half_upload),
    "uploaded": lambda: setattr(jobs.audit, "mark_submitting",
                                before(jobs.audit.mark_submitting)),
    "before-api": lambda: setattr(AtrsClient, "submit_report",
                                  before(AtrsClient.submit_report)),
    "after-api": lambda: setattr(AtrsClient, "submit_report", after(AtrsClient.submit_report)),
    "recorded": lambda: setattr(jobs.audit, "finish_attempt", after(jobs.audit.finish_attempt)),
}

if __name__ == "__main__":
    STEPS[sys.argv[1]]()
    sys.exit(cli.main(sys.argv[2:]))
