"""The set-up's own machinery: build folders go on every exit (the cold success path included,
which a trap on a function's local variable once broke), and a failed set-up names its step and
says how to resume. CI runs the real scripts' cold path with an empty tools cache (.ci/run)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TOOLS = REPO / "scripts" / "lib" / "tools.sh"


def run_bash(script: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    scratch = tmp_path / "tmp"
    scratch.mkdir(exist_ok=True)
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                               "TMPDIR": str(scratch)})


@pytest.mark.parametrize(("ending", "status"), [("", 0), ("exit 3", 3)],
                         ids=["build succeeds", "build fails inside the function"])
def test_a_scratch_folder_goes_on_every_exit(tmp_path: Path, ending: str, status: int) -> None:
    # The shape of every build function: a local variable holds the folder, the function
    # returns (or exits from inside), the script ends under `set -u`.
    answer = run_bash(f"""
        set -euo pipefail
        log() {{ echo "$*" >&2; }}
        source {TOOLS}
        build() {{
          local work
          make_scratch_dir work demo
          touch "$work/unpacked-source"
          echo "$work"
          {ending}
        }}
        build
    """, tmp_path)
    assert answer.returncode == status, answer.stderr
    assert "unbound variable" not in answer.stderr
    made = Path(answer.stdout.strip())
    assert made.parent == tmp_path / "tmp"
    assert not made.exists(), "the scratch folder was left behind"


def fake_repository(tmp_path: Path, failing_step: str) -> Path:
    """The real scripts/setup beside stand-ins for the build scripts it calls, one of which
    fails: what is under test is the set-up's own report, not the builds."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "setup", repo / "scripts" / "setup")
    shutil.copytree(REPO / "scripts" / "lib", repo / "scripts" / "lib")
    for name in ("control-plane", "node", "images", "toolchain", "opensips", "actionlint",
                 "alertmanager", "object-store", "pulumi"):
        script = repo / "scripts" / name
        fails = name == failing_step
        script.write_text("#!/usr/bin/env bash\n"
                          f'echo "{name} $*" >> "$(dirname "$0")/../calls"\n'
                          + ("echo 'go: build failed' >&2; exit 4\n" if fails else "echo '[]'\n"))
        script.chmod(0o755)
    # The virtual environment exists already; its pip is a stand-in too.
    python = repo / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("#!/usr/bin/env bash\nexit 0\n")
    python.chmod(0o755)
    return repo


def test_a_failed_set_up_names_its_step_and_how_to_resume(tmp_path: Path) -> None:
    repo = fake_repository(tmp_path, failing_step="toolchain")
    answer = subprocess.run([repo / "scripts" / "setup"], capture_output=True, text=True,
                            timeout=60)
    assert answer.returncode == 4
    assert "go: build failed" in answer.stderr
    assert "setup: FAILED at step 'Pulumi toolchain (scripts/toolchain install)'" in \
        answer.stderr
    assert "run ./scripts/setup again: it resumes there" in answer.stderr
    # Nothing after the failed step ran.
    assert (repo / "calls").read_text().splitlines() == [
        "control-plane build", "node build", "images build", "toolchain install"]


def test_a_set_up_that_succeeds_reports_no_failure(tmp_path: Path) -> None:
    repo = fake_repository(tmp_path, failing_step="none")
    answer = subprocess.run([repo / "scripts" / "setup"], capture_output=True, text=True,
                            timeout=60)
    assert answer.returncode == 0, answer.stderr
    assert "FAILED" not in answer.stderr
    assert "setup: ready in" in answer.stdout
