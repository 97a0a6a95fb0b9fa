"""`acmctl preview-summary` on what the real engine writes: `pulumi preview --json --event-log`
of the pinned CLI against the local control plane, the way the review pipeline runs it
(.github/workflows/pulumi-review.yml). Four cases a reviewer meets: nothing changes, a
HAProxy-only change, a change that replaces a StatefulSet, a mandatory policy violation; and a
preview without its cluster, marked input-only. No secret value reaches a summary.

The local stack is deployed once for the module and destroyed at its end.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from pulumi import automation as auto

from stacks.cli import main as acmctl
from stacks.preview_summary import read_stack, summarize
from tests.engine import (
    POLICY_PACK,
    Engine,
    policy_config,
    stack_document,
    unreachable_kubeconfig,
    write_stack_document,
)

pytestmark = pytest.mark.slow

STACK = "local"
SAMPLE = Path(__file__).resolve().parents[2] / "out" / "review" / "sample-summary.md"


def preview_into(engine: Engine, folder: Path, stack: str,
                 config_file: Path | None = None) -> int:
    """One stack's preview as the pipeline runs it, its three files in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    selected = engine.cli("stack", "select", "--create", stack)
    assert selected.returncode == 0, selected.stderr
    arguments = ["preview", "--stack", stack, "--json", "--policy-pack", str(POLICY_PACK),
                 "--policy-pack-config", policy_config(stack),
                 "--event-log", str(folder / f"{stack}.events.jsonl")]
    if config_file is not None:
        arguments += ["--config-file", str(config_file)]
    # `--event-log` is one of the CLI's debug flags (the Automation API turns them on the same
    # way); the review pipeline sets the same variable.
    answer = engine.cli(*arguments, env={"PULUMI_DEBUG_COMMANDS": "true"})
    (folder / f"{stack}.preview.json").write_text(answer.stdout)
    (folder / f"{stack}.status").write_text(f"{answer.returncode}\n")
    assert answer.stdout.lstrip().startswith("{"), answer.stderr[-2000:]
    return answer.returncode


def changed_document(stack: str, tmp_path: Path, part: str, key: str, value: object) -> Path:
    document = stack_document(stack)
    settings = document["config"][f"acm-platform:{part}"]
    target = settings
    *parents, last = key.split(".")
    for name in parents:
        target = target[name]
    target[last] = value
    return write_stack_document(document, tmp_path / f"Pulumi.{stack}.yaml")


@pytest.fixture(scope="module")
def deployed(engine: Engine) -> Iterator[auto.Stack]:
    local = engine.stack(STACK)
    result = local.up(on_output=lambda _: None)
    assert result.summary.result == "succeeded"
    yield local
    local.destroy(on_output=lambda _: None)


@pytest.fixture(scope="module")
def secret_values(engine: Engine, deployed: auto.Stack) -> list[str]:
    shown = engine.cli("config", "--show-secrets", "--json", "--stack", STACK)
    assert shown.returncode == 0, shown.stderr
    values = [entry["value"] for entry in json.loads(shown.stdout).values()
              if entry.get("secret")]
    assert len(values) >= 8
    return [line for value in values for line in str(value).splitlines() if len(line) >= 8]


def test_nothing_changes_after_an_up(engine: Engine, deployed: auto.Stack, tmp_path: Path,
                                     secret_values: list[str]) -> None:
    assert preview_into(engine, tmp_path, STACK) == 0
    markdown, may_proceed = summarize(tmp_path)
    assert may_proceed
    preview = read_stack(tmp_path, STACK)
    assert preview.changes == [] and preview.verdict() == "no changes"
    assert preview.counts.get("same", 0) > 70
    assert "Nothing changes." in markdown
    assert not any(value in markdown for value in secret_values)


def test_a_haproxy_change_names_haproxy_only(engine: Engine, deployed: auto.Stack,
                                             tmp_path: Path, secret_values: list[str]) -> None:
    changed = changed_document(STACK, tmp_path, "haproxy", "maxConnections", 3000)
    assert preview_into(engine, tmp_path / "previews", STACK, changed) == 0
    preview = read_stack(tmp_path / "previews", STACK)
    # The content-named ConfigMap is replaced (create-before-delete) and the Deployment that
    # mounts it rolls; nothing else in the stack moves.
    assert sorted((c.op, c.kind) for c in preview.changes) == [
        ("replace", "ConfigMap"), ("update", "Deployment")]
    config_map = next(c for c in preview.changes if c.kind == "ConfigMap")
    assert config_map.name.startswith("haproxy-config-")  # a new content-named ConfigMap
    assert next(c for c in preview.changes if c.kind == "Deployment").name == "haproxy"
    deployment = next(c for c in preview.changes if c.kind == "Deployment")
    assert any(key.startswith("spec.template") for key in deployment.keys), deployment.keys
    markdown, may_proceed = summarize(tmp_path / "previews")
    assert may_proceed
    assert "| update | Deployment | `haproxy` |" in markdown
    assert not any(value in markdown for value in secret_values)


