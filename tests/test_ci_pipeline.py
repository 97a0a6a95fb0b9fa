"""The GitHub Actions pipeline a team plugs in: actionlint (pinned, built from the Go proxy) finds
it clean and does fail on a broken one, it previews exactly the stacks CI can reach with their
own enforcement files, it deploys dev, staging and prod in that order behind environments, and
its tool versions are the project's pins."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from stacks.stack_files import STACKS

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / ".github" / "workflows"
ACTIONLINT = REPO / "scripts" / "actionlint"


def workflow(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((WORKFLOWS / name).read_text())
    return loaded


def actionlint(*arguments: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ACTIONLINT, *arguments], capture_output=True, text=True, timeout=120,
                          cwd=cwd, check=False)


def test_actionlint_finds_the_pipeline_clean() -> None:
    checked = actionlint("-no-color")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_actionlint_fails_on_a_broken_pipeline(tmp_path: Path) -> None:
    # The same files with one typo in an expression: the linter must name it, or the clean
    # verdict above means nothing.
    copy = tmp_path / "repo"
    shutil.copytree(REPO / ".github", copy / ".github")
    review = copy / ".github" / "workflows" / "pulumi-review.yml"
    review.write_text(review.read_text().replace("STACK: ${{ matrix.stack }}",
                                                 "STACK: ${{ matrix.stak }}", 1))
    checked = actionlint("-no-color", str(review), cwd=copy)
    assert checked.returncode != 0
    assert "stak" in checked.stdout, checked.stdout


def test_review_previews_every_stack_ci_can_reach_with_its_enforcement_file() -> None:
    review = workflow("pulumi-review.yml")
    assert list(review[True]) == ["pull_request"]  # YAML 1.1 reads `on` as true
    preview = review["jobs"]["preview"]
    stacks = preview["strategy"]["matrix"]["stack"]
    # `local` is the developer's own control plane; every other stack is reviewed.
    assert sorted(stacks) == sorted(set(STACKS) - {"local"})
    command = next(step["run"] for step in preview["steps"] if "pulumi preview" in
                   step.get("run", ""))
    for flag in ("--json", "--policy-pack policies",
                 '--policy-pack-config "policies/enforcement/$STACK.json"', "--event-log"):
        assert flag in command, flag
    step = next(step for step in preview["steps"] if "pulumi preview" in step.get("run", ""))
    assert step["env"]["PULUMI_DEBUG_COMMANDS"] == "true"  # --event-log needs it
    for stack in stacks:
        assert (REPO / "policies" / "enforcement" / f"{stack}.json").exists()
    summary = review["jobs"]["summary"]
    assert summary["needs"] == "preview" and summary["if"] == "always()"
    assert summary["permissions"]["pull-requests"] == "write"
    assert any("acmctl preview-summary" in step.get("run", "") for step in summary["steps"])


def test_merges_deploy_dev_then_staging_then_prod_behind_environments() -> None:
    deploy = workflow("pulumi-deploy.yml")
    assert "push" in deploy[True]
    jobs = deploy["jobs"]
    assert [jobs[name]["with"]["stack"] for name in ("dev", "staging", "prod")] == \
        ["dev", "staging", "prod"]
    assert jobs["staging"]["needs"] == "dev" and jobs["prod"]["needs"] == "staging"
    assert jobs["prod"]["with"]["environment"] == "production"
    assert deploy["concurrency"]["cancel-in-progress"] is False
    up = workflow("pulumi-up.yml")["jobs"]["up"]
    assert up["environment"] == "${{ inputs.environment }}"
    command = next(step["run"] for step in up["steps"] if "pulumi up" in step.get("run", ""))
    assert '--policy-pack-config "policies/enforcement/$STACK.json"' in command


@pytest.mark.parametrize(("pin", "input_name"), [
    ("PULUMI_VERSION", "pulumi-version"),
    ("KUBERNETES_PROVIDER_VERSION", "kubernetes-provider-version"),
    ("DOCKER_PROVIDER_VERSION", "docker-provider-version"),
])
def test_the_pipeline_installs_the_projects_pinned_versions(pin: str, input_name: str) -> None:
    pinned = re.search(rf"^{pin}=(\S+)", (REPO / "scripts" / "toolchain").read_text(), re.M)
    assert pinned is not None
    setup: dict[str, Any] = yaml.safe_load(
        (REPO / ".github" / "actions" / "pulumi-setup" / "action.yml").read_text())
    assert setup["inputs"][input_name]["default"] == pinned.group(1)