def test_a_replaced_statefulset_is_what_the_reviewer_sees_first(
        engine: Engine, deployed: auto.Stack, tmp_path: Path) -> None:
    # A volume claim template cannot change in place: the provider replaces the StatefulSet.
    changed = changed_document(STACK, tmp_path, "dragonfly", "storage.size", "3Gi")
    assert preview_into(engine, tmp_path / "previews", STACK, changed) == 0
    preview = read_stack(tmp_path / "previews", STACK)
    replaced = [(c.kind, c.name) for c in preview.replacements]
    assert ("StatefulSet", "dragonfly") in replaced, preview.changes
    assert preview.changes[0].op == "replace" and preview.changes[0].kind == "StatefulSet"
    markdown, _ = summarize(tmp_path / "previews")
    first_stack_section = markdown.index("### `local`")
    replacements = markdown.index("**Replacements, to review first**")
    assert replacements < first_stack_section
    assert "StatefulSet `dragonfly` because of `spec.volumeClaimTemplates[0]" in markdown, markdown
    assert "pods lose their identity" in markdown


def test_a_mandatory_violation_blocks_the_change(engine: Engine, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    document = stack_document("staging")
    opensips = document["config"]["acm-platform:opensips"]
    opensips["autoscaling"] = {**opensips["autoscaling"], "minReplicas": 2}
    opensips["pdb"] = {"minAvailable": 1}
    changed = write_stack_document(document, tmp_path / "Pulumi.staging.yaml")
    folder = tmp_path / "previews"
    assert preview_into(engine, folder, "staging", changed) != 0
    preview = read_stack(folder, "staging")
    assert [v.policy for v in preview.mandatory] == ["hpa-min-replicas"]
    assert preview.mandatory[0].resource.startswith("HorizontalPodAutoscaler")
    assert "minReplicas 2 is below 3" in preview.mandatory[0].message
    # The command the pipeline's gate runs: exit 1, the summary still written.
    out = tmp_path / "summary.md"
    assert acmctl(["preview-summary", str(folder), "--out", str(out)]) == 1
    markdown = out.read_text()
    assert "BLOCKED: mandatory policy violation" in markdown
    assert "- `hpa-min-replicas` on HorizontalPodAutoscaler" in markdown
    assert "blocked" in capsys.readouterr().err


def test_a_preview_without_its_cluster_is_marked_input_only(tmp_path: Path) -> None:
    kubeconfig = unreachable_kubeconfig(tmp_path / "kubeconfig")
    offline = Engine(tmp_path / "state", kubeconfig)
    document = stack_document("prod")
    document["config"]["acm-platform:kubernetes"]["previewWithoutCluster"] = True
    said_so = write_stack_document(document, tmp_path / "Pulumi.prod.yaml")
    folder = tmp_path / "previews"
    assert preview_into(offline, folder, "prod", said_so) == 0
    preview = read_stack(folder, "prod")
    assert preview.input_only
    markdown, _ = summarize(folder)
    assert "`prod` (input-only)" in markdown and "*Input-only preview*" in markdown


def test_the_sample_summary_of_three_stacks(engine: Engine, deployed: auto.Stack,
                                            tmp_path: Path) -> None:
    """The sample in docs/ci-review.md: local with a replaced StatefulSet and a HAProxy change,
    and staging (never deployed in this state, so everything would be created) blocked by a
    mandatory rule."""
    folder = tmp_path / "previews"
    document = stack_document(STACK)
    document["config"]["acm-platform:dragonfly"]["storage"]["size"] = "3Gi"
    document["config"]["acm-platform:haproxy"]["maxConnections"] = 3000
    preview_into(engine, folder, STACK, write_stack_document(document, tmp_path /
                                                             "Pulumi.local.yaml"))
    staging = stack_document("staging")
    staging["config"]["acm-platform:opensips"]["autoscaling"]["minReplicas"] = 2
    staging["config"]["acm-platform:opensips"]["pdb"] = {"minAvailable": 1}
    preview_into(engine, folder, "staging", write_stack_document(staging, tmp_path /
                                                                 "Pulumi.staging.yaml"))
    markdown, may_proceed = summarize(folder)
    assert not may_proceed
    assert markdown.index("`local`") < markdown.index("`staging`")
    SAMPLE.parent.mkdir(parents=True, exist_ok=True)
    SAMPLE.write_text(markdown)
